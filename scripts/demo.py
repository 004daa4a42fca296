"""``make demo``: the whole Records Transfer flow on one machine, through the real tools.

What it does, as an operator and two registrars would:

1. ``rt-registry init`` a registry in a temporary directory, ``district add`` a
   prior district (A) and a new district (B) with one school each, and
   ``rt-registry serve`` it on free loopback ports.
2. ``rt enroll`` both districts (keys generated locally, one-time authorization
   codes) and ``rt serve`` each of them (SQLite in its data directory).
3. Seed A from its SIS: an Aeries-layout table export (STU.csv and the eight
   record tables, sample data from ``scripts.samples``, written by
   ``scripts.demo_sis``) loaded with ``rt sis load``.
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
and a login each (``scripts/demo_console.py``), until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

# Run from a checkout without installing: the project root on the path.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The demo's own readiness probes are gRPC clients: apply the project's TLS
# cipher policy before anything imports grpc, as every entry point does.
from rt_client.tls import REGISTRY_SERVER_NAME, configure_grpc_tls  # noqa: E402

configure_grpc_tls()

from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import select  # noqa: E402

from rt_server.store.engine import make_engine  # noqa: E402
from rt_server.store.schema import RECORD_TABLES  # noqa: E402
from scripts import demo_sis, loopback  # noqa: E402
from scripts.loopback import ServerProcess, free_port, health_ok  # noqa: E402

T = TypeVar("T")

# Two made-up districts (county-district codes) with one registered school each.
PRIOR_CODE, PRIOR_NAME = "1964733", "Prior Valley Unified"
PRIOR_SCHOOL, PRIOR_SCHOOL_NAME = "19647331932334", "Lincoln High"
NEW_CODE, NEW_NAME = "3768338", "New Harbor Unified"
NEW_SCHOOL, NEW_SCHOOL_NAME = "37683383732997", "Roosevelt High"
PRIOR_REGISTRAR = "Alice Ortiz"  # recorded as the acting staff member (rt --as)
NEW_REGISTRAR = "Ben Okafor"

READY_TIMEOUT = 20.0  # seconds for a server to come up
FLOW_TIMEOUT = 30.0  # seconds for a state the flow waits for
CLI_TIMEOUT = 90.0  # seconds for any one CLI call
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
BOOKKEEPING = {"PID", "SQ", "SRC"}
SUMMARY_OK = "DEMO OK"
SUMMARY_FAILED = "DEMO FAILED"

# Piped (CI, tests) rich would assume 80 columns; the tools' tables want more.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


class DemoError(Exception):
    """A step failed; the message says which and why."""


# --- processes ----------------------------------------------------------------


@dataclass
class Demo:
    """Where everything lives, and what has been started (to stop it at the end)."""

    work: Path
    bin_dir: Path
    servers: list[ServerProcess] = field(default_factory=list)
    districts: list[DistrictRun] = field(default_factory=list)  # prior, new (for --console)
    env: dict[str, str] = field(default_factory=dict)
    _echoed: set[tuple[str, ...]] = field(default_factory=set)

    def tool(self, name: str) -> str:
        found = loopback.find_tool(name)
        if found is None:
            raise DemoError(f"cannot find the `{name}` command; run `make install` first")
        return found

    def rel(self, path: Path) -> str:
        """``path`` relative to the work directory, where every command runs."""
        return str(path.relative_to(self.work))

    def run(
        self,
        argv: Sequence[str],
        *,
        show: bool = True,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one command (in the work directory) to completion.

        The command is echoed the first time it runs (polls repeat silently),
        its output printed if ``show``.
        """
        shown = " ".join(_quote(a) for a in [Path(argv[0]).name, *argv[1:]])
        if tuple(argv) not in self._echoed:
            self._echoed.add(tuple(argv))
            console.print(f"[dim]$ {escape(shown)}[/dim]", soft_wrap=True)
        try:
            done = subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                input=stdin,
                env={**self.env, **(env or {})},
                timeout=CLI_TIMEOUT,
                cwd=self.work,
            )
        except subprocess.TimeoutExpired as exc:
            raise DemoError(f"`{shown}` did not finish within {CLI_TIMEOUT:.0f} s") from exc
        if show and done.stdout:
            sys.stdout.write(done.stdout)
            sys.stdout.flush()
        if done.returncode != 0:
            raise DemoError(
                f"`{shown}` failed (exit {done.returncode}):\n"
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done

    def rt(self, district: DistrictRun, command: str, *args: str, show: bool = True) -> str:
        """``rt COMMAND --config ... --as ... ARGS`` as ``district``'s registrar.

        ``command`` is the command's words, e.g. ``"student add"``.
        """
        argv = [
            self.tool("rt"), *command.split(), "--config", self.rel(district.config),
            "--as", district.actor, *args,
        ]  # fmt: skip
        return self.run(argv, show=show).stdout

    def rt_json(self, district: DistrictRun, command: str, *args: str) -> Any:
        """``rt ... --json``, parsed."""
        out = self.rt(district, command, *args, "--json", show=False)
        try:
            return json.loads(out)
        except ValueError as exc:
            raise DemoError(f"`rt {command} --json` printed no JSON: {out[:200]!r}") from exc

    def start(self, name: str, argv: Sequence[str]) -> ServerProcess:
        """Start a long-running server in the background, its output in logs/NAME.log."""
        logs = self.work / "logs"
        logs.mkdir(exist_ok=True)
        log = logs / f"{name}.log"
        shown = " ".join(_quote(a) for a in [Path(argv[0]).name, *argv[1:]])
        console.print(
            f"[dim]$ {escape(shown)} &   # log: {log.relative_to(self.work)}[/dim]", soft_wrap=True
        )
        server = loopback.spawn(name, argv, log, env=self.env, cwd=self.work, append=False)
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        """SIGTERM every server (newest first), then SIGKILL whatever is still running."""
        for server in reversed(self.servers):
            if server.alive():
                server.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for server in reversed(self.servers):
            try:
                server.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                console.print(f"[yellow]{server.name} ignored SIGTERM; killing it[/yellow]")
                server.popen.kill()
                server.popen.wait(5)
        self.servers.clear()


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./:=@" for c in arg) else json.dumps(arg)


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float, server: ServerProcess | None = None
) -> T:
    """Poll ``probe`` until it returns a value; DemoError on ``timeout`` or if ``server`` exits."""

    def probe_while_alive() -> T | None:
        result = probe()
        if result is None and server is not None and not server.alive():
            raise DemoError(
                f"{server.name} exited (status {server.popen.returncode}) while waiting for {what}"
            )
        return result

    return loopback.wait_for(what, probe_while_alive, timeout, interval=0.2, error=DemoError)


