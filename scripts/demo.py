"""``make demo``: the whole Records Transfer flow on one machine, through the real tools.

What it does, as an operator and two registrars would:

1. ``rt-registry init`` a registry in a temporary directory, ``district add`` a
   prior district (A) and a new district (B) with one school each, and
   ``rt-registry serve`` it on free loopback ports.
2. ``rt enroll`` both districts (keys generated locally, one-time authorization
   codes) and ``rt serve`` each of them (SQLite in its data directory).
3. Seed A from its SIS: an Aeries-layout table export (STU.csv and the eight
   record tables, sample data from ``scripts.samples``, written by
   ``scripts.demo_steps.sis``) loaded with ``rt sis load``.
4. At B: enroll the student who moved (``rt student add``), find the prior
   school (``rt schools search``) and ask for the records (``rt request create``).
5. At A: see the request (``rt requests --direction in``), ``rt match`` it to a
   local student and ``rt approve --wait``: the records stream to B, end-to-end
   encrypted.
6. At B: ``rt show``, ``rt review`` and ``rt import``; at A, ``rt show`` reaches
   COMPLETE and ``rt disclosures`` lists the FERPA disclosure.
7. Compare, field by field, the rows A holds for the student with the rows B
   imported (PID, SQ and SRC aside), print a per-table summary, and exit 0 only
   if every row sent was imported exactly.
8. At B: ``rt sis export`` the imported student as Aeries CSV and as Ed-Fi 5.2
   XML (each document validated against the XSDs), and print where they are.

Every process it starts is stopped at the end (SIGTERM, then SIGKILL), and the
temporary directory is removed unless ``--keep`` is given.

    python scripts/demo.py [--keep] [--students N] [--seed N] [--console]

With ``--console`` it then leaves everything running, with both districts' web consoles
and a login each (``scripts/demo_steps/console.py``), until Ctrl-C.

This file is the flow, step by step; each step is in ``scripts/demo_steps/``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

# Run from a checkout without installing: the project root on the path.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The demo's own readiness probes are gRPC clients: apply the project's TLS
# cipher policy before anything imports grpc, as every entry point does.
from rt_client.tls import configure_grpc_tls  # noqa: E402

configure_grpc_tls()

from rich.markup import escape  # noqa: E402

from scripts import loopback  # noqa: E402
from scripts.demo_steps.check import step_compare  # noqa: E402
from scripts.demo_steps.commands import Demo, DemoError, console, heading  # noqa: E402
from scripts.demo_steps.sis import step_handback, step_seed  # noqa: E402
from scripts.demo_steps.transfer import (  # noqa: E402
    step_complete,
    step_inbound,
    step_match_approve,
    step_new_student,
    step_request,
    step_review_import,
    step_search,
)
from scripts.demo_steps.world import (  # noqa: E402
    NEW_CODE,
    NEW_REGISTRAR,
    NEW_SCHOOL_NAME,
    PRIOR_CODE,
    PRIOR_REGISTRAR,
    step_enroll,
    step_registry,
    step_serve,
)

SUMMARY_FAILED = "DEMO FAILED"


def run(demo: Demo, students: int, seed: int) -> bool:
    heading(1, "Registry: create it, register two districts, serve it")
    registry = step_registry(demo)

    heading(2, f"Enroll the prior district {PRIOR_CODE} and the new district {NEW_CODE}")
    prior = step_enroll(demo, registry, PRIOR_CODE, PRIOR_REGISTRAR)
    new = step_enroll(demo, registry, NEW_CODE, NEW_REGISTRAR)
    demo.districts[:] = [prior, new]

    heading(3, "Start both district servers")
    step_serve(demo, prior)
    step_serve(demo, new)

    heading(4, f"Prior district: seed {students} students with records in all eight tables")
    seeded = step_seed(demo, prior, students, seed)
    mover = seeded[min(1, len(seeded) - 1)]

    heading(5, f"New district: {mover.first} {mover.last} enrolls at {NEW_SCHOOL_NAME}")
    new_id = step_new_student(demo, new, mover)

    heading(6, "New district: find the prior school in the directory")
    school = step_search(demo, new)

    heading(7, "New district: request the student's records")
    request_id = step_request(demo, new, new_id, school)

    heading(8, "Prior district: the request arrives")
    step_inbound(demo, prior, request_id)

    heading(9, "Prior district: match the student and approve (records stream, encrypted)")
    prior_id = step_match_approve(demo, prior, request_id, mover.local_id)

    heading(10, "New district: the records arrive; review and import them")
    received = step_review_import(demo, new, request_id)

    heading(11, "Prior district: the transfer is complete; the disclosure is on record")
    step_complete(demo, prior, request_id)

    heading(12, f"Check: rows sent by {PRIOR_CODE} vs rows imported at {NEW_CODE}")
    ok = step_compare(prior, prior_id, new, new_id, received)

    heading(13, "New district: hand the imported records back to the SIS (Aeries CSV, Ed-Fi)")
    step_handback(demo, new, request_id)
    return ok


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def report_failure(demo: Demo, message: str) -> None:
    """The failure, then the tail of every server's log (the cause is usually there)."""
    console.print(f"\n[bold red]{SUMMARY_FAILED}:[/bold red] {escape(message)}")
    for server in demo.servers:
        state = "running" if server.alive() else f"exited with status {server.popen.returncode}"
        console.print(f"\n[bold]--- {server.name} ({state}); last lines of {server.log}:[/bold]")
        console.print(server.tail(30) or "(log is empty)", markup=False, highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--students", type=int, default=5, help="students to seed (default: 5)")
    parser.add_argument("--seed", type=int, default=2024, help="sample data seed (default: 2024)")
    parser.add_argument(
        "--console",
        action="store_true",
        help="then leave everything running with both web consoles and a login each (Ctrl-C)",
    )
    args = parser.parse_args(argv)
    if args.students < 1:
        parser.error("--students must be at least 1")

    # Each district's registrar socket lives in its data directory, and a Unix
    # socket path is limited to about 100 bytes: keep the work directory short.
    base = tempfile.gettempdir()
    if len(base) > 40 and os.path.isdir("/tmp"):
        base = "/tmp"
    work = Path(tempfile.mkdtemp(prefix="rt-demo-", dir=base))
    bin_dir = Path(sys.executable).parent
    env = loopback.tool_env()
    env["COLUMNS"] = str(max(console.width, 100))
    if console.is_terminal:
        env["FORCE_COLOR"] = "1"  # the tools' tables keep their colours through the pipe
    demo = Demo(work=work, bin_dir=bin_dir, env=env)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the servers are stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    console.print(f"[bold]Records Transfer demo[/bold] in {work}")
    started = time.monotonic()
    ok = False
    try:
        ok = run(demo, args.students, args.seed)
        if ok and args.console:
            from scripts.demo_steps.console import serve_consoles

            serve_consoles(demo, (demo.districts[0], demo.districts[1]))
    except DemoError as exc:
        report_failure(demo, str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug in the demo: still show the servers' logs
        console.print_exception()
        report_failure(demo, f"unexpected {type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        if ok and args.console:  # the consoles' normal end: stopped by the person
            console.print("\nStopping the consoles, both districts and the registry.")
        else:
            console.print(f"\n[bold red]{SUMMARY_FAILED}:[/bold red] interrupted")
            return 130
    finally:
        demo.stop_all()
        if args.keep:
            console.print(f"Kept {work} (logs in {work / 'logs'}).")
        else:
            shutil.rmtree(work, ignore_errors=True)
    console.print(f"Finished in {time.monotonic() - started:.1f} s; every process stopped.")
    if not ok and not args.keep:
        console.print("Run with --keep to inspect the databases and logs.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
