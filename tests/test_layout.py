"""The house rules of the source tree (issue 15), checked on every run.

- The thin-edge rule: the client imports with each heavy package hidden (a hybrid-mode edge box
  has neither onnxruntime nor tritonclient, prometheus-client or Dask), and the detection
  engine imports without gRPC (the on-prem client detects in process through it).
- Packages meet only at their ``__init__``: no module imports another package's private
  module, and nothing crosses the client/server line privately.
- No module grows past what a reader takes in at once.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: where each top-level source folder sits in the ``veil`` namespace
TREES = {"client": "veil", "server": "veil.server"}
#: lines a module may have; issue 15 set "no module over ~500 lines"
MAX_LINES = 520


def _sources() -> list[tuple[Path, str]]:
    """Every product module with its dotted name."""
    found = []
    for folder, prefix in TREES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append((path, ".".join((prefix, *parts))))
    return found


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every ``from ... import`` and ``import`` in ``path``."""
    package = _package(module, path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def _private_part(target: str) -> int | None:
    """Index of the first private segment (``_module``) of a dotted name, if any."""
    for i, part in enumerate(target.split(".")):
        if part.startswith("_") and not part.startswith("__"):
            return i
    return None


def test_packages_meet_only_at_their_init() -> None:
    crossings = []
    for path, module in _sources():
        package = _package(module, path)
        for line, target in _imports(path, module):
            if not target.startswith("veil"):
                continue
            private = _private_part(target)
            if private is None:
                continue
            owner = ".".join(target.split(".")[:private])
            if owner != package:
                crossings.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not crossings, "private imports across packages:\n" + "\n".join(crossings)


def test_nothing_crosses_the_client_server_line_privately() -> None:
    """The server reaches the client through public packages, the client reaches the server
    only through ``veil.server.engine`` and ``veil.server.service``."""
    crossings = []
    for path, module in _sources():
        server_side = module.startswith("veil.server")
        for line, target in _imports(path, module):
            if not target.startswith("veil") or target.startswith("veil.v1"):
                continue
            other_side = target.startswith("veil.server") != server_side
            if other_side and _private_part(target) is not None:
                crossings.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
            if not server_side and target in ("veil.server",):
                crossings.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not crossings, "\n".join(crossings)


def test_no_module_is_longer_than_a_reader_takes_in() -> None:
    long = {
        f"{path.relative_to(ROOT)} ({n} lines)"
        for path, _ in _sources()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines: {sorted(long)}"


def _client_modules() -> list[str]:
    """The client's modules, less ``__main__`` (importing it runs the command)."""
    return [
        m for _, m in _sources() if not m.startswith("veil.server") and not m.endswith("__main__")
    ]


def _import_all(modules: list[str], hidden: str) -> subprocess.CompletedProcess[str]:
    """Imports ``modules`` in a fresh interpreter where ``hidden`` cannot be imported."""
    script = (
        "import importlib, sys\n"
        f"sys.modules[{hidden!r}] = None  # import raises ImportError\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"assert {hidden!r} not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=ROOT
    )


@pytest.mark.parametrize(
    "hidden", ["onnxruntime", "onnx", "tritonclient", "prometheus_client", "distributed", "dask"]
)
def test_the_client_imports_with_a_heavy_package_hidden(hidden: str) -> None:
    result = _import_all(_client_modules(), hidden)
    assert result.returncode == 0, result.stderr


def test_the_engine_imports_without_grpc() -> None:
    """The in-process detector (on-prem mode) and the weights need no gRPC; only the Triton
    backend does (tritonclient speaks gRPC)."""
    engine = [
        m
        for path, m in _sources()
        if m.startswith("veil.server.engine") and not m.endswith("_triton")
    ]
    result = _import_all([*engine, "veil.core", "veil.job", "veil.media"], "grpc")
    assert result.returncode == 0, result.stderr


#: Which packages each package may import (``veil``: the top-level public API and version).
#: The arrows point one way, down to ``veil.core``; docs/architecture.md draws the same map.
LAYERS = {
    "veil.core": set(),
    "veil.media": {"veil.core"},
    "veil.track": {"veil.core"},
    "veil.mask": {"veil.core"},
    "veil.job": {"veil", "veil.core", "veil.media", "veil.track", "veil.mask"},
    "veil.wire": {
        "veil", "veil.core", "veil.media", "veil.track", "veil.mask", "veil.job", "veil.v1"
    },
    "veil.remote": {"veil", "veil.core", "veil.media", "veil.job", "veil.wire", "veil.v1"},
    "veil.live": {"veil", "veil.core", "veil.media", "veil.track", "veil.mask"},
    "veil.review": {"veil", "veil.core", "veil.media", "veil.mask", "veil.job"},
    "veil.batch": {"veil.core", "veil.media", "veil.job", "veil.cli"},
    "veil.server.engine": {"veil.core"},
    "veil.server.service": {
        "veil", "veil.core", "veil.media", "veil.job", "veil.wire", "veil.v1", "veil.server.engine"
    },
}  # fmt: skip


def _top(module: str) -> str:
    """The package a dotted name belongs to, at the depth ``LAYERS`` names them."""
    parts = module.split(".")
    depth = 3 if parts[:2] == ["veil", "server"] and len(parts) > 2 else 2
    return ".".join(parts[:depth])


def test_packages_import_only_the_layers_below_them() -> None:
    wrong = []
    for path, module in _sources():
        package = _top(module)
        if package not in LAYERS:
            continue
        for line, target in _imports(path, module):
            above = target.startswith("veil") and _top(target) not in {package, *LAYERS[package]}
            if above:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, "\n".join(wrong)
