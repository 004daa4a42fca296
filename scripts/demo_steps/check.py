"""The demo's check, step 12 of ``scripts/demo.py``: every row the prior district holds
for the student must be at the new district, field for field, exactly once (PID, SQ and
SRC aside), read from both districts' SQLite databases.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from rich.table import Table
from sqlalchemy import select

from rt_server.store.engine import make_engine
from rt_server.store.schema import RECORD_TABLES
from scripts.demo_steps.commands import console
from scripts.demo_steps.world import DistrictRun

BOOKKEEPING = {"PID", "SQ", "SRC"}
SUMMARY_OK = "DEMO OK"


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
