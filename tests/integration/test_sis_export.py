"""``rt sis export``: imported rows handed back as Aeries CSV and Ed-Fi 5.2 XML.

The CSVs round-trip exactly; the XML documents validate against the XSDs.

Real transfers between two real districts; the export reads district B's
database. The CSVs are loaded back into a fresh database's record tables by
natural key and every value compared; every Ed-Fi document validates against
the official XSDs (the exporter validates, and the test validates again).
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, select

from rt_server.core.tables import ALL_TABLES, TABLES, ColumnKind
from rt_server.sis.cli_export import add_export_command, run_export
from rt_server.sis.export_aeries import STU_COLUMNS, record_columns
from rt_server.store.schema import METADATA, RECORD_TABLES, STUDENTS
from tests.harness.flow import add_student, approve, create_request, import_, small_records
from tests.harness.world import Pair

lxml = pytest.importorskip("lxml.etree")

STUDENTS_N = int(__import__("os").environ.get("SIS_N", "50"))


def _split(line: str) -> list[tuple[str, bool]]:
    """One CSV line's fields, each with whether it was quoted (RFC 4180)."""
    fields, i = [], 0
    while True:
        if i < len(line) and line[i] == '"':
            j, text = i + 1, []
            while True:
                k = line.index('"', j)
                text.append(line[j:k])
                if line[k + 1 : k + 2] == '"':
                    text.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            fields.append(("".join(text), True))
        else:
            k = line.find(",", i)
            k = len(line) if k < 0 else k
            fields.append((line[i:k], False))
            i = k
        if i >= len(line):
            return fields
        i += 1  # the comma


def _value(kind: ColumnKind, text: str, quoted: bool) -> Any:
    if quoted:
        return text
    if text == "":
        return None
    if kind is ColumnKind.INT:
        return int(text)
    if kind is ColumnKind.BOOL:
        return {"Y": True, "N": False}[text]
    if kind is ColumnKind.DATE:
        return dt.date.fromisoformat(text)
    if kind is ColumnKind.DECIMAL:
        return decimal.Decimal(text)
    raise AssertionError(f"bare text field {text!r}")


def _read(path: Path) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    lines = path.read_bytes().decode("utf-8").split("\r\n")
    assert lines[-1] == ""
    return lines[0].split(","), [_split(line) for line in lines[1:-1]]


def transfer_students(p: Pair, n: int) -> list[str]:
    request_ids = []
    for i in range(n):
        ssid = str(2_000_000_000 + i)
        first, last = f"Ana{i}", "Nuñez"
        add_student(p.a, f"A{i}", small_records(i, 3), ssid=ssid, first=first, last=last)
        add_student(p.b, f"B{i}", ssid=ssid, first=first, last=last)
        rid = create_request(p, f"B{i}")
        approve(p, rid, student=f"A{i}")
        import_(p, rid)
        request_ids.append(rid)
    return request_ids


