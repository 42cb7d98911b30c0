"""A real Triton server for tests: the session fixture ``triton_server``.

Register it where it is needed with ``pytest_plugins = ["triton_fixture"]`` (tests/ is on
``sys.path``). It starts nvidia-pytriton's ``tritonserver`` from ``.triton-venv`` on free
loopback ports, serving ``models/`` (the fetched weights) through the python-based onnxruntime
backend, once per test session, and stops it at the end. Tests using it are skipped, with the
reason, only when ``.triton-venv`` is missing (``make test`` creates it first).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from triton_server import TritonServer, TritonServerConfig

__all__ = ["triton_server"]


@pytest.fixture(scope="session")
def triton_server() -> Iterator[TritonServer]:
    """A running Triton; ``.grpc_url`` for clients, ``.metrics_url`` for Prometheus."""
    config = TritonServerConfig()
    if not (config.venv / ".installed").is_file():
        pytest.skip(f"no Triton server environment at {config.venv}: run `make triton-env`")
    with TritonServer.start(config) as server:
        yield server
