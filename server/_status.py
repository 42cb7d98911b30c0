"""The service's exception family and its one translation to gRPC status codes.

Everything the service raises on purpose is a :class:`ServiceError` carrying its status code;
each also subclasses the matching built-in (PyAV's habit), so ``except ValueError`` still
works for code that does not know the family. :func:`status_of` is the only place an
exception becomes a status code and a message a client reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from veil._errors import ConfigError, DetectorError, InputError, OutputError, RecordError, VeilError

__all__ = [
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InferenceFailed",
    "InvalidRequest",
    "Overloaded",
    "PermissionDenied",
    "ServiceError",
    "Unauthenticated",
    "Unavailable",
    "rewrap_handler",
    "status_of",
]

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of every error the service raises on purpose; ``code`` is what the client gets."""

    code = grpc.StatusCode.INTERNAL


class InvalidRequest(ServiceError, ValueError):
    """Malformed or inconsistent request: sizes, encodings, frame order, options."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(ServiceError, RuntimeError):
    """The request is well formed but this server cannot serve it (e.g. another model)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Overloaded(ServiceError, RuntimeError):
    """A bounded queue, stream or job limit is full: retry later or slow down."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(ServiceError, TimeoutError):
    """The request's deadline passed before its frames were detected."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(ServiceError, RuntimeError):
    """The model is still loading or the server is draining."""

    code = grpc.StatusCode.UNAVAILABLE


class Cancelled(ServiceError, RuntimeError):
    """The client went away."""

    code = grpc.StatusCode.CANCELLED


class Unauthenticated(ServiceError, PermissionError):
    """No bearer token, or one the server does not know."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServiceError, PermissionError):
    """A known token that may not call this method."""

    code = grpc.StatusCode.PERMISSION_DENIED


class InferenceFailed(ServiceError, RuntimeError):
    """The inference backend failed (details are logged, not sent)."""

    code = grpc.StatusCode.INTERNAL


_VEIL_CODES: tuple[tuple[type[VeilError], grpc.StatusCode], ...] = (
    (InputError, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (RecordError, grpc.StatusCode.INVALID_ARGUMENT),
    (OutputError, grpc.StatusCode.FAILED_PRECONDITION),
    (DetectorError, grpc.StatusCode.INTERNAL),
)


def status_of(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    """The status code and client-readable message for ``exc`` raised by ``method``.

    Errors outside both families are bugs: logged with their traceback, answered INTERNAL
    with a message that names no internals.
    """
    if isinstance(exc, ServiceError):
        return exc.code, str(exc)
    if isinstance(exc, VeilError):  # the pipeline, run server-side for cloud jobs
        for kind, code in _VEIL_CODES:
            if isinstance(exc, kind):
                return code, str(exc)
        return grpc.StatusCode.INTERNAL, str(exc)
    logger.error("%s failed unexpectedly", method, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"{method}: internal error ({type(exc).__name__}); logged"


def rewrap_handler(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour passed through ``wrap``, same streaming shape (for
    interceptors)."""
    kinds = {
        (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
        (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
        (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
        (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
    }
    attr, make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(  # type: ignore[no-any-return]
        wrap(getattr(handler, attr)),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
