"""The registry's gRPC servicers: proto <-> domain, and errors to status codes.

Every rule lives in ``registry.service`` (which knows nothing of gRPC); a
servicer method reads the request, calls the service and builds the answer.
Errors become status codes by the one table, ``rt_client.status_codes``, in one
place (``_rpc``). Authentication failures are detail-free (the log has the
reason); input errors carry their message, which only describes the caller's
own request.

Two servicers, one per listener (``registry.server``): ``EnrollOnlyServicer``
on the server-authenticated enrollment port, ``RegistryServicer`` on the
mutual-TLS port.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc

from protos.rt.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from registry.enrollment import REFUSED, EnrollResult
from registry.metrics import RegistryMetrics
from registry.service import RegistryService
from registry.store import DatabaseFailure
from registry.submission import KeySubmission
from rt_client.callgate import client_address
from rt_client.errors import (
    CallerNotAuthenticated,
    EnrollmentRefused,
    PeerAuthError,
    RecordsTransferError,
)
from rt_client.ids import DistrictCode
from rt_client.status_codes import peer_text, status_for
from rt_client.tls import peer_certificate

__all__ = ["CallerAuth", "EnrollOnlyServicer", "RegistryServicer"]

# The registry's refusals log under one name, whichever module meets them.
log = logging.getLogger("registry.service")

_Handler = TypeVar("_Handler", bound=Callable[..., Any])

CallerAuth = Callable[[grpc.ServicerContext], DistrictCode]

# Codes whose text is the error's own message: it describes only the caller's request.
_SAYS_WHY: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)


# Where a servicer built without metrics (tests of the servicer alone) counts.
_UNCOUNTED = RegistryMetrics()


def _rpc(method: _Handler) -> _Handler:
    """Map the service's errors to status codes (``rt_client.status_codes``), in one place."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        name = method.__name__
        metrics: RegistryMetrics = getattr(self, "metrics", None) or _UNCOUNTED
        try:
            result = method(self, request, context)
            metrics.rpc(name, "OK")
            return result
        except RecordsTransferError as exc:
            code = status_for(exc)
            if isinstance(exc, EnrollmentRefused):
                text = REFUSED  # the reason is already in the log (registry.enrollment)
            elif code in _SAYS_WHY:
                text = str(exc)
            else:
                if isinstance(exc, CallerNotAuthenticated):
                    log.warning(
                        "%s: caller not authenticated: %s (peer %s)", name, exc, context.peer()
                    )
                elif isinstance(exc, PeerAuthError):
                    log.warning("%s: caller refused: %s (peer %s)", name, exc, context.peer())
                else:
                    log.exception("%s failed", name)
                text = peer_text(code)
            metrics.rpc(name, code.name)
            context.abort(code, text)
        except DatabaseFailure:
            log.exception("%s: database unavailable", name)
            metrics.rpc(name, grpc.StatusCode.UNAVAILABLE.name)
            context.abort(grpc.StatusCode.UNAVAILABLE, "registry busy, try again later")

    return wrapper  # type: ignore[return-value]


def _not_served(self: object, request: object, context: grpc.ServicerContext) -> NoReturn:
    """A method of the other listener: UNIMPLEMENTED here."""
    context.abort(grpc.StatusCode.UNIMPLEMENTED, "not served on this listener")
    raise AssertionError("unreachable: context.abort raises")