def heading(number: int, text: str) -> None:
    console.print()
    console.rule(f"[bold cyan]{number}. {text}[/bold cyan]", align="left")


# --- the steps ----------------------------------------------------------------


@dataclass
class Registry:
    home: Path
    address: str
    enroll_address: str
    ca: Path
    signing_key: str
    auth_codes: dict[str, str]


@dataclass
class DistrictRun:
    code: str
    data_dir: Path
    config: Path
    endpoint: str
    actor: str


def step_registry(demo: Demo) -> Registry:
    """The operator creates the registry, registers both districts and serves it."""
    home = demo.work / "registry"
    address = f"127.0.0.1:{free_port()}"
    enroll_address = f"127.0.0.1:{free_port()}"
    rtr = demo.tool("rt-registry")
    demo.run([rtr, "init", demo.rel(home), "--listen", address, "--enroll-listen", enroll_address])
    info = json.loads(
        demo.run([rtr, "info", "--home", demo.rel(home), "--json"], show=False).stdout
    )
    codes = {}
    for code, name, school, school_name in (
        (PRIOR_CODE, PRIOR_NAME, PRIOR_SCHOOL, PRIOR_SCHOOL_NAME),
        (NEW_CODE, NEW_NAME, NEW_SCHOOL, NEW_SCHOOL_NAME),
    ):
        out = demo.run(
            [
                rtr, "district", "add", "--home", demo.rel(home), "--code", code, "--name", name,
                "--school", f"{school}:{school_name}", "--json",
            ],
            show=False,
        ).stdout  # fmt: skip
        codes[code] = json.loads(out)["authorization_code"]
        console.print(f"  district {code} ({name}) added; authorization code captured")
    demo.run([rtr, "district", "list", "--home", demo.rel(home)])
    server = demo.start("registry", [rtr, "serve", "--home", demo.rel(home)])

    import grpc

    ca_pem = (demo.work / info["ca_certificate"]).read_bytes()
    enroll_creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    wait_for(
        "the registry's health check",
        lambda: True if health_ok(enroll_address, enroll_creds, REGISTRY_SERVER_NAME) else None,
        READY_TIMEOUT,
        server,
    )
    console.print(f"  registry is SERVING (directory {address}, enrollment {enroll_address})")
    return Registry(
        home=home,
        address=address,
        enroll_address=enroll_address,
        ca=demo.work / info["ca_certificate"],
        signing_key=info["signing_key"],
        auth_codes=codes,
    )


