"""The district servers' error interceptor: exceptions become gRPC status codes.

Servicers raise domain errors (``rt_client.errors``); this interceptor turns
them into status codes by the one table, ``rt_client.status_codes``. Toward a
peer district every message is detail-free (the details go to the local log);
toward the local registrar service the message is the error's diagnostics,
written for a registrar.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from rt_client import errors
from rt_client.interceptors import HandlerInterceptor
from rt_client.status_codes import peer_text, status_for
from rt_server.flows.district import DatabaseFailure
from rt_server.flows.metrics import DistrictMetrics

log = logging.getLogger("rt_server.errors")

# What a registrar sees when the district's own database failed under a call.
DATABASE_UNAVAILABLE = (
    "the district database could not complete this (busy, full or unreachable); "
    "nothing was changed. Try again; if it keeps failing, tell your IT staff"
)


def wrap_behavior(
    handler: grpc.RpcMethodHandler,
    around: Callable[[Callable[..., Any], Any, grpc.ServicerContext], Any],
) -> grpc.RpcMethodHandler:
    """A copy of ``handler`` whose behavior runs inside ``around(behavior, request, context)``."""
    for kind, factory in (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    ):
        behavior = getattr(handler, kind)
        if behavior is not None:

            def wrapped(request: Any, context: grpc.ServicerContext, _b: Any = behavior) -> Any:
                return around(_b, request, context)

            return factory(
                wrapped,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class ErrorMappingInterceptor(HandlerInterceptor):
    """Turns domain errors into status codes for every method of a server.

    Being outermost, it also counts every call by method and status code
    (``metrics``; ``server`` names which server's calls they are).
    """

    def __init__(
        self, *, peer_facing: bool, metrics: DistrictMetrics | None = None, server: str = ""
    ) -> None:
        self._peer_facing = peer_facing
        self._metrics = metrics or DistrictMetrics()
        self._server = server or ("peer" if peer_facing else "registrar")

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        return wrap_behavior(handler, lambda b, req, ctx: self._call(method, b, req, ctx))

    def _call(
        self, method: str, behavior: Callable[..., Any], request: Any, context: grpc.ServicerContext
    ) -> Any:
        try:
            result = behavior(request, context)
            self._metrics.rpc(self._server, method, "OK")
            return result
        except errors.RecordsTransferError as exc:
            code = status_for(exc)
            log.info("%s refused: %s: %s", method, type(exc).__name__, exc)
            text = peer_text(code) if self._peer_facing else exc.diagnostics()
        except DatabaseFailure as exc:
            # The database could not make the change (a lock held past the
            # timeout, a full disk, a lost connection): the transaction rolled
            # back and nothing changed, so the same call may well succeed later.
            # Only the driver's message is logged: the statement's parameters
            # may hold student data.
            log.warning("%s: the database could not complete it: %s", method, exc.orig)
            code = grpc.StatusCode.UNAVAILABLE
            text = peer_text(code) if self._peer_facing else DATABASE_UNAVAILABLE
        except Exception:
            if context.code() is not None:  # already aborted (e.g. by the peer gate)
                aborted = context.code()
                self._metrics.rpc(self._server, method, getattr(aborted, "name", str(aborted)))
                raise
            # A bug, not a refusal: keep the traceback local, tell the caller nothing.
            log.exception("%s failed unexpectedly", method)
            code, text = grpc.StatusCode.INTERNAL, "internal error"
        self._metrics.rpc(self._server, method, code.name)
        context.abort(code, text)