@pytest.mark.slow
def test_export_of_transferred_students_round_trips_and_validates(
    districts: Pair, tmp_path: Path
) -> None:
    p = districts
    request_ids = transfer_students(p, STUDENTS_N)
    engine = p.b.engine
    since = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)

    # --- Ed-Fi 5.2: every document validates against the official XSDs --------------
    xml_dir = tmp_path / "edfi"
    counts = run_export(engine, fmt="ed-fi-xml", out=xml_dir, since=since)
    assert counts["Student"] == STUDENTS_N
    schema_dir = Path(__file__).parents[2] / "rt_server/sis/schemas/ed-fi-5.2"
    for stem in ("Student", "StudentTranscript", "StudentAssessment", "StudentEnrollment",
                 "StudentHealth"):  # fmt: skip
        schema = lxml.XMLSchema(lxml.parse(str(schema_dir / f"Interchange-{stem}.xsd")))
        doc = lxml.parse(str(xml_dir / f"{stem}.xml"))
        assert schema.validate(doc), (stem, schema.error_log)
    text = (xml_dir / "StudentHealth.xml").read_text()
    assert "uri://ed-fi.org/ImmunizationTypeDescriptor#" in text

    # --- Aeries CSV: back into a fresh database by natural key, every value equal ----
    csv_dir = tmp_path / "aeries"
    counts = run_export(engine, fmt="aeries-csv", out=csv_dir, request=request_ids[-1][:8])
    assert counts["STU"] == 1
    counts = run_export(engine, fmt="aeries-csv", out=tmp_path / "all", since=since)
    assert counts["STU"] == STUDENTS_N
    fresh = create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    METADATA.create_all(fresh)
    header, rows = _read(tmp_path / "all" / "STU.csv")
    assert tuple(header) == STU_COLUMNS
    with fresh.begin() as conn:
        for fields in rows:
            v = dict(zip(header, fields, strict=True))
            conn.execute(insert(STUDENTS).values(
                local_id=v["ID"][0], school=v["SC"][0] or None, legal_last_name=v["LN"][0],
                legal_first_name=v["FN"][0], legal_middle_name=v["MN"][0] if v["MN"][1] else None,
                birth_date=dt.date.fromisoformat(v["BD"][0]),
                gender=v["SX"][0] if v["SX"][1] else None,
                ssid=v["CID"][0] if v["CID"][1] else None,
                last_name_key="x", first_name_key="x", created_at=dt.datetime.now(dt.UTC),
            ))  # fmt: skip
        for code in ALL_TABLES:
            spec = TABLES[code]
            header, rows = _read(tmp_path / "all" / f"{code}.csv")
            assert tuple(header) == record_columns(code)
            next_sq: dict[str, int] = {}
            for fields in rows:
                row = {
                    name: text if name == "PID" else _value(spec.by_name[name].kind, text, quoted)
                    for name, (text, quoted) in zip(header, fields, strict=True)
                }
                next_sq[row["PID"]] = next_sq.get(row["PID"], 0) + 1
                conn.execute(insert(RECORD_TABLES[code]).values(SQ=next_sq[row["PID"]], **row))

    def by_key(bind: Any, code: str) -> dict[tuple[Any, ...], dict[str, Any]]:
        spec, table = TABLES[code], RECORD_TABLES[code]
        with bind.connect() as conn:
            return {
                (r["PID"], *(r[k] for k in spec.natural_key)): {
                    c: r[c] for c in ("PID", *spec.data_columns, "SRC")
                }
                for r in conn.execute(select(table)).mappings()
            }

    compared = 0
    for code in ALL_TABLES:
        ours, loaded = by_key(engine, code), by_key(fresh, code)
        assert loaded == ours, code
        assert all(row["SRC"] == "RT" for row in loaded.values())
        compared += len(loaded)
    assert compared >= STUDENTS_N * 8 * 3 - 100
    student_columns = (
        "local_id",
        "ssid",
        "legal_first_name",
        "legal_middle_name",
        "legal_last_name",
        "birth_date",
        "gender",
        "school",
    )
    s_cols = [STUDENTS.c[c] for c in student_columns]
    with engine.connect() as a, fresh.connect() as b:
        ours = {r[0]: tuple(r) for r in a.execute(select(*s_cols)) if r[0].startswith("B")}
        theirs = {r[0]: tuple(r) for r in b.execute(select(*s_cols))}
    assert theirs == ours
    fresh.dispose()

    # Never overwrites: a second export into the same folder is refused, nothing changes.
    before = (tmp_path / "all" / "HIS.csv").read_bytes()
    with pytest.raises(Exception, match="already holds"):
        run_export(engine, fmt="aeries-csv", out=tmp_path / "all", since=since)
    assert (tmp_path / "all" / "HIS.csv").read_bytes() == before


def test_export_command_parses_and_refuses_unknown_request(districts: Pair, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true")
    add_export_command(parser.add_subparsers(dest="cmd"), common)
    args = parser.parse_args(
        ["export", "--request", "0123", "--format", "ed-fi-xml", "--out", str(tmp_path / "x")]
    )
    assert args.func.__name__ == "export_command"
    with pytest.raises(Exception, match="no request"):
        run_export(districts.b.engine, fmt="ed-fi-xml", out=tmp_path / "x", request="0123")
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "--format", "csv", "--out", "x", "--request", "1"])