def step_enroll(demo: Demo, registry: Registry, code: str, actor: str) -> DistrictRun:
    """A district's IT staff enrolls it: keys generated locally, config written."""
    data_dir = demo.work / f"district-{code}"
    endpoint = f"127.0.0.1:{free_port()}"  # the peer port goes into the directory entry
    demo.run(
        [
            demo.tool("rt"), "enroll", "--code", code,
            "--registry", registry.address, "--registry-enroll", registry.enroll_address,
            "--registry-ca", demo.rel(registry.ca), "--registry-key", registry.signing_key,
            "--endpoint", endpoint, "--data-dir", demo.rel(data_dir),
        ],
        env={"RT_AUTH_CODE": registry.auth_codes[code]},  # not on the command line
    )  # fmt: skip
    return DistrictRun(code, data_dir, data_dir / "district.toml", endpoint, actor)


def step_serve(demo: Demo, district: DistrictRun) -> None:
    """Start a district server and wait until its registrar socket answers health checks."""
    server = demo.start(
        f"district-{district.code}",
        [demo.tool("rt"), "serve", "--config", demo.rel(district.config)],
    )
    socket_path = district.data_dir / "registrar.sock"
    wait_for(
        f"district {district.code}'s health check",
        lambda: True if socket_path.exists() and health_ok(f"unix:{socket_path}") else None,
        READY_TIMEOUT,
        server,
    )
    console.print(f"  district {district.code} is SERVING (peers on {district.endpoint})")


@dataclass(frozen=True)
class SampleStudent:
    local_id: str
    ssid: str
    first: str
    middle: str
    last: str
    birth_date: str
    gender: str
    rows: int


def step_seed(demo: Demo, prior: DistrictRun, count: int, seed: int) -> list[SampleStudent]:
    """The prior district's SIS exports its tables (Aeries' layout); ``rt sis load`` loads them."""
    export = demo.work / "aeries-export"
    written = demo_sis.write_export(export, count, seed, PRIOR_SCHOOL)
    files = ", ".join(sorted(p.name for p in export.iterdir()))
    console.print(f"  the SIS's export in {demo.rel(export)}: {files}")
    demo.rt(prior, "sis load", demo.rel(export))
    students = [
        SampleStudent(
            s["local_id"], s["ssid"], s["legal_first_name"], s["legal_middle_name"],
            s["legal_last_name"], s["birth_date"].isoformat(), s["gender"], rows,
        )
        for s, rows in written
    ]  # fmt: skip
    demo.rt(prior, "student list")
    total = sum(s.rows for s in students)
    console.print(f"  {len(students)} students with {total} record rows in eight tables")
    return students


def _batch_rows(batch: Any) -> int:
    return sum(len(value) for fd, value in batch.ListFields() if fd.name != "table")


