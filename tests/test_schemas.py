"""The typed blocks of records and manifests against their JSON Schemas (issue 15: they were
``dict[str, Any]``, built in three places). Each class veil builds a block with is checked both
ways against the schema object it writes: every field is a property there, and every property
the schema requires is a field; and what real instances write validates and reads back."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mediagen import make_clip

from veil.core import Detections, DetectorInfo
from veil.job import PresetChoice, Record, Signer, VideoOptions, add_edits, detect_job, keygen
from veil.job._documents import load_schema, validate
from veil.job._edits import Edit, Keyframe
from veil.job._header import DetectorBlock, InputIdentity
from veil.job._provenance import Manifest, OutputIdentity
from veil.track import TrackerConfig

#: Fields written into their block as the fields of another class (``block |= x.to_json()``).
FLATTENED: dict[tuple[type, str], type] = {
    (DetectorBlock, "info"): DetectorInfo,
    (DetectorBlock, "preset"): PresetChoice,
}


def _object(schema: str, *path: str) -> dict[str, Any]:
    """The schema object at ``path`` (property names; ``[]`` steps into an array's items)."""
    node = load_schema(schema)
    for step in path:
        node = node["items"] if step == "[]" else node["properties"][step]
    return node


def _properties(node: dict[str, Any]) -> set[str]:
    """Every property the object may have, its ``oneOf`` branches' included."""
    names = set(node.get("properties", {}))
    for branch in node.get("oneOf", ()):
        names |= set(branch.get("properties", {}))
    return names


def _names(cls: type) -> set[str]:
    """The JSON keys ``cls``'s fields write (flattened fields replaced by theirs)."""
    names: set[str] = set()
    for f in fields(cls):
        inner = FLATTENED.get((cls, f.name))
        names |= {f.name} if inner is None else _names(inner)
    return names


BLOCKS = [
    pytest.param(InputIdentity, "record", ("input",), id="record input"),
    pytest.param(DetectorBlock, "record", ("detector",), id="record detector"),
    pytest.param(Edit, "record", ("edits", "[]"), id="record edit"),
    pytest.param(Manifest, "manifest", (), id="manifest"),
    pytest.param(OutputIdentity, "manifest", ("output",), id="manifest output"),
]


@pytest.mark.parametrize(("cls", "schema", "path"), BLOCKS)
def test_every_field_is_a_schema_property_and_every_required_property_a_field(
    cls: type, schema: str, path: tuple[str, ...]
) -> None:
    node = _object(schema, *path)
    assert _names(cls) <= _properties(node), "fields the schema does not describe"
    assert set(node.get("required", ())) <= _names(cls), "required properties with no field"


def test_an_add_boxes_keyframe_is_what_the_schema_describes() -> None:
    branches = _object("record", "edits", "[]")["oneOf"]
    (add_boxes,) = [b for b in branches if "keyframes" in b["required"]]
    keyframe = add_boxes["properties"]["keyframes"]["items"]
    names = {f.name for f in fields(Keyframe)}
    assert names == set(keyframe["properties"]) == set(keyframe["required"])


class _OneFace:
    """Finds one face, still, in every image."""

    info = DetectorInfo(
        model="fixed",
        weights_sha256="0" * 64,
        backend="test",
        execution_provider="cpu",
        max_side=320,
        score_threshold=0.5,
        nms_threshold=0.4,
        transport={"mode": "test"},
        license="MIT",
    )

    def detect(self, images: Any, sizes: Any) -> list[Detections]:
        box = np.array([[100.0, 60.0, 160.0, 140.0]], np.float32)
        return [Detections(box, np.array([0.9], np.float32)) for _ in images]

    def close(self) -> None:
        pass


def test_real_blocks_validate_and_read_back(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=12)
    private, _ = keygen(tmp_path / "site.key")
    choice = PresetChoice(preset="fast", preset_overrides=("detector.stride",))
    result = detect_job(
        src,
        detector=_OneFace(),
        tracker=TrackerConfig(max_gap=4, lead_in=4, lead_out=4),
        stride=2,
        preset=choice,
        record_path=tmp_path / "in.veil.json",
        output=tmp_path / "out.mp4",
        video=VideoOptions(signer=Signer.load(private)),
    )
    record = Record.load(tmp_path / "in.veil.json")  # validated against the record schema
    assert InputIdentity.from_json(record.input).to_json() == record.input
    assert record.detector["preset_overrides"] == ["detector.stride"]
    assert record.detector["stride"] == 2 and record.detector["frames_detected"] >= 6
    # every kind of edit, written by the typed Edit, validates and reads back the same
    add_edits(record, who="A", why="b", add_boxes=[Keyframe(frame=1, box=(1, 2, 30, 40))])
    add_edits(record, who="A", why="b", suppress=[1], reviewed=[(0, 3)])
    add_edits(record, who="A", why="b", track=2, grow=[(2, 0.5)], trim=[(2, 1, 5)])
    validate(record.to_json(), "record", "edited")
    assert [Edit.from_json(e).to_json() for e in record.edits] == record.edits
    actions = ["add_boxes", "suppress", "reviewed", "grow", "trim"]
    assert [e["action"] for e in record.edits] == actions
    manifest = result.manifest
    assert manifest is not None
    validate(manifest, "manifest", "written")
    written = {f.name for f in fields(Manifest)} | {"weak_style_settings", "signature"}
    assert set(manifest) <= written
    assert set(manifest["output"]) <= {f.name for f in fields(OutputIdentity)}
