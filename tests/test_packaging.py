"""veil installs like a real package: the lock is what is installed, the extras cannot clash,
and a built wheel runs on-prem and in hybrid mode from fresh venvs outside the repository.

Regression (issue 13): `make setup` ignored requirements.lock, so a fresh clone tested
opencv-python-headless 5.1 instead of the locked 5.0; a wheel install could not find the model
manifest (it was read beside the sources), so on-prem runs failed with "manifest.json not found".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from mediagen import cut
from packaging.requirements import Requirement
from packaging.version import Version

from veil import DetectionConfig

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: The extras `make setup` installs (the lock covers exactly these); [gpu] is the alternative
#: to [local] and is never installed beside it.
LOCKED_EXTRAS = ("server", "local", "triton", "cluster", "dev")


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _lock() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        name, _, version = line.partition("==")
        pins[_name(name)] = Version(version)
    return pins


def _requirements(*extras: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    texts = list(project["dependencies"])
    for extra in extras:
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def test_the_lock_pins_every_requirement_at_a_version_pyproject_allows() -> None:
    lock = _lock()
    for requirement in _requirements(*LOCKED_EXTRAS):
        name = _name(requirement.name)
        assert name in lock, f"{requirement} is not in requirements.lock: run `make lock`"
        assert lock[name] in requirement.specifier, (
            f"requirements.lock pins {name}=={lock[name]}, pyproject wants {requirement}"
        )


def test_the_environment_is_exactly_the_lock() -> None:
    installed = {
        _name(d.metadata["Name"]): Version(d.version)
        for d in distributions()
        if _name(d.metadata["Name"]) not in {"veil", "pip", "setuptools", "wheel"}
    }
    assert installed == _lock(), "the venv is not requirements.lock: run `make setup`"


def test_the_build_backend_is_pinned_exactly() -> None:
    [backend] = PYPROJECT["build-system"]["requires"]
    assert re.fullmatch(r"setuptools==[\d.]+", backend), backend


def test_no_extra_but_local_and_gpu_pulls_in_an_onnxruntime() -> None:
    """`veil[server,gpu]` once installed onnxruntime and onnxruntime-gpu together (they clash)."""
    owners: dict[str, set[str]] = {"onnxruntime": set(), "onnxruntime-gpu": set()}
    for extra in [None, *PYPROJECT["project"]["optional-dependencies"]]:
        for requirement in _requirements(*([extra] if extra else [])):
            if _name(requirement.name) in owners:
                owners[_name(requirement.name)].add(extra or "base")
    assert owners == {"onnxruntime": {"local"}, "onnxruntime-gpu": {"gpu"}}


# --- a built wheel in fresh venvs outside the repository ----------------------------------------

_SOURCES = ("pyproject.toml", "README.md", "client", "server", "protos", "models")


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """veil's wheel, built from a copy of the sources (the checkout stays clean)."""
    tree = tmp_path_factory.mktemp("source")
    for name in _SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, tree / name)
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(tree)])
    [built] = dist.glob("veil-*.whl")
    return built


def _venv(where: Path, wheel: Path, extras: str) -> Path:
    """A fresh venv with the wheel (and ``extras``) installed at the locked versions."""
    _run([sys.executable, "-m", "venv", str(where)])
    pip = [str(where / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    _run([*pip, "-c", str(ROOT / "requirements.lock"), f"{wheel}{extras}"])
    return where


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    return env | extra


def test_the_wheel_ships_the_manifest_the_configs_and_py_typed(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for member in (
        "veil/py.typed",
        "veil/models/manifest.json",
        "veil/models/centerface/config.pbtxt",
        "veil/models/retinaface_mnet025/config.pbtxt",
        "veil/models/yunet/config.pbtxt",
        "veil/models/scrfd/config.pbtxt",
        "veil/v1/record.schema.json",
        "veil/v1/live-record.schema.json",
        "veil/review/templates/report.html",
        "veil/review/app/index.html",
    ):
        assert member in names, f"{wheel.name} lacks {member}"
    assert not [n for n in names if n.endswith(".onnx")], "weights are fetched, never shipped"


@pytest.fixture(scope="module")
def clip(sample_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 12 frames of the bundled sample (a real face, with audio)."""
    return cut(sample_clip, tmp_path_factory.mktemp("clip") / "in.mp4", 12)


@pytest.mark.slow
def test_a_wheel_install_fetches_weights_and_runs_on_prem(
    wheel: Path, clip: Path, tmp_path: Path
) -> None:
    venv = _venv(tmp_path / "venv", wheel, "[local]")
    veil = str(venv / "bin" / "veil")
    models = tmp_path / "models"
    env = _env(VEIL_MODEL_DIR=str(models))
    # First use before the fetch: one line that says what to run.
    missing = subprocess.run(
        [veil, "anonymize", str(clip), "-o", str(tmp_path / "no.mp4")],
        capture_output=True, text=True, cwd=tmp_path, env=env, check=False,
    )  # fmt: skip
    assert missing.returncode == 6, missing.stderr
    assert "veil models fetch" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "no.mp4").exists()
    fetched = _run([veil, "models", "fetch"], cwd=tmp_path, env=env)
    assert "centerface" in fetched.stdout and "yunet" in fetched.stdout
    for name in ("centerface", "yunet"):
        assert (models / name / "1" / "model.onnx").is_file()
        assert (models / name / "config.pbtxt").is_file()  # a Triton repository too
    assert not (models / "scrfd").exists()  # opt-in (non-commercial weights): only when named
    out = tmp_path / "out.mp4"
    _run([veil, "-q", "anonymize", str(clip), "-o", str(out)], cwd=tmp_path, env=env)
    record = json.loads(out.with_name("out.mp4.veil.json").read_text())
    assert record["detector"]["model"] == DetectionConfig().detector.model  # balanced's
    assert record["detector"]["backend"] == "onnxruntime"
    assert record["detector"]["license"] == "MIT"
    assert any(frame["masks"] for frame in record["frames"]), "no face found in the wheel run"


@pytest.fixture
def edge_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield _venv(tmp_path_factory.mktemp("edge") / "venv", wheel, "")


@pytest.mark.slow
def test_a_bare_wheel_install_is_a_thin_edge_that_runs_hybrid(
    edge_venv: Path, veil_server: Callable[..., Any], clip: Path, tmp_path: Path
) -> None:
    python = str(edge_venv / "bin" / "python")
    heavy = ["onnxruntime", "onnx", "tritonclient", "prometheus_client", "distributed"]
    probe = f"import importlib.util as u; print([m for m in {heavy!r} if u.find_spec(m)])"
    assert _run([python, "-c", probe], cwd=tmp_path).stdout.strip() == "[]"
    server = veil_server()
    out = tmp_path / "out.mp4"
    _run(
        [str(edge_venv / "bin" / "veil"), "-q", "anonymize", str(clip), "-o", str(out),
         "--detector", f"grpc://127.0.0.1:{server.port}"],
        cwd=tmp_path, env=_env(VEIL_MODEL_DIR=str(tmp_path / "none")),
    )  # fmt: skip
    record = json.loads(out.with_name("out.mp4.veil.json").read_text())
    assert record["detector"]["transport"]["mode"] == "hybrid"
    assert any(frame["masks"] for frame in record["frames"])
    # The edge box's weight, reported by the closing note and the README.
    size = sum(f.stat().st_size for f in edge_venv.rglob("*") if f.is_file())
    print(f"edge venv: {size / 2**20:.0f} MiB")
