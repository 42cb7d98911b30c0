"""Cleaning the fetched ONNX graphs, so that every model serves the same way.

Each model's export has its own quirks (weights listed as inputs, a static 1x3x640x640 input,
Reshapes with a batch of one baked in, Resizes to fixed sizes, numeric output names); cleaning
gives each real input/output names and a symbolic batch, height and width, in place, and
serialises the graph deterministically, so the manifest can pin the cleaned file's sha256.
Build-time only (``veil models fetch``): the runtime never needs the ``onnx`` package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .weights import WeightsError


def clean_model(name: str, data: bytes) -> bytes:
    """The cleaned ONNX bytes of model ``name``, serialised deterministically."""
    import onnx  # build-time only: the runtime never needs the onnx package

    model = onnx.load_from_string(data)
    _CLEANERS[name](model)
    onnx.checker.check_model(model)
    cleaned: bytes = model.SerializeToString(deterministic=True)
    return cleaned


def _rename_tensor(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        node.output[:] = [new if x == old else x for x in node.output]
    for value in [*graph.input, *graph.output]:
        if value.name == old:
            value.name = new


def _set_dims(value: Any, dims: Sequence[int | str]) -> None:
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d


def _clean_centerface(model: Any) -> None:
    """Old PyTorch 1.2 export: weights listed as inputs, static [10,3,32,32], numeric outputs."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    kept = [v for v in graph.input if v.name not in initializers]
    del graph.input[:]
    graph.input.extend(kept)
    _rename_tensor(graph, "input.1", "input")
    _set_dims(graph.input[0], ["batch", 3, "height", "width"])
    outputs = {"537": "heatmap", "538": "scale", "539": "offset", "540": "landmarks"}
    channels = {"heatmap": 1, "scale": 2, "offset": 2, "landmarks": 10}
    for old, new in outputs.items():
        _rename_tensor(graph, old, new)
    for value in graph.output:
        _set_dims(value, ["batch", channels[value.name], "height_4", "width_4"])
    del graph.value_info[:]


def _clean_retinaface(model: Any) -> None:
    """Already dynamic with named outputs; make the dim names match CenterFace's."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    kept = [v for v in graph.input if v.name not in initializers]
    del graph.input[:]
    graph.input.extend(kept)
    _set_dims(graph.input[0], ["batch", 3, "height", "width"])
    widths = {"loc": 4, "conf": 2, "landmarks": 10}
    for value in graph.output:
        _set_dims(value, ["batch", "priors", widths[value.name]])
    del graph.value_info[:]


def _batch_reshapes(graph: Any) -> None:
    """Reshape targets ``[1, -1, C]`` (a batch of one baked in) become ``[0, -1, C]``.

    0 copies the input's batch dimension (``allowzero`` is 0 up to opset 13), -1 takes the
    rest: the same result for batch 1, and any batch, height and width afterwards.
    """
    from onnx import numpy_helper

    initializers = {t.name: t for t in graph.initializer}
    for name in sorted({n.input[1] for n in graph.node if n.op_type == "Reshape"}):
        target = numpy_helper.to_array(initializers[name]).copy()
        if target.ndim != 1 or target[0] != 1 or (target == -1).sum() != 1:
            raise WeightsError(f"Reshape target {name} is {target.tolist()}, not [1, -1, ...]")
        target[0] = 0
        initializers[name].CopyFrom(numpy_helper.from_array(target, name))


def _resize_by_scales(graph: Any) -> None:
    """Resize nodes given fixed output ``sizes`` get the equivalent ``scales`` instead.

    The factor is the sizes over the input's static shape (the graph's own value_info), so
    the node upsamples any input alike. Unused initializers are dropped afterwards.
    """
    import numpy as np
    from onnx import numpy_helper

    initializers = {t.name: t for t in graph.initializer}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.value_info}
    for node in graph.node:
        if node.op_type != "Resize" or len(node.input) < 4 or not node.input[3]:
            continue
        x, roi, _, sizes_name = node.input
        sizes = numpy_helper.to_array(initializers[sizes_name]).astype(np.float64)
        shape = shapes.get(x)
        if not shape or 0 in shape or len(shape) != len(sizes):
            raise WeightsError(f"{node.name}: no static shape for its input {x}")
        scales = (sizes / np.asarray(shape, np.float64)).astype(np.float32)
        scales_name = f"{node.name}_scales"
        graph.initializer.append(numpy_helper.from_array(scales, scales_name))
        node.input[:] = [x, roi, scales_name]
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _per_stride_outputs(graph: Any, widths: dict[str, int]) -> None:
    """Outputs ``<kind>_<stride>`` of shape (batch, anchors, width): symbolic but the last."""
    _set_dims(graph.input[0], ["batch", 3, "height", "width"])
    for value in graph.output:
        kind, stride = value.name.rsplit("_", 1)
        _set_dims(value, ["batch", f"anchors_{stride}", widths[kind]])
    del graph.value_info[:]


def _clean_yunet(model: Any) -> None:
    """OpenCV zoo's 2023mar export: static 1x3x640x640 and Reshapes to [1, -1, C]."""
    graph = model.graph
    _batch_reshapes(graph)
    _per_stride_outputs(graph, {"cls": 1, "obj": 1, "bbox": 4, "kps": 10})


def _clean_scrfd(model: Any) -> None:
    """InsightFace's SCRFD-2.5G-KPS export: static 1x3x640x640, two Resizes to fixed sizes
    (a 2x nearest upsampling in the FPN), Reshapes to [1, -1, C], input named ``input.1``."""
    graph = model.graph
    _rename_tensor(graph, "input.1", "input")
    _resize_by_scales(graph)
    _batch_reshapes(graph)
    _per_stride_outputs(graph, {"score": 1, "bbox": 4, "kps": 10})


_CLEANERS: dict[str, Callable[[Any], None]] = {
    "centerface": _clean_centerface,
    "retinaface_mnet025": _clean_retinaface,
    "yunet": _clean_yunet,
    "scrfd": _clean_scrfd,
}
