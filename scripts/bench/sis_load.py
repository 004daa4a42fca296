"""The ``sis_load`` benchmark: ``rt sis load`` of an Aeries export against a plain bulk import.

An Aeries-layout export (STU.csv and the eight record tables, ``rows`` record
rows in all, sample data from ``scripts.samples``) is loaded into a freshly
migrated SQLite district database by ``rt sis load``'s code
(``rt_server.sis.load.load_export``, in a child process so its peak RSS is
its own), and the same CSV files are imported into the same tables of another
fresh copy by the ``sqlite3`` CLI's ``.import`` (no validation, no key
matching: the floor). Where the ``sqlite3`` CLI is absent the floor is Python's
``sqlite3`` ``executemany`` of ``csv.reader`` rows, and the result says so.
A reload of the same export (every row unchanged) is timed too.

    python -m scripts.bench --only sis_load [--sis-rows N]
"""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TARGET_RATIO = 2.0
TARGET_RSS_MB = 300


def write_export(folder: Path, rows: int, seed: int = 7) -> int:
    """An Aeries-layout export of about ``rows`` record rows (whole students); returns the rows."""
    import random

    from rt_server.core.tables import ALL_TABLES, TABLES
    from rt_server.sis.export_aeries import STU_COLUMNS, field
    from scripts import samples

    rng = random.Random(seed)
    folder.mkdir(parents=True)
    outs = {code: (folder / f"{code}.csv").open("w", encoding="utf-8", newline="") for code in
            ("STU", *ALL_TABLES)}  # fmt: skip
    try:
        outs["STU"].write(",".join(STU_COLUMNS) + "\r\n")
        names = {code: ("SQ", *TABLES[code].data_columns, "SRC") for code in ALL_TABLES}
        for code in ALL_TABLES:
            outs[code].write(",".join(("PID", *names[code])) + "\r\n")
        written, i = 0, 0
        while written < rows:
            i += 1
            s = samples.sample_student(rng, i)
            pid = s["local_id"]
            stu = (
                pid, "19647331932334", s["legal_last_name"], s["legal_first_name"],
                s["legal_middle_name"], s["birth_date"], s["gender"], None, s["ssid"],
            )  # fmt: skip
            outs["STU"].write(",".join(field(v) for v in stu) + "\r\n")
            for code, table_rows in samples.sample_records(rng, birth_date=s["birth_date"]).items():
                out = outs[code]
                for r in table_rows:
                    out.write(pid_field(pid) + "," + ",".join(field(r[n]) for n in names[code]))
                    out.write("\r\n")
                written += len(table_rows)
        return written
    finally:
        for out in outs.values():
            out.close()


def pid_field(pid: str) -> str:
    return '"' + pid + '"'


def _fresh_database(path: Path) -> None:
    from rt_server.store import make_engine, migrations

    engine = make_engine(f"sqlite:///{path}")
    try:
        migrations.HISTORY.upgrade(engine)
    finally:
        engine.dispose()


def _child_load(db: Path, folder: Path) -> dict[str, Any]:
    """``load_export`` in a child process: (seconds, peak RSS MB, rows)."""
    code = (
        "import json,sys,time,resource;from pathlib import Path;"
        "from rt_server.store import make_engine;from rt_server.sis.load import load_export;"
        "u=lambda:sum(resource.getrusage(resource.RUSAGE_SELF)[:2]);"
        "e=make_engine('sqlite:///'+sys.argv[1]);t=time.monotonic();c=u();"
        "r=load_export(e,Path(sys.argv[2]),actor='bench');s=time.monotonic()-t;"
        "print(json.dumps({'seconds':s,'rows':r.rows,'cpu_s':u()-c,"
        "'rss_mb':resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024}))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", code, str(db), str(folder)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"rt sis load failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _floor(db: Path, folder: Path) -> tuple[float, float, str]:
    """The same CSVs into the same tables with no checks: (seconds, CPU seconds, how)."""
    files = sorted(folder.glob("*.csv"))
    cli = shutil.which("sqlite3")
    if cli is not None:
        script = ".mode csv\n" + "".join(f".import --skip 1 '{f}' {f.stem}\n" for f in files)
        t = time.monotonic()
        before = sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])
        subprocess.run([cli, str(db)], input=script, text=True, check=True, capture_output=True)
        cpu = sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2]) - before
        return time.monotonic() - t, cpu, "sqlite3 CLI .import"
    t = time.monotonic()
    before = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    conn = sqlite3.connect(db)
    with conn:
        for f in files:
            with f.open(encoding="utf-8", newline="") as src:
                reader = csv.reader(src)
                header = next(reader)
                if f.stem == "STU":
                    conn.execute(f'CREATE TABLE "STU" ({", ".join(header)})')
                marks = ",".join("?" * len(header))
                conn.executemany(f'INSERT INTO "{f.stem}" VALUES ({marks})', reader)
    conn.close()
    cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - before
    return time.monotonic() - t, cpu, "python sqlite3 executemany (no sqlite3 CLI here)"


def sis_load(work: Path, rows: int) -> dict[str, Any]:
    """Run the benchmark in ``work``; the result object of the ``sis_load`` scenario."""
    folder = work / "sis-export"
    written = write_export(folder, rows)
    template = work / "sis-empty.db"
    _fresh_database(template)
    ours, floor_db = work / "sis-ours.db", work / "sis-floor.db"
    shutil.copy(template, ours)
    shutil.copy(template, floor_db)
    first = _child_load(ours, folder)
    reload = _child_load(ours, folder)
    floor_s, floor_cpu, floor_how = _floor(floor_db, folder)
    ratio = first["seconds"] / floor_s if floor_s > 0 else float("inf")
    # CPU seconds too: on a shared machine wall time says as much about the neighbours.
    cpu_ratio = first["cpu_s"] / floor_cpu if floor_cpu > 0 else float("inf")
    return {
        "scenario": "sis_load",
        "database": "sqlite",
        "rows": written,
        "load_s": round(first["seconds"], 3),
        "reload_s": round(reload["seconds"], 3),
        "rows_per_s": round(written / first["seconds"]),
        "floor_s": round(floor_s, 3),
        "floor": floor_how,
        "ratio_vs_sqlite3_import": round(ratio, 2),
        "load_cpu_s": round(first["cpu_s"], 3),
        "floor_cpu_s": round(floor_cpu, 3),
        "cpu_ratio_vs_sqlite3_import": round(cpu_ratio, 2),
        "peak_rss_mb": round(max(first["rss_mb"], reload["rss_mb"]), 1),
        "targets": {"ratio_vs_sqlite3_import": TARGET_RATIO, "peak_rss_mb": TARGET_RSS_MB},
    }


if __name__ == "__main__":
    import tempfile

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory(prefix="rtb-sis-") as tmp:
        print(json.dumps(sis_load(Path(tmp), n), indent=2))