class EnrollOnlyServicer(registry_pb2_grpc.RegistryServicer):
    """The enrollment listener's servicer: ``Enroll`` only, everything else UNIMPLEMENTED."""

    def __init__(self, service: RegistryService, metrics: RegistryMetrics | None = None) -> None:
        self._service = service
        self.metrics = metrics

    @_rpc
    def Enroll(  # noqa: N802 (gRPC's method name)
        self, request: registry_pb2.EnrollRequest, context: grpc.ServicerContext
    ) -> registry_pb2.EnrollResponse:
        result = self._service.enroll(
            request.district_code,
            request.authorization_code,
            KeySubmission.from_proto(request.keys),
            source=client_address(context.peer()),
        )
        return _enroll_response(result)

    # The other methods need a district certificate: they live on the mutual-TLS listener.
    LookupDistrict = SearchSchools = ListDistricts = UpdateEntry = _not_served  # noqa: N815
    GetCheckpoint = GetInclusionProof = GetConsistencyProof = _not_served  # noqa: N815


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    """The mutual-TLS listener's servicer: every method but ``Enroll``, for enrolled districts.

    ``caller_auth`` identifies the calling district from the call's context; the
    default reads the verified client certificate. Tests of the servicer alone
    (pytest-grpc, no TLS) substitute it.
    """

    def __init__(
        self,
        service: RegistryService,
        caller_auth: CallerAuth | None = None,
        metrics: RegistryMetrics | None = None,
    ) -> None:
        self._service = service
        self.metrics = metrics
        self._caller_auth = caller_auth or self._caller_from_certificate

    Enroll = _not_served  # noqa: N815 (served on the enrollment listener only)

    def _caller_from_certificate(self, context: grpc.ServicerContext) -> DistrictCode:
        return self._service.authenticate(peer_certificate(context.auth_context()))

    @_rpc
    def LookupDistrict(  # noqa: N802
        self, request: registry_pb2.LookupDistrictRequest, context: grpc.ServicerContext
    ) -> common_pb2.SignedEnvelope:
        self._caller_auth(context)
        return self._service.lookup(request.district_code)

    @_rpc
    def SearchSchools(  # noqa: N802
        self, request: registry_pb2.SearchSchoolsRequest, context: grpc.ServicerContext
    ) -> registry_pb2.SearchSchoolsResponse:
        self._caller_auth(context)
        rows = self._service.search_schools(request.query, request.limit)
        return registry_pb2.SearchSchoolsResponse(
            schools=[
                registry_pb2.SchoolMatch(
                    cds_code=r.cds_code,
                    name=r.name,
                    district_code=r.district_code,
                    district_name=r.district_name,
                )
                for r in rows
            ]
        )

    @_rpc
    def ListDistricts(  # noqa: N802
        self, request: registry_pb2.ListDistrictsRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListDistrictsResponse:
        self._caller_auth(context)
        return registry_pb2.ListDistrictsResponse(entries=self._service.list_entries())

    @_rpc
    def UpdateEntry(  # noqa: N802
        self, request: registry_pb2.UpdateEntryRequest, context: grpc.ServicerContext
    ) -> registry_pb2.EnrollResponse:
        caller = self._caller_auth(context)
        cert = peer_certificate(context.auth_context())
        if cert is None:
            raise CallerNotAuthenticated("no client certificate")
        result = self._service.update_entry(
            caller, cert, request.district_code, KeySubmission.from_proto(request.keys)
        )
        return _enroll_response(result)

    @_rpc
    def GetCheckpoint(  # noqa: N802
        self, request: registry_pb2.GetCheckpointRequest, context: grpc.ServicerContext
    ) -> registry_pb2.LogCheckpoint:
        self._caller_auth(context)
        return registry_pb2.LogCheckpoint(note=self._service.checkpoint(request.min_cosignatures))

    @_rpc
    def GetInclusionProof(  # noqa: N802
        self, request: registry_pb2.GetInclusionProofRequest, context: grpc.ServicerContext
    ) -> registry_pb2.InclusionProof:
        self._caller_auth(context)
        index, hashes = self._service.inclusion_proof(
            request.district_code, request.version, request.tree_size
        )
        return registry_pb2.InclusionProof(
            leaf_index=index, tree_size=request.tree_size, hashes=hashes
        )

    @_rpc
    def GetConsistencyProof(  # noqa: N802
        self, request: registry_pb2.GetConsistencyProofRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ConsistencyProof:
        self._caller_auth(context)
        hashes = self._service.consistency_proof(request.old_size, request.new_size)
        return registry_pb2.ConsistencyProof(hashes=hashes)


def _enroll_response(result: EnrollResult) -> registry_pb2.EnrollResponse:
    return registry_pb2.EnrollResponse(
        certificate_pem=result.certificate_pem,
        ca_certificate_pem=result.ca_certificate_pem,
        entry=result.entry,
    )
