"""The benchmark's scenarios: B1 one_student, B2 summer_rush, B3 consolidation, transport_limit.

Every scenario starts its district servers afresh on copies of seeded template
databases, drives the flow through the ``Registrar`` services, checks that every
row arrived, and returns its figures as a dict (what ``bench-results.json``
holds). Times are ``time.perf_counter()`` in the benchmark process.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.bench.cluster import (
    ACTOR,
    PRIOR_SCHOOL,
    BenchError,
    Cluster,
    Observer,
    RssSampler,
    Student,
    free_port,
    seed_templates,
    wait_for,
)
from scripts.bench.floor import insert_floor
from scripts.bench.peer import PeerPipeline

FLOW_TIMEOUT = 900.0


@dataclass
class Settings:
    """Sizes of one benchmark run (``--quick`` shrinks every one of them)."""

    one_student_transfers: int = 200
    one_student_warmup: int = 5
    rush_students: int = 1000
    rush_runs: int = 3
    consolidation_rows: tuple[int, ...] = (100_000, 1_000_000)
    consolidation_runs: int = 2
    transport_megabytes: int = 512
    transport_repeats: int = 3
    sis_load_rows: int = 1_000_000


QUICK = Settings(
    one_student_transfers=5,
    one_student_warmup=1,
    rush_students=6,
    rush_runs=1,
    consolidation_rows=(1_000, 3_000),
    consolidation_runs=1,
    transport_megabytes=16,
    transport_repeats=1,
    sis_load_rows=3_000,
)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of ``values``."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _rpc(call: Callable[..., Any], request: Any, timeout: float = FLOW_TIMEOUT) -> Any:
    import grpc

    try:
        return call(request, timeout=timeout)
    except grpc.RpcError as exc:
        detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        raise BenchError(f"registrar call failed: {detail}") from exc


def _result(future: Any) -> Any:
    import grpc

    try:
        return future.result()
    except grpc.RpcError as exc:
        detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        raise BenchError(f"registrar call failed: {detail}") from exc


def _record_columns() -> dict[str, list[str]]:
    from rt_server.store.schema import RECORD_TABLES

    return {code: [c.name for c in table.columns] for code, table in RECORD_TABLES.items()}


class Flow:
    """The registrars' steps, through the Registrar services of a running cluster."""

    def __init__(self, cluster: Cluster) -> None:
        assert cluster.prior is not None and cluster.new is not None
        self.cluster = cluster
        self.prior = cluster.prior
        self.new = cluster.new
        self.at_prior = Observer(self.prior.observed)
        self.at_new = Observer(self.new.observed)

    def close(self) -> None:
        self.at_prior.close()
        self.at_new.close()

    def create(self, student: Student) -> str:
        return str(_result(self.create_async(student)).summary.request_id)

    def create_async(self, student: Student) -> Any:
        """CreateRequest at B, as a future (so A can be watched while it runs)."""
        from protos.rt.v1 import registrar_pb2

        return self.new.stub.CreateRequest.future(
            registrar_pb2.CreateRequestRequest(
                student_local_id=student.new_id, prior_school=PRIOR_SCHOOL, actor=ACTOR
            ),
            timeout=FLOW_TIMEOUT,
        )

    def approve(self, request_id: str, student: Student) -> None:
        _result(self.approve_async(request_id, student))

    def approve_async(self, request_id: str, student: Student) -> Any:
        from protos.rt.v1 import registrar_pb2

        return self.prior.stub.ApproveRequest.future(
            registrar_pb2.ApproveRequestRequest(
                request_id=request_id, student_local_id=student.prior_id, actor=ACTOR
            ),
            timeout=FLOW_TIMEOUT,
        )

    def approve_exact_matches(self, expected: int) -> None:
        """``rt approve --all-exact`` at A: one call approves every request."""
        from protos.rt.v1 import registrar_pb2

        result = _rpc(self.prior.stub.ApproveExactMatches, registrar_pb2.BatchRef(actor=ACTOR))
        if result.done != expected:
            raise BenchError(f"the batch approved {result.done} of {expected} requests")

    def import_all_new(self) -> list[str]:
        """``rt import --all-new`` at B: the requests it imported."""
        from protos.rt.v1 import registrar_pb2

        result = _rpc(self.new.stub.ImportAllNew, registrar_pb2.BatchRef(actor=ACTOR))
        if result.left or result.failed:
            raise BenchError(f"the batch import left {result.left}, failed {result.failed}")
        return [item.request_id for item in result.items]

    def import_(self, request_id: str) -> int:
        from protos.rt.v1 import registrar_pb2

        result = _rpc(
            self.new.stub.ImportTransfer,
            registrar_pb2.ImportTransferRequest(request_id=request_id, actor=ACTOR),
        )
        return sum(c.rows for c in result.imported)


