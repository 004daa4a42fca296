"""The whole flow between two real district servers and a real registry."""

from __future__ import annotations

import time

import grpc
import pytest

from protos.rt.v1 import common_pb2, registrar_pb2, registrar_pb2_grpc
from rt_server.server import DistrictServer

PRIOR = "1964733"
NEW = "3768338"
PRIOR_SCHOOL = "19647331932334"
NEW_SCHOOL = "37683383732997"


@pytest.fixture
def districts(enrolled_district):
    prior = enrolled_district(PRIOR, "Prior Unified", [(PRIOR_SCHOOL, "Lincoln High")])
    new = enrolled_district(NEW, "New Unified", [(NEW_SCHOOL, "Roosevelt High")])
    servers = [DistrictServer(prior.config), DistrictServer(new.config)]
    for s in servers:
        s.start()
    stubs = [
        registrar_pb2_grpc.RegistrarStub(grpc.insecure_channel(f"unix:{s.config.registrar_socket}"))
        for s in servers
    ]
    yield servers, stubs
    for s in servers:
        s.stop(grace=1)


def test_smoke(districts):
    from rt_server.core import samples
    import random

    (a_srv, b_srv), (a, b) = districts
    rng = random.Random(7)
    batches = samples.sample_batches(rng)
    a.AddStudent(registrar_pb2.AddStudentRequest(
        student=registrar_pb2.Student(local_id="A1", ssid="1234567890", legal_first_name="Ana", legal_last_name="Nuñez",
                                      birth_date="2011-04-02", gender="F", school=PRIOR_SCHOOL),
        records=batches, actor="alice"))
    b.AddStudent(registrar_pb2.AddStudentRequest(
        student=registrar_pb2.Student(local_id="B1", ssid="1234567890", legal_first_name="Ana", legal_last_name="Nuñez",
                                      birth_date="2011-04-02", gender="F", school=NEW_SCHOOL), actor="bob"))
    detail = b.CreateRequest(registrar_pb2.CreateRequestRequest(student_local_id="B1", prior_school=PRIOR_SCHOOL, actor="bob"))
    assert detail.summary.status == common_pb2.PENDING, detail
    rid = detail.summary.request_id
    a.ApproveRequest(registrar_pb2.ApproveRequestRequest(request_id=rid, actor="alice"))
    for _ in range(100):
        d = b.GetRequest(registrar_pb2.RequestRef(request_id=rid))
        if d.summary.status == common_pb2.DATA_RECEIVED:
            break
        time.sleep(0.05)
    assert d.summary.status == common_pb2.DATA_RECEIVED, d
    review = b.ReviewTransfer(registrar_pb2.RequestRef(request_id=rid))
    assert sum(t.new_rows for t in review.tables) == sum(len(getattr(x, common_pb2.TableCode.Name(x.table).lower())) for x in batches)
    result = b.ImportTransfer(registrar_pb2.ImportTransferRequest(request_id=rid, actor="bob"))
    for _ in range(100):
        d = a.GetRequest(registrar_pb2.RequestRef(request_id=rid))
        if d.summary.status == common_pb2.COMPLETE:
            break
        time.sleep(0.05)
    assert d.summary.status == common_pb2.COMPLETE
