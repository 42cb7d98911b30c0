"""The ``veil`` command line (``veil.cli:main``, ``python -m veil.cli``): one module per group
of commands (jobs, batch, audit, live, serve/models), the argument groups they share, and the
settings built from arguments and the TOML config. User-facing output goes to stdout/stderr
here and only here.
"""

from ._main import main

__all__ = ["main"]