def _start(cluster: Cluster, prior_db: Path, new_db: Path) -> None:
    assert cluster.prior is not None and cluster.new is not None
    cluster.serve(cluster.prior, prior_db)
    cluster.serve(cluster.new, new_db)


# --- B1 ---------------------------------------------------------------------


def one_student(
    cluster: Cluster, templates: Path, settings: Settings, students: int
) -> dict[str, Any]:
    """B1: single-student transfers one after another; latency percentiles."""
    prior_db, new_db, roster = seed_templates(templates, f"students-{students}", students, None)
    n, warm = settings.one_student_transfers, settings.one_student_warmup
    if n + warm > len(roster):
        raise BenchError("not enough seeded students for B1")
    _start(cluster, prior_db, new_db)
    flow = Flow(cluster)
    request_ms: list[float] = []
    delivery_ms: list[float] = []
    import_ms: list[float] = []
    rows: list[int] = []
    try:
        for i, student in enumerate(roster[: n + warm]):
            # Latencies are seen from the other district's database while the call runs.
            t0 = time.perf_counter()
            created = flow.create_async(student)
            t1 = flow.at_prior.wait_status(student.ssid, "PENDING", FLOW_TIMEOUT, by_ssid=True)
            request_id = str(_result(created).summary.request_id)
            t2 = time.perf_counter()
            approved = flow.approve_async(request_id, student)
            t3 = flow.at_new.wait_status(request_id, "DATA_RECEIVED", FLOW_TIMEOUT)
            _result(approved)
            t4 = time.perf_counter()
            imported = flow.import_(request_id)
            t5 = time.perf_counter()
            if imported != student.rows:
                raise BenchError(f"B1: imported {imported} rows of {student.rows}")
            # The next transfer starts once the prior district has heard of the import.
            flow.at_prior.wait_status(request_id, "COMPLETE", FLOW_TIMEOUT)
            if i < warm:
                continue
            request_ms.append((t1 - t0) * 1000)
            delivery_ms.append((t3 - t2) * 1000)
            import_ms.append((t5 - t4) * 1000)
            rows.append(student.rows)
    finally:
        flow.close()
    return {
        "scenario": "one_student",
        "transfers": n,
        "warmup_transfers": warm,
        "rows_per_transfer": statistics.median(rows),
        "request_latency_ms_p50": statistics.median(request_ms),
        "request_latency_ms_p99": percentile(request_ms, 99),
        "delivery_latency_ms_p50": statistics.median(delivery_ms),
        "delivery_latency_ms_p99": percentile(delivery_ms, 99),
        "import_ms_p50": statistics.median(import_ms),
        "import_ms_p99": percentile(import_ms, 99),
    }


# --- B2 ---------------------------------------------------------------------


def summer_rush(
    cluster: Cluster, templates: Path, settings: Settings, peer: PeerPipeline | None, students: int
) -> dict[str, Any]:
    """B2: many students requested, approved in a batch, delivered and imported; vs the peer."""
    prior_db, new_db, roster = seed_templates(templates, f"students-{students}", students, None)
    roster = roster[: settings.rush_students]
    total_rows = sum(s.rows for s in roster)
    runs = []
    for _ in range(settings.rush_runs):
        ours = _rush_once(cluster, prior_db, new_db, roster)
        peer_s = None
        if peer is not None:
            for d in (cluster.prior, cluster.new):
                assert d is not None
                cluster.stop_district(d)  # the peer pipeline runs on an idle machine too
            receiver = templates / "peer-receiver.db"
            receiver.write_bytes(new_db.read_bytes())
            peer_s = peer.transfer(
                prior_db, receiver, [(s.prior_id, s.new_id) for s in roster], _record_columns()
            )
            got = Observer(receiver)
            try:
                if got.count_rows() != total_rows:
                    raise BenchError("B2: the peer baseline did not import every row")
            finally:
                got.close()
        ours["peer_wall_s"] = peer_s
        ours["ratio_vs_peer"] = ours["wall_s"] / peer_s if peer_s else None
        runs.append(ours)
    return {
        "scenario": "summer_rush",
        "students": len(roster),
        "rows": total_rows,
        "runs": len(runs),
        **_medians(
            runs,
            ("wall_s", "request_phase_s", "wall_with_requests_s", "peer_wall_s", "ratio_vs_peer"),
        ),  # fmt: skip
        "rows_per_s": total_rows / statistics.median(r["wall_s"] for r in runs),
        "students_per_s": len(roster) / statistics.median(r["wall_s"] for r in runs),
        "per_run": runs,
    }


