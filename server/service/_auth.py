"""Bearer-token authentication and per-method permission, as a server interceptor.

Tokens come from a file and/or the ``VEIL_TOKENS`` environment variable. The file has one
token a line, optionally followed by a name and the scopes it grants (``#`` starts a comment)::

    # token                                   name     scopes
    3f9a0c6e5b0d4f1e8a7c2b9d6e4f1a3c          edge-1   detect
    b77c1d2e3f4a5b6c7d8e9f0a1b2c3d4e          batch    detect,job

Scopes: ``detect`` (GetModelInfo, Detect, DetectStream) and ``job`` (RunJob); no scopes means
all. ``VEIL_TOKENS`` is a comma-separated list of tokens with every scope. Health checking
and reflection need no token. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from veil.core import ConfigError

from ._status import PermissionDenied, Unauthenticated, rewrap_handler

__all__ = ["SCOPES", "AuthInterceptor", "Token", "TokenStore"]

logger = logging.getLogger(__name__)

SCOPES = frozenset({"detect", "job"})
_METHOD_SCOPES = {
    "/veil.v1.DetectionService/GetModelInfo": "detect",
    "/veil.v1.DetectionService/Detect": "detect",
    "/veil.v1.DetectionService/DetectStream": "detect",
    "/veil.v1.DetectionService/RunJob": "job",
}
_PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


@dataclass(frozen=True, kw_only=True)
class Token:
    secret: str
    name: str
    scopes: frozenset[str]


class TokenStore:
    """The known tokens; :meth:`check` says who a request's metadata belongs to."""

    def __init__(self, tokens: Iterable[Token]) -> None:
        self._tokens = tuple(tokens)
        if not self._tokens:
            raise ConfigError("no bearer tokens given (empty token file or VEIL_TOKENS)")

    @classmethod
    def load(cls, path: Path | None = None, env: Mapping[str, str] | None = None) -> TokenStore:
        tokens: list[Token] = []
        if path is not None:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"token file {path}: {exc.strerror or exc}") from exc
            for number, line in enumerate(text.splitlines(), 1):
                fields = line.split("#", 1)[0].split()
                if not fields:
                    continue
                if len(fields) > 3:
                    raise ConfigError(f"token file {path}:{number}: expected TOKEN [NAME [SCOPES]]")
                scopes = frozenset(fields[2].split(",")) if len(fields) == 3 else SCOPES
                if not scopes <= SCOPES:
                    raise ConfigError(
                        f"token file {path}:{number}: unknown scopes "
                        f"{', '.join(sorted(scopes - SCOPES))} (known: detect, job)"
                    )
                name = fields[1] if len(fields) > 1 else f"token-{number}"
                tokens.append(Token(secret=fields[0], name=name, scopes=scopes))
        for index, secret in enumerate((env or {}).get("VEIL_TOKENS", "").split(","), 1):
            if secret.strip():
                tokens.append(Token(secret=secret.strip(), name=f"env-{index}", scopes=SCOPES))
        return cls(tokens)

    def identify(self, metadata: Iterable[tuple[str, Any]]) -> Token:
        """The token the ``authorization: Bearer ...`` metadata carries."""
        header = next((str(v) for k, v in metadata if k == "authorization"), None)
        if header is None:
            raise Unauthenticated("no bearer token: send 'authorization: Bearer <token>'")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthenticated("the authorization header must read 'Bearer <token>'")
        found = None
        for token in self._tokens:  # no early exit: constant time over the store
            if hmac.compare_digest(token.secret.encode(), secret.strip().encode()):
                found = token
        if found is None:
            raise Unauthenticated("unknown bearer token")
        return found

    def check(self, method: str, metadata: Iterable[tuple[str, Any]]) -> Token:
        token = self.identify(metadata)
        scope = _METHOD_SCOPES.get(method)
        if scope is not None and scope not in token.scopes:
            raise PermissionDenied(f"token {token.name!r} may not call {method.rsplit('/', 1)[-1]}")
        return token


def client_name(store: TokenStore | None, context: grpc.ServicerContext) -> str:
    """Who is calling, for per-client limits: token name, else certificate, else peer host."""
    if store is not None:
        try:
            return "token:" + store.identify(context.invocation_metadata()).name
        except Unauthenticated:
            pass
    auth = context.auth_context()
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        if auth.get(key):
            return "cert:" + auth[key][0].decode(errors="replace")
    peer = context.peer()
    return "peer:" + peer.rsplit(":", 1)[0]


class AuthInterceptor(grpc.ServerInterceptor):
    """Refuses RPCs without a known token (UNAUTHENTICATED) or its scope (PERMISSION_DENIED)."""

    def __init__(self, store: TokenStore) -> None:
        self._store = store

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        handler = continuation(handler_call_details)
        if handler is None or method.startswith(_PUBLIC_PREFIXES):
            return handler
        try:
            self._store.check(method, handler_call_details.invocation_metadata)  # type: ignore[attr-defined]
        except (Unauthenticated, PermissionDenied) as exc:
            logger.info("refused %s: %s", method, exc)
            code, message = exc.code, str(exc)

            def refuse(_behaviour: Callable[..., Any]) -> Callable[..., Any]:
                def run(_request: Any, context: grpc.ServicerContext) -> Any:
                    context.abort(code, message)

                return run

            return rewrap_handler(handler, refuse)
        return handler
