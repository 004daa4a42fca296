"""Registrar calls may name a request by a unique prefix of its id: resolved here, for every method.

Tables show request ids cut to their shortest unique prefix (8 characters or
more), and registrars type them back. Every ``Registrar`` method whose request
message has a ``request_id`` gets it resolved to the whole id before the
servicer sees it (``lookups.resolve_request_ref``): a prefix of no request is
the one "no request ... here" error, a prefix of several names them, one
under 8 characters or not of the form of a request id is refused. A whole id
passes unchanged. Method by method, the servicers never see a prefix, and a
method added later takes prefixes too. Only the registrar server mounts this:
peers always send whole ids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor

from rt_client.interceptors import HandlerInterceptor
from rt_server.flows import lookups
from rt_server.flows.district import District
from rt_server.rpc.errors import wrap_behavior

__all__ = ["RequestRefResolver"]

_FIELD = "request_id"


class RequestRefResolver(HandlerInterceptor):
    """Replaces a request id prefix in any registrar call's ``request_id`` by the whole id."""

    def __init__(self, district: District) -> None:
        self._d = district

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary is None and handler.unary_stream is None:
            return handler  # a stream of requests: no registrar call takes one
        return wrap_behavior(handler, self._call)

    def _call(
        self, behavior: Callable[..., Any], request: Any, context: grpc.ServicerContext
    ) -> Any:
        field = getattr(getattr(request, "DESCRIPTOR", None), "fields_by_name", {}).get(_FIELD)
        if field is not None and field.type == FieldDescriptor.TYPE_STRING:
            value = getattr(request, _FIELD)
            if value:
                setattr(request, _FIELD, lookups.resolve_request_ref(self._d, value))
        return behavior(request, context)