def _medians(runs: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    return out


def _rush_once(
    cluster: Cluster, prior_db: Path, new_db: Path, roster: list[Student]
) -> dict[str, Any]:
    _start(cluster, prior_db, new_db)
    flow = Flow(cluster)
    try:
        t0 = time.perf_counter()
        request_ids = [flow.create(s) for s in roster]
        for request_id in request_ids:
            flow.at_prior.wait_status(request_id, "PENDING", FLOW_TIMEOUT)
        t1 = time.perf_counter()
        importer = _Importer(flow, {r: s.rows for r, s in zip(request_ids, roster, strict=True)})
        importer.start()
        flow.approve_exact_matches(len(request_ids))  # rt approve --all-exact
        importer.join(FLOW_TIMEOUT)
        if importer.error is not None:
            raise importer.error
        if importer.is_alive():
            raise BenchError("B2: the imports did not finish in time")
        t2 = importer.finished_at
        expected = sum(s.rows for s in roster)
        if importer.rows != expected or flow.at_new.count_rows() != expected:
            raise BenchError(f"B2: imported {importer.rows} rows of {expected}")
        for request_id in request_ids:
            flow.at_prior.wait_status(request_id, "COMPLETE", FLOW_TIMEOUT)
    finally:
        flow.close()
    return {
        "request_phase_s": t1 - t0,
        "wall_s": t2 - t1,  # first approval -> last import: the work the peer pipeline does
        "wall_with_requests_s": t2 - t0,
    }


class _Importer(threading.Thread):
    """B's registrar: ``rt import --all-new`` whenever records have arrived, until all are in."""

    def __init__(self, flow: Flow, pending: dict[str, int]) -> None:
        super().__init__(name="bench-importer", daemon=True)
        self.flow = flow
        self.pending = pending  # request id -> its rows
        self.rows = 0
        self.finished_at = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + FLOW_TIMEOUT
            while self.pending:
                (arrived,) = self.flow.at_new.query(
                    "SELECT count(*) FROM requests WHERE direction = 'OUTBOUND' "
                    "AND status = 'DATA_RECEIVED'"
                )[0]
                if not arrived:
                    if time.monotonic() > deadline:
                        raise BenchError(f"B2: {len(self.pending)} transfers never arrived")
                    time.sleep(0.01)
                    continue
                for request_id in self.flow.import_all_new():
                    self.rows += self.pending.pop(request_id)
            self.finished_at = time.perf_counter()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc


# --- B3 ---------------------------------------------------------------------


def consolidation(
    cluster: Cluster, templates: Path, settings: Settings, peer: PeerPipeline | None
) -> dict[str, Any]:
    """B3: one transfer of many rows, end to end; peak RSS of both servers at two sizes."""
    sizes: dict[int, dict[str, Any]] = {}
    for rows in settings.consolidation_rows:
        prior_db, new_db, roster = seed_templates(templates, f"consolidation-{rows}", 1, rows)
        (student,) = roster
        runs = []
        for _ in range(settings.consolidation_runs):
            ours = _consolidate_once(cluster, prior_db, new_db, student)
            if peer is not None:
                for d in (cluster.prior, cluster.new):
                    assert d is not None
                    cluster.stop_district(d)
                receiver = templates / "peer-receiver.db"
                receiver.write_bytes(new_db.read_bytes())
                ours["peer_wall_s"] = peer.transfer(
                    prior_db, receiver, [(student.prior_id, student.new_id)], _record_columns()
                )
                ours["ratio_vs_peer"] = ours["wall_s"] / ours["peer_wall_s"]
            runs.append(ours)
        sizes[rows] = {
            "rows": student.rows,
            "runs": len(runs),
            **_medians(
                runs,
                (
                    "wall_s",
                    "delivery_s",
                    "import_s",
                    "peer_wall_s",
                    "ratio_vs_peer",
                    "ciphertext_mb",
                    "delivery_mb_s",
                ),
            ),  # fmt: skip
            # Peaks: the highest of the runs (each run is a fresh pair of processes).
            "peak_rss_mb_sender": max(r["peak_rss_mb_sender"] for r in runs),
            "peak_rss_mb_receiver": max(r["peak_rss_mb_receiver"] for r in runs),
            "per_run": runs,
        }
        sizes[rows]["rows_per_s"] = student.rows / sizes[rows]["wall_s"]
    small, large = min(sizes), max(sizes)
    big = sizes[large]
    floor = None
    if cluster.postgres is None:  # the floor is SQLite's own: the template files
        prior_db, new_db, (student,) = seed_templates(templates, f"consolidation-{large}", 1, large)
        floor = insert_floor(prior_db, new_db, student.prior_id, student.new_id)
    return {
        "scenario": "consolidation",
        "rows": big["rows"],
        "wall_s": big["wall_s"],
        "rows_per_s": big["rows_per_s"],
        "delivery_s": big["delivery_s"],
        "import_s": big["import_s"],
        "ciphertext_mb": big["ciphertext_mb"],
        "delivery_mb_s": big["delivery_mb_s"],
        "peer_wall_s": big["peer_wall_s"],
        "ratio_vs_peer": big["ratio_vs_peer"],
        "peak_rss_mb": {
            f"{rows}": {
                "sender": sizes[rows]["peak_rss_mb_sender"],
                "receiver": sizes[rows]["peak_rss_mb_receiver"],
            }
            for rows in sorted(sizes)
        },
        "rss_growth": {
            side: sizes[large][f"peak_rss_mb_{side}"] / sizes[small][f"peak_rss_mb_{side}"]
            for side in ("sender", "receiver")
        },
        "sizes": {str(k): v for k, v in sorted(sizes.items())},
        "sqlite_insert_floor": floor,
    }


def _consolidate_once(
    cluster: Cluster, prior_db: Path, new_db: Path, student: Student
) -> dict[str, Any]:
    _start(cluster, prior_db, new_db)
    assert cluster.prior is not None and cluster.new is not None
    assert cluster.prior.proc is not None and cluster.new.proc is not None
    flow = Flow(cluster)
    procs = {"sender": cluster.prior.proc, "receiver": cluster.new.proc}
    try:
        with RssSampler(procs) as sampler:
            request_id = flow.create(student)
            flow.at_prior.wait_status(request_id, "PENDING", FLOW_TIMEOUT)
            t0 = time.perf_counter()
            flow.approve(request_id, student)
            t1 = flow.at_new.wait_status(request_id, "DATA_RECEIVED", FLOW_TIMEOUT, interval=0.005)
            imported = flow.import_(request_id)
            t2 = time.perf_counter()
            flow.at_prior.wait_status(request_id, "COMPLETE", FLOW_TIMEOUT, interval=0.005)
        if imported != student.rows or flow.at_new.count_rows(student.new_id) != student.rows:
            raise BenchError(f"B3: imported {imported} rows of {student.rows}")
        (ciphertext,) = flow.at_new.query(
            "SELECT t.ciphertext_bytes FROM transfers t JOIN requests r "
            "ON r.transfer_id = t.transfer_id WHERE r.request_id = ?",
            request_id,
        )[0]
        peaks = {name: max(p.peak_rss_mb(), sampler.peak_mb[name]) for name, p in procs.items()}
    finally:
        flow.close()
    return {
        "wall_s": t2 - t0,
        "delivery_s": t1 - t0,
        "import_s": t2 - t1,
        "ciphertext_mb": ciphertext / 1e6,
        "delivery_mb_s": ciphertext / 1e6 / (t1 - t0),
        "peak_rss_mb_sender": peaks["sender"],
        "peak_rss_mb_receiver": peaks["receiver"],
    }


# --- transport limit -----------------------------------------------------------


def transport_limit(cluster: Cluster, settings: Settings) -> dict[str, Any]:
    from scripts.bench import transport

    assert cluster.prior is not None and cluster.new is not None
    port = free_port()
    server = cluster.spawn(
        "transport",
        [sys.executable, "-m", "scripts.bench.transport", "serve",
         "--data-dir", str(cluster.prior.data_dir), "--port", str(port)],
    )  # fmt: skip
    try:
        wait_for("the transport server", lambda: True if "ready" in server.tail() else None, 30)
        rates = transport.measure(
            cluster.new.data_dir,
            port,
            cluster.prior.code,
            settings.transport_megabytes,
            settings.transport_repeats,
        )
    finally:
        server.stop()
    return {
        "scenario": "transport_limit",
        "frame_bytes": transport.FRAME,
        "megabytes_per_repeat": settings.transport_megabytes,
        "repeats": len(rates),
        "mb_s": statistics.median(rates),
        "per_run_mb_s": rates,
    }