def step_new_student(demo: Demo, new: DistrictRun, student: SampleStudent) -> str:
    """The student enrolls at the new district (no records yet)."""
    middle = ["--middle", student.middle] if student.middle else []
    args = [
        "--ssid", student.ssid, "--first", student.first, *middle,
        "--last", student.last, "--birth-date", student.birth_date,
        "--gender", student.gender, "--school", NEW_SCHOOL,
    ]  # fmt: skip
    reply = demo.rt_json(new, "student add", *args)
    local_id = str(reply["local_id"])
    console.print(
        f"  enrolled {student.first} {student.last} (born {student.birth_date}) "
        f"at {NEW_SCHOOL_NAME} as [bold]{local_id}[/bold]"
    )
    return local_id


def step_search(demo: Demo, new: DistrictRun) -> str:
    """The new registrar looks up the prior school by name in the directory."""
    demo.rt(new, "schools search", PRIOR_SCHOOL_NAME)
    found = demo.rt_json(new, "schools search", PRIOR_SCHOOL_NAME)
    matches = [s for s in found if s.get("district_code") == PRIOR_CODE]
    if not matches:
        raise DemoError(f"the directory search for {PRIOR_SCHOOL_NAME!r} did not find it")
    return str(matches[0]["cds_code"])


def step_request(demo: Demo, new: DistrictRun, student_id: str, school: str) -> str:
    """The new registrar requests the records from the prior school."""
    detail = demo.rt_json(
        new, "request create", "--student", student_id,
        "--prior-school", school,
    )  # fmt: skip
    request_id = str(detail["summary"]["request_id"])
    demo.rt(new, "show", request_id)
    return request_id


def step_inbound(demo: Demo, prior: DistrictRun, request_id: str) -> None:
    """The prior registrar sees the request arrive."""

    def arrived() -> bool | None:
        listed = demo.rt_json(prior, "requests", "--direction", "in")
        return True if any(r.get("request_id") == request_id for r in listed) else None

    wait_for(f"request {request_id} to reach district {prior.code}", arrived, FLOW_TIMEOUT)
    demo.rt(prior, "requests", "--direction", "in")


def step_match_approve(demo: Demo, prior: DistrictRun, request_id: str, expected: str) -> str:
    """The prior registrar matches the request to a local student and approves it."""
    demo.rt(prior, "match", request_id)
    candidates = demo.rt_json(prior, "match", request_id)
    if not candidates:
        raise DemoError("no local student matches the request")
    local_id = str(candidates[0]["student"]["local_id"])
    if local_id != expected:
        raise DemoError(f"the best match is {local_id}, not the student who moved ({expected})")
    demo.rt(prior, "approve", request_id, "--student", local_id, "--wait")
    return local_id


def _status(demo: Demo, district: DistrictRun, request_id: str) -> str:
    detail = demo.rt_json(district, "show", request_id)
    return str(detail["summary"]["status"])


def wait_status(demo: Demo, district: DistrictRun, request_id: str, wanted: str) -> None:
    last: list[str] = []

    def reached() -> bool | None:
        status = _status(demo, district, request_id)
        last[:] = [status]
        if status in ("REJECTED", "FAILED", "EXPIRED") and status != wanted:
            raise DemoError(f"request {request_id} at district {district.code} is {status}")
        return True if status == wanted else None

    try:
        wait_for(f"request {request_id} to be {wanted} at district {district.code}",
                 reached, FLOW_TIMEOUT)  # fmt: skip
    except DemoError as exc:
        raise DemoError(f"{exc} (last status: {last[0] if last else 'unknown'})") from None


def step_review_import(demo: Demo, new: DistrictRun, request_id: str) -> dict[str, int]:
    """The new registrar checks what arrived, reviews it against local records, imports."""
    wait_status(demo, new, request_id, "DATA_RECEIVED")
    demo.rt(new, "show", request_id)
    demo.rt(new, "review", request_id)
    demo.rt(new, "import", request_id)
    detail = demo.rt_json(new, "show", request_id)
    if detail["summary"]["status"] != "IMPORTED":
        raise DemoError(f"after the import the request is {detail['summary']['status']}")
    return {str(c["table"]): int(c.get("rows", 0)) for c in detail.get("received", [])}


