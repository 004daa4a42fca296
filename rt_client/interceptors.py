"""The one shape of this project's gRPC server interceptors: each method's handler, wrapped.

gRPC asks a ``ServerInterceptor`` for the handler of every call; ours
(``rt_client.callgate.CallGate``, ``rt_server.rpc.errors.ErrorMappingInterceptor``)
each replace the method's handler by one that runs it inside their own
checks. ``HandlerInterceptor`` does the asking; a subclass says how to wrap.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import grpc

__all__ = ["HandlerInterceptor"]


class HandlerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """A server interceptor that serves each method through ``wrap(handler, method)``."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # an unknown method: gRPC answers UNIMPLEMENTED
        return self.wrap(handler, handler_call_details.method)

    @abc.abstractmethod
    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """The handler to serve ``method`` (``"/rt.v1.Peer/SubmitRequest"``) with instead."""
