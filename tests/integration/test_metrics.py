"""Prometheus metrics of real district servers, scraped over HTTP while a transfer runs.

Two real servers in this process (``tests.harness``), each with its own
registry of metrics on its own loopback listener: the scrape must show the
figures of that server only, move with the transfer, and carry no student data.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from protos.rt.v1 import registrar_pb2, registry_pb2, registry_pb2_grpc
from rt_client.config import DistrictConfig, load_config, write_config
from rt_client.directory import registry_channel
from rt_client.errors import ConfigError
from tests.harness.flow import (
    BIRTH,
    FIRST,
    LAST,
    PRIOR_SCHOOL,
    RPC_TIMEOUT,
    SSID,
    Status,
    add_student,
    approve,
    get,
    import_,
    small_records,
    wait_status,
    wait_until,
)
from tests.harness.world import PRIOR, Pair, Side, World

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_text(side: Side) -> str:
    assert side.server is not None and side.server.metrics_port
    url = f"http://127.0.0.1:{side.server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback http)
        assert response.status == 200
        return str(response.read().decode())


def scrape(side: Side) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(scrape_text(side))
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def metered(harness: World) -> Pair:
    """A and B enrolled with metrics on a free loopback port each (not started)."""
    return harness.pair(metrics_listen="127.0.0.1:0")


@pytest.fixture
def scraping(metered: Pair) -> Iterator[list[str]]:
    """Scrape B over and over in the background while the test runs; the pages scraped."""
    pages: list[str] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.02):
            if metered.b.server is not None and metered.b.server.metrics_port:
                try:
                    pages.append(scrape_text(metered.b))
                except OSError:
                    pass  # stopping

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield pages
    stop.set()
    thread.join(5)


def test_scrape_follows_a_transfer_between_real_servers(metered: Pair, scraping: list[str]) -> None:
    p = metered
    # B first, A down: the request waits in B's outbox and its retries are counted.
    p.start(p.b)
    add_student(p.b, "B1")
    detail = p.b.rpc.CreateRequest(
        registrar_pb2.CreateRequestRequest(
            student_local_id="B1", prior_school=PRIOR_SCHOOL, actor="bob"
        ),
        timeout=RPC_TIMEOUT,
    )
    request_id = detail.summary.request_id
    assert detail.summary.status == Status.QUEUED
    wait_until("a retry", lambda: get(p.b, request_id).attempts >= 1 or None)
    down = scrape(p.b)
    assert value(down, "rt_outbox_retries_total", kind="request", reason="peer_unavailable") >= 1
    assert value(down, "rt_requests", direction="OUTBOUND", status="QUEUED") == 1
    assert (
        sum(value(down, "rt_outbox_depth", kind="request", state=s) for s in ("due", "waiting"))
        == 1
    )

    p.start(p.a)
    records = small_records(9)
    add_student(p.a, "A1", records)
    assert p.b.server is not None and p.b.server.district is not None
    p.b.server.district.wake_worker()
    wait_status(p.b, request_id, Status.PENDING)
    before = scrape(p.a)
    assert value(before, "rt_transfers_total", status="delivered") == 0
    approve(p, request_id)
    result = import_(p, request_id)
    wait_status(p.a, request_id, Status.COMPLETE)

    rows = sum(len(r) for r in records.values())
    a, b = scrape(p.a), scrape(p.b)
    assert value(a, "rt_transfers_total", status="delivered") == 1
    assert value(a, "rt_transfer_rows_total", direction="sent") == rows
    sent = value(a, "rt_transfer_bytes_total", direction="sent")
    assert sent > 0
    assert value(a, "rt_delivery_seconds_count", role="sender") == 1
    assert value(a, "rt_delivery_seconds_sum", role="sender") > 0
    assert value(a, "rt_rpcs_total", server="registrar", method="ApproveRequest", code="OK") == 1
    assert value(a, "rt_rpcs_total", server="peer", method="DeliverRecords", code="OK") == 0
    assert value(a, "rt_requests", direction="INBOUND", status="COMPLETE") == 1

    assert value(b, "rt_transfers_total", status="received") == 1
    assert value(b, "rt_transfer_bytes_total", direction="received") == sent
    assert value(b, "rt_transfer_rows_total", direction="received") == rows
    assert value(b, "rt_transfer_rows_total", direction="imported") == sum(
        c.rows for c in result.imported
    )
    assert value(b, "rt_transfers_total", status="imported") == 1
    assert value(b, "rt_import_seconds_count") == 1
    assert value(b, "rt_import_seconds_bucket", le="+Inf") == 1
    assert value(b, "rt_delivery_seconds_count", role="receiver") == 1
    assert value(b, "rt_rpcs_total", server="peer", method="DeliverRecords", code="OK") == 1
    assert value(b, "rt_requests", direction="OUTBOUND", status="IMPORTED") == 1
    for side in (a, b):
        assert value(side, "rt_certificate_expiry_seconds", certificate="district") > 86400
        assert value(side, "rt_certificate_expiry_seconds", certificate="registry_ca") > 86400
        assert 0 <= value(side, "rt_directory_cache_age_seconds") < 300

    # Scraped all along, each page whole, and never a student's data or an id.
    assert len(scraping) >= 3
    for page in [*scraping, scrape_text(p.a), scrape_text(p.b)]:
        list(text_string_to_metric_families(page))
        for secret in (SSID, FIRST, LAST, BIRTH, request_id, "A1", "B1"):
            assert secret not in page


def test_metrics_are_off_unless_configured(pair: Pair) -> None:
    side = pair.start(pair.a)
    assert side.server is not None and side.server.metrics_port == 0


def test_metrics_listen_refuses_a_non_loopback_address_unless_allowed(pair: Pair) -> None:
    config = pair.a.enrolled.config
    for address in ("0.0.0.0:9464", "[::]:9464", "192.0.2.7:9464", "metrics.example.org:9464"):
        with pytest.raises(ConfigError, match="not a loopback address"):
            DistrictConfig(**{**config.__dict__, "metrics_listen": address})
    for address in ("127.0.0.1:9464", "[::1]:9464", "localhost:9464"):
        DistrictConfig(**{**config.__dict__, "metrics_listen": address})
    allowed = DistrictConfig(
        **{**config.__dict__, "metrics_listen": "0.0.0.0:9464", "metrics_allow_non_loopback": True}
    )
    assert allowed.metrics_listen == "0.0.0.0:9464"


def test_metrics_table_in_district_toml(pair: Pair, tmp_path: Path) -> None:
    config = DistrictConfig(**{**pair.a.enrolled.config.__dict__, "metrics_listen": "[::1]:9464"})
    path = tmp_path / "district.toml"
    write_config(config, path)
    assert '[metrics]\nlisten = "[::1]:9464"' in path.read_text()
    assert load_config(path).metrics_listen == "[::1]:9464"
    text = path.read_text().replace('"[::1]:9464"', '"0.0.0.0:9464"')
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"metrics\.listen: 0\.0\.0\.0:9464 is not a loopback"):
        load_config(path)
    path.write_text(text.replace("allow_non_loopback = false", "allow_non_loopback = true"))
    assert load_config(path).metrics_allow_non_loopback is True
    path.write_text(text.replace("allow_non_loopback = false", "allow_non_loopback = 1"))
    with pytest.raises(ConfigError, match="metrics_allow_non_loopback must be true or false"):
        load_config(path)


def test_registry_counts_enrollments_and_lookups(tmp_path: Path) -> None:
    world = World.start(tmp_path, metrics_listen="127.0.0.1:0")
    try:
        port = world.registry.running.metrics_port
        assert port
        district = world.enroll(PRIOR)
        channel = registry_channel(world.registry.address, district.identity.tls)
        try:
            stub = registry_pb2_grpc.RegistryStub(channel)
            for _ in range(3):
                stub.LookupDistrict(
                    registry_pb2.LookupDistrictRequest(district_code=PRIOR), timeout=RPC_TIMEOUT
                )
            with pytest.raises(grpc.RpcError):
                stub.LookupDistrict(
                    registry_pb2.LookupDistrictRequest(district_code="9999999"),
                    timeout=RPC_TIMEOUT,
                )
        finally:
            channel.close()
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback http)
            page = response.read().decode()
    finally:
        world.close()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }
    assert value(samples, "rt_registry_rpcs_total", method="Enroll", code="OK") == 1
    assert value(samples, "rt_registry_rpcs_total", method="LookupDistrict", code="OK") == 3
    assert value(samples, "rt_registry_rpcs_total", method="LookupDistrict", code="NOT_FOUND") == 1
    assert PRIOR not in page