def step_handback(demo: Demo, new: DistrictRun, request_id: str) -> None:
    """The new district hands the imported rows back to its SIS: Aeries CSV and Ed-Fi XML."""
    out = demo.work / "handback"
    for fmt in ("aeries-csv", "ed-fi-xml"):
        demo.rt(new, "sis export", "--request", request_id, "--format", fmt, "--out",
                demo.rel(out / fmt))  # fmt: skip
    problems = demo_sis.validate_edfi(out / "ed-fi-xml")
    if problems:
        raise DemoError("an Ed-Fi document does not validate: " + "; ".join(problems))
    console.print(
        f"  Aeries CSV (for Aeries' Import Data): {out / 'aeries-csv'}\n"
        f"  Ed-Fi 5.2 XML (each document valid against the XSDs): {out / 'ed-fi-xml'}\n"
        "  (kept with --keep)"
    )


def step_complete(demo: Demo, prior: DistrictRun, request_id: str) -> None:
    """The prior district hears of the import (COMPLETE) and logs the disclosure."""
    wait_status(demo, prior, request_id, "COMPLETE")
    demo.rt(prior, "show", request_id)
    demo.rt(prior, "disclosures")


# --- the check ----------------------------------------------------------------


def _canonical(row: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, v) for k, v in row.items() if k not in BOOKKEEPING))


def _rows(db: Path, table: str, pid: str) -> list[dict[str, Any]]:
    engine = make_engine(f"sqlite:///{db}")
    try:
        t = RECORD_TABLES[table]
        with engine.connect() as conn:
            result = conn.execute(select(t).where(t.c.PID == pid).order_by(t.c.SQ))
            return [dict(r._mapping) for r in result]
    finally:
        engine.dispose()


def step_compare(
    prior: DistrictRun,
    prior_id: str,
    new: DistrictRun,
    new_id: str,
    received: dict[str, int],
) -> bool:
    """Every row A holds for the student must be at B, field for field, exactly once."""
    table = Table("table", "sent", "received", "imported", "match")
    all_ok = True
    problems: list[str] = []
    total_sent = total_imported = 0
    for code in RECORD_TABLES:
        sent = _rows(prior.data_dir / "district.db", code, prior_id)
        imported = _rows(new.data_dir / "district.db", code, new_id)
        want = Counter(_canonical(r) for r in sent)
        got = Counter(_canonical(r) for r in imported)
        ok = want == got and received.get(code, 0) == len(sent) and bool(sent)
        if want != got:
            missing = list((want - got).elements())[:1]
            extra = list((got - want).elements())[:1]
            if missing and extra:
                diff = [k for (k, a), (_, b) in zip(missing[0], extra[0], strict=True) if a != b]
                problems.append(f"{code}: a row differs in {', '.join(diff)}")
            elif missing:
                problems.append(f"{code}: {sum((want - got).values())} row(s) not imported")
            else:
                problems.append(f"{code}: {sum((got - want).values())} unexpected row(s)")
        if not sent:
            problems.append(
                f"{code}: the prior district holds no rows (the demo seeds every table)"
            )
        all_ok &= ok
        total_sent += len(sent)
        total_imported += len(imported)
        table.add_row(
            code,
            str(len(sent)),
            str(received.get(code, 0)),
            str(len(imported)),
            "[green]✓[/green]" if ok else "[red]✗[/red]",
        )
    table.add_row(
        "[bold]total[/bold]", str(total_sent), str(sum(received.values())), str(total_imported),
        "[green]✓[/green]" if all_ok else "[red]✗[/red]", end_section=True,
    )  # fmt: skip
    console.print(table)
    for problem in problems:
        console.print(f"[red]  {problem}[/red]")
    if all_ok:
        console.print(
            f"[bold green]{SUMMARY_OK}: {total_imported} of {total_sent} rows in "
            f"{len(RECORD_TABLES)} tables imported exactly.[/bold green]"
        )
    return all_ok


# --- main ---------------------------------------------------------------------


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
            from scripts.demo_console import serve_consoles

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
