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

from veil.core import ConfigError, DetectorError, InputError, OutputError, RecordError, VeilError
from veil.wire import WireError

__all__ = [
    "Cancelled",
    "DeadlineExceeded",
    "DecodeGuard",
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
    (WireError, grpc.StatusCode.INVALID_ARGUMENT),  # a message that breaks the contract
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
    if isinstance(exc, VeilError):  # veil.wire, and the pipeline run server-side for cloud jobs
        for kind, code in _VEIL_CODES:
            if isinstance(exc, kind):
                return code, str(exc)
        return grpc.StatusCode.INTERNAL, str(exc)
    logger.error("%s failed unexpectedly", method, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"{method}: internal error ({type(exc).__name__}); logged"


def rewrap_handler(
    handler: grpc.RpcMethodHandler,
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
    *,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour passed through ``wrap``, same streaming shape (for
    interceptors); ``request_deserializer`` replaces the handler's when given."""
    kinds = {
        (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
        (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
        (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
        (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
    }
    attr, make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(  # type: ignore[no-any-return]
        wrap(getattr(handler, attr)),
        request_deserializer=request_deserializer or handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class _Undecodable:
    """What a request that is not its method's protobuf deserialises to (see DecodeGuard)."""


_UNDECODABLE = _Undecodable()


class DecodeGuard(grpc.ServerInterceptor):
    """Bytes that are not the method's request protobuf become INVALID_ARGUMENT with a
    readable message; gRPC itself answers INTERNAL ("Exception deserializing request!").
    Register it last (innermost): the handlers of the interceptors outside it keep its
    deserializer. Only ``veil.v1`` methods: health and reflection keep gRPC's behaviour."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        parse = None if handler is None else handler.request_deserializer
        if handler is None or parse is None or not method.startswith("/veil.v1."):
            return handler
        kind = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
        message = (
            f"{method.rsplit('/', 1)[-1]}: the request cannot be parsed as "
            f"{getattr(kind, 'full_name', 'its protobuf message')}"
        )

        def guarded(data: bytes) -> Any:
            try:
                return parse(data)
            except Exception:  # protobuf's DecodeError, or worse: the bytes are the client's
                return _UNDECODABLE

        def check(request: Any) -> Any:
            if request is _UNDECODABLE:
                raise InvalidRequest(message)
            return request

        def wrap(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            if handler.request_streaming:

                def streaming(requests: Any, context: grpc.ServicerContext) -> Any:
                    return behaviour((check(r) for r in requests), context)

                return streaming

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                if request is _UNDECODABLE:
                    logger.info("%s", message)
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
                return behaviour(request, context)

            return unary

        return rewrap_handler(handler, wrap, request_deserializer=guarded)
