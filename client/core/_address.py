"""``HOST:PORT``, as every listening or connecting option takes it."""

from __future__ import annotations

from ._errors import ConfigError


def split_address(address: str, what: str, *, default_host: str | None = None) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as (host, port); ``what`` names the option in
    the error (``--metrics``). ``:PORT`` means ``default_host`` where one is given."""
    host, sep, port = address.rpartition(":")
    host = host or (default_host or "")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what} {address!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)
