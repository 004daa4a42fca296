"""The ``DistrictPeer`` servicer: translation only.

Authorization happened before any of these methods runs (``rt_server.rpc.auth``,
one interceptor for every method, which also bounds every wait for the peer's
messages); errors become status codes in one place
(``rt_server.rpc.errors``). Each method names the TLS peer and hands the
message to the flow module that owns it.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from protos.rt.v1 import common_pb2, peer_pb2, peer_pb2_grpc
from rt_server.flows import messages, receiver, requester, responder
from rt_server.flows.district import District
from rt_server.rpc.auth import current_peer


class DistrictPeerService(peer_pb2_grpc.DistrictPeerServicer):
    def __init__(self, district: District) -> None:
        self._d = district

    def SubmitRequest(
        self, request: common_pb2.SignedEnvelope, context: grpc.ServicerContext
    ) -> common_pb2.SignedEnvelope:
        return responder.receive_request(self._d, request, current_peer().code)

    def SubmitDecision(
        self, request: common_pb2.SignedEnvelope, context: grpc.ServicerContext
    ) -> common_pb2.SignedEnvelope:
        return requester.receive_decision(self._d, request, current_peer().code)

    def DeliverRecords(
        self, request_iterator: Iterator[peer_pb2.DeliveryFrame], context: grpc.ServicerContext
    ) -> common_pb2.SignedEnvelope:
        return receiver.receive_delivery(self._d, request_iterator, current_peer().code)

    def GetDeliveryOffset(
        self, request: peer_pb2.DeliveryOffsetRequest, context: grpc.ServicerContext
    ) -> peer_pb2.DeliveryOffset:
        return receiver.delivery_offset(self._d, request.transfer_id, current_peer().code)

    def PostMessage(
        self, request: common_pb2.SignedEnvelope, context: grpc.ServicerContext
    ) -> common_pb2.SignedEnvelope:
        return messages.receive_message(self._d, request, current_peer().code)

    def NotifyImport(
        self, request: common_pb2.SignedEnvelope, context: grpc.ServicerContext
    ) -> common_pb2.SignedEnvelope:
        return responder.receive_import_notice(self._d, request, current_peer().code)
