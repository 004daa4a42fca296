"""``make bench``: Records Transfer against real servers on loopback, side by side with GPG+CSV.

    python -m scripts.bench [--quick] [--only B1,B2,B3,transport,sis_load]
                            [--out bench-results.json] [--profile DIR] [--keep]

Starts a registry and two districts as subprocesses (``rt-registry serve``,
``rt serve``, SQLite), runs the scenarios, prints a table and writes one JSON
object per scenario. ``--quick`` is a tiny run (seconds) that keeps the
benchmark from rotting; its figures mean nothing. ``--profile DIR`` samples
both district servers with py-spy during the scenarios and writes where the
time goes (``pip install py-spy``; not needed otherwise).
"""

from __future__ import annotations

# The gRPC cipher restriction must be in place before anything imports grpc.
from rt_client.tls import configure_grpc_tls

configure_grpc_tls()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from scripts.bench import footprint, lookups, report, scenarios  # noqa: E402
from scripts.bench.cluster import BenchError, Cluster  # noqa: E402
from scripts.bench.peer import PeerPipeline, ensure_tools  # noqa: E402
from scripts.bench.profile import Profiler  # noqa: E402
from scripts.bench.sis_load import sis_load, sis_load_postgres  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ("B1", "B2", "B3", "transport", "idle", "lookups", "sis_load")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="a tiny run, to check the benchmark works"
    )
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help="scenarios to run (default: all)"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench-results.json", help="JSON results file"
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy profiles of both servers here"
    )
    parser.add_argument(
        "--profile-idle", action="store_true", help="profile waiting threads too (wall time)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="B2 and B3 again with both districts on this PostgreSQL (a user that may "
        "create databases; make bench starts a throwaway one)",
    )
    parser.add_argument("--transfers", type=int, help="B1 transfers (default 200)")
    parser.add_argument("--rush-students", type=int, help="B2 students (default 1000)")
    parser.add_argument("--rush-runs", type=int, help="B2 runs (default 3)")
    parser.add_argument("--consolidation-runs", type=int, help="B3 runs per size (default 2)")
    parser.add_argument(
        "--consolidation-rows", help="B3 sizes, comma-separated (default 100000,1000000)"
    )
    parser.add_argument("--sis-rows", type=int, help="sis_load rows (default 1000000)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {SCENARIOS}")
    settings = scenarios.QUICK if args.quick else scenarios.Settings()
    if args.transfers:
        settings.one_student_transfers = args.transfers
    if args.rush_students:
        settings.rush_students = args.rush_students
    if args.rush_runs:
        settings.rush_runs = args.rush_runs
    if args.consolidation_runs:
        settings.consolidation_runs = args.consolidation_runs
    if args.sis_rows:
        settings.sis_load_rows = args.sis_rows
    if args.consolidation_rows:
        settings.consolidation_rows = tuple(int(x) for x in args.consolidation_rows.split(","))
    students = max(
        settings.rush_students, settings.one_student_transfers + settings.one_student_warmup
    )

    # A short path: each district's registrar socket lives in its data directory.
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    work = Path(tempfile.mkdtemp(prefix="rtb-", dir=base))
    print(f"Records Transfer benchmark{' (quick)' if args.quick else ''} in {work}", flush=True)
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    cluster = Cluster.create(work)
    cluster.env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    peer: PeerPipeline | None = None
    profiler: Profiler | None = None
    try:
        if args.profile:
            profiler = Profiler(args.profile, idle=args.profile_idle)
        problem = ensure_tools()
        if problem is None:
            peer = PeerPipeline(work / "peer")
        else:
            print(f"NOTE: the peer baseline is skipped: {problem}", flush=True)
        cluster.start()
        templates = work / "templates"
        for name in chosen:
            print(f"--- {name} ...", flush=True)
            t = time.monotonic()
            with profiler.scenario(name, cluster) if profiler else _nothing():
                if name == "B1":
                    result = scenarios.one_student(cluster, templates, settings, students)
                elif name == "B2":
                    result = scenarios.summer_rush(cluster, templates, settings, peer, students)
                elif name == "B3":
                    result = scenarios.consolidation(cluster, templates, settings, peer)
                elif name == "lookups":
                    result = lookups.registry_lookups(
                        cluster, *((50, 100) if args.quick else (1000, 5000))
                    )
                elif name == "idle":
                    result = footprint.idle_rss(cluster, 0.5 if args.quick else 5.0)
                elif name == "sis_load":
                    result = sis_load(work / "sis_load", settings.sis_load_rows)
                    if os.environ.get("RT_TEST_POSTGRES_URL"):
                        on_pg = sis_load_postgres(
                            work / "sis_load", os.environ["RT_TEST_POSTGRES_URL"]
                        )
                        result["postgres"] = on_pg
                else:
                    result = scenarios.transport_limit(cluster, settings)
            result["seconds"] = time.monotonic() - t
            results.append(result)
            print(report.one_line(result), flush=True)
        if args.postgres and {"B2", "B3"} & set(chosen):
            from scripts.bench.postgres import Postgres

            postgres = Postgres(args.postgres)
            cluster.use_postgres(postgres)
            try:
                for name in [n for n in chosen if n in ("B2", "B3")]:
                    print(f"--- {name} on PostgreSQL ...", flush=True)
                    t = time.monotonic()
                    if name == "B2":
                        result = scenarios.summer_rush(cluster, templates, settings, peer, students)
                    else:
                        result = scenarios.consolidation(cluster, templates, settings, peer)
                    result["scenario"] += report.POSTGRES_SUFFIX
                    result["seconds"] = time.monotonic() - t
                    results.append(result)
                    print(report.one_line(result), flush=True)
            finally:
                for d in (cluster.prior, cluster.new):
                    if d is not None:
                        cluster.stop_district(d)
                cluster.use_postgres(None)
                postgres.close()
    except BenchError as exc:
        print(f"BENCH FAILED: {exc}", file=sys.stderr)
        for proc in cluster.procs:
            print(f"--- {proc.name} (last lines of {proc.log}):\n{proc.tail()}", file=sys.stderr)
        return 1
    finally:
        cluster.close()
        if peer is not None:
            peer.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    document = {
        "command": "make bench" if not args.quick else "python -m scripts.bench --quick",
        "quick": args.quick,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "system": platform.platform(),
        },
        "total_seconds": time.monotonic() - started,
        "scenarios": results,
        "targets": report.targets(results),
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print()
    print(report.table(document))
    print(f"\nwrote {args.out} in {document['total_seconds']:.0f} s")
    if profiler is not None:
        print(f"profiles in {args.profile}")
    return 0


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())
