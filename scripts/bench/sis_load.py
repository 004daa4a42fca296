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

With ``RT_TEST_POSTGRES_URL`` set (``python scripts/test_postgres.py -- ...``
sets it), the same export is loaded into a fresh PostgreSQL schema too, against
``psql``'s ``\\copy`` (COPY) into the same tables (foreign keys not checked).
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


def _child_load(db: Path | str, folder: Path) -> dict[str, Any]:
    """``load_export`` in a child process (``db``: a SQLite file or a database URL).

    Its peak RSS is the kernel's ``VmHWM`` of the child's own memory: not
    ``getrusage``'s ``ru_maxrss``, which Linux carries over from the parent
    through fork and exec (the benchmark's own memory would count).
    """
    code = (
        "import json,sys,time,resource;from pathlib import Path;"
        "from rt_server.store import make_engine;from rt_server.sis.load import load_export;"
        "u=lambda:sum(resource.getrusage(resource.RUSAGE_SELF)[:2]);"
        "a=sys.argv[1];e=make_engine(a if '://' in a else 'sqlite:///'+a);"
        "t=time.monotonic();c=u();"
        "r=load_export(e,Path(sys.argv[2]),actor='bench');s=time.monotonic()-t;"
        "print(json.dumps({'seconds':s,'rows':r.rows,'cpu_s':u()-c,"
        "'rss_mb':[int(l.split()[1]) for l in open('/proc/self/status')"
        " if l.startswith('VmHWM')][0]/1024}))"
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


def _postgres_schema(admin_url: str, name: str) -> str:
    """A fresh schema on ``admin_url``'s server, migrated; the URL that uses it."""
    import uuid

    import sqlalchemy as sa

    from rt_server.store import make_engine, migrations

    schema = f"rtb_{uuid.uuid4().hex[:10]}_{name}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    admin.dispose()
    url = sa.engine.make_url(admin_url).update_query_dict({"options": f"-csearch_path={schema}"})
    text = url.render_as_string(hide_password=False)
    engine = make_engine(text)
    try:
        migrations.HISTORY.upgrade(engine)
    finally:
        engine.dispose()
    return text


def _psql() -> str | None:
    found = shutil.which("psql")
    if found is None:
        for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"), reverse=True):
            return str(candidate)
    return found


def sis_load_postgres(work: Path, admin_url: str) -> dict[str, Any]:
    """The same export into PostgreSQL: ``rt sis load`` against ``psql``'s ``\\copy`` (COPY)."""
    import sqlalchemy as sa

    folder = work / "sis-export"
    rows = sum(1 for f in folder.glob("*.csv") if f.stem != "STU" for _ in f.open("rb")) - 8
    psql = _psql()
    if psql is None:
        return {"scenario": "sis_load_postgres", "skipped": "no psql here"}
    ours_url = _postgres_schema(admin_url, "ours")
    first = _child_load(ours_url, folder)
    floor_url = _postgres_schema(admin_url, "floor")
    libpq = sa.engine.make_url(floor_url).set(drivername="postgresql")
    script = "SET session_replication_role = replica;\n"  # no FK checks: the floor
    script += 'CREATE TABLE "STU" ("ID" text, "SC" text, "LN" text, "FN" text, "MN" text, '
    script += '"BD" text, "SX" text, "GR" text, "CID" text);\n'
    for f in sorted(folder.glob("*.csv")):
        script += f"\\copy \"{f.stem}\" FROM '{f}' WITH (FORMAT csv, HEADER true)\n"
    t = time.monotonic()
    subprocess.run(
        [psql, "-q", "-v", "ON_ERROR_STOP=1", "-1", libpq.render_as_string(hide_password=False)],
        input=script, text=True, check=True, capture_output=True,
    )  # fmt: skip
    floor_s = time.monotonic() - t
    return {
        "scenario": "sis_load_postgres",
        "rows": rows,
        "load_s": round(first["seconds"], 3),
        "load_cpu_s": round(first["cpu_s"], 3),
        "floor": "psql \\copy (COPY FROM STDIN)",
        "floor_s": round(floor_s, 3),
        "ratio_vs_copy": round(first["seconds"] / floor_s, 2),
        "peak_rss_mb": round(first["rss_mb"], 1),
    }


if __name__ == "__main__":
    import tempfile

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory(prefix="rtb-sis-") as tmp:
        print(json.dumps(sis_load(Path(tmp), n), indent=2))
        # PostgreSQL too when a server is given (scripts/test_postgres.py sets this).
        if os.environ.get("RT_TEST_POSTGRES_URL"):
            result = sis_load_postgres(Path(tmp), os.environ["RT_TEST_POSTGRES_URL"])
            print(json.dumps(result, indent=2))
