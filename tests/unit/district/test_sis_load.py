"""``rt sis load``: an Aeries table export (real CSV files) into a real database.

Loads, reloads with no change, reloads a changed export, refuses each kind of
bad file with its line and writes nothing, dry-runs; and the ``rt`` command.
"""

from __future__ import annotations

import csv
import importlib
import json
import random
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from rt_client.config import DistrictConfig, write_config
from rt_server.sis.load import MAX_PROBLEMS, ExportRefused, LoadReport, load_export
from rt_server.store.schema import RECORD_TABLES, STUDENTS
from tests.unit.district.conftest import NOW, REQUESTING_SCHOOL

Snapshot = dict[str, list[tuple[Any, ...]]]
REPO = Path(__file__).resolve().parents[3]

STU_HEADER = ["ID", "SC", "LN", "FN", "MN", "BD", "SX", "GR", "CID"]
HEADERS = {
    "TST": ["PID", "SQ", "ID", "PT", "TA", "TD", "GR", "TY", "SS", "PL", "PC", "SRC"],
    "CST": ["PID", "ID", "SD", "TA", "TD", "SC", "PL"],
    "CTS": ["PID", "NM", "DT", "TTL", "ST1", "SC1", "ST2", "SC2"],
    "HIS": ["PID", "SQ", "YR", "GR", "TE", "CN", "CO", "MK", "CR", "CC", "ST", "SRC"],
    "ENR": ["PID", "SC", "YR", "GR", "ED", "LD", "ER"],
    "IMM": ["PID", "VC", "DN", "DT"],
    "LAC": ["PID", "L1", "L2", "L3", "AC", "AD", "LV"],
    "PFT": ["PID", "TD", "CP", "SC", "HF", "GR"],
}


def generate_export(folder: Path, students: int, seed: int = 14) -> dict[str, int]:
    """An Aeries-layout export of ``students`` students; returns the rows per file."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[list[str]]] = {"STU": [], **{code: [] for code in HEADERS}}
    for n in range(1, students + 1):
        pid = f"S{n:06d}"
        year = 2008 + n % 6
        rows["STU"].append(
            [
                pid,
                REQUESTING_SCHOOL,
                f"Last{n}",
                f"First{n}",
                "",
                f"{year}-0{1 + n % 9}-1{n % 10}",
                "MF"[n % 2],
                str(9 + n % 4),
                f"{1000000000 + n}",
            ]
        )
        for i, part in enumerate((0, 1)):
            rows["TST"].append(
                [
                    pid,
                    str(i + 1),
                    "CAASPP-ELA",
                    str(part),
                    "2023-24 SPR",
                    "2024-04-15",
                    "110",
                    "SBAC",
                    str(2400 + rng.randrange(200)),
                    "3",
                    str(rng.randrange(100)),
                    "AER",
                ]
            )
        rows["CST"].append([pid, "CAASPP-MA", "6.RP.1", "2023-24 SPR", "2024-04-16", "2.50", "M"])
        rows["CTS"].append([pid, "SAT", "2024-03-09", "1310", "Math", "690", "EBRW", "620"])
        for t, (term, course) in enumerate(
            (("F", "ENG1"), ("S", "ENG1"), ("F", "ALG1"), ("S", "ALG1"))
        ):
            rows["HIS"].append(
                [
                    pid,
                    str(t + 1),
                    "2023-2024",
                    "9",
                    term,
                    course,
                    f"Course {course}",
                    rng.choice("ABCDF"),
                    "5.00",
                    "5.00",
                    "01611920130229",
                    "AER",
                ]
            )
        rows["ENR"].append([pid, "01611920130229", "2023-2024", "9", "2023-08-15", "", ""])
        rows["IMM"].append([pid, "DTaP", "1", "2010-06-01"])
        rows["IMM"].append([pid, "DTaP", "2", "2010-08-01"])
        rows["LAC"].append([pid, "00", "00", "00", "ELPAC", "2023-10-02", "4"])
        rows["PFT"].append([pid, "2024-02-20", "aerobic capacity", "41.50", "Y", "9"])
    headers = {"STU": STU_HEADER, **HEADERS}
    for code, table_rows in rows.items():
        write_csv(folder / f"{code}.csv", headers[code], table_rows)
    return {code: len(table_rows) for code, table_rows in rows.items()}


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def load(engine: Engine, folder: Path, **kw: Any) -> LoadReport:
    return load_export(engine, folder, actor="it.admin", now=NOW, **kw)


def counts(report: LoadReport) -> dict[str, tuple[int, int, int]]:
    return {c: (n.new, n.changed, n.unchanged) for c, n in report.tables.items()}


def data_snapshot(take: Callable[[], Snapshot]) -> Snapshot:
    """Every table but the audit log (a load writes its audit row)."""
    return {name: rows for name, rows in take().items() if name != "audit_log"}


def stored_rows(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        found = {"STU": conn.execute(select(func.count()).select_from(STUDENTS)).scalar_one()}
        for code, table in RECORD_TABLES.items():
            found[code] = conn.execute(select(func.count()).select_from(table)).scalar_one()
    return found


@pytest.fixture
def export(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    folder = tmp_path / "export"
    return folder, generate_export(folder, 1000)


@pytest.fixture
def small(tmp_path: Path) -> Path:
    folder = tmp_path / "small"
    generate_export(folder, 20)
    return folder


def test_a_generated_1000_student_export_loads(
    engine: Engine, export: tuple[Path, dict[str, int]]
) -> None:
    folder, rows = export
    report = load(engine, folder)
    assert counts(report) == {code: (n, 0, 0) for code, n in rows.items()}
    assert report.rows == sum(rows.values())
    assert stored_rows(engine) == rows
    with engine.connect() as conn:
        his = (
            conn.execute(
                select(RECORD_TABLES["HIS"]).where(RECORD_TABLES["HIS"].c.PID == "S000007")
            )
            .mappings()
            .all()
        )
        student = conn.execute(select(STUDENTS).where(STUDENTS.c.local_id == "S000007")).one()
    assert [r["SQ"] for r in his] == [1, 2, 3, 4]
    assert {r["YR"] for r in his} == {"2023-2024"} and his[0]["SRC"] == "AER"
    assert student.ssid == "1000000007" and student.legal_middle_name is None


def test_reloading_the_same_export_changes_nothing(
    engine: Engine, export: tuple[Path, dict[str, int]], snapshot: Callable[[], Snapshot]
) -> None:
    folder, rows = export
    load(engine, folder)
    before = data_snapshot(snapshot)
    report = load(engine, folder)
    assert counts(report) == {code: (0, 0, n) for code, n in rows.items()}
    assert data_snapshot(snapshot) == before


def test_a_changed_row_reload_updates_exactly_those_rows(
    engine: Engine, export: tuple[Path, dict[str, int]], snapshot: Callable[[], Snapshot]
) -> None:
    folder, rows = export
    load(engine, folder)
    before = data_snapshot(snapshot)
    his = read_csv(folder / "HIS.csv")
    header, body = his[0], his[1:]
    mk = header.index("MK")
    for i in (10, 500, 3999):
        body[i][mk] = "A+" if body[i][mk] != "A+" else "B"
    write_csv(folder / "HIS.csv", header, body)
    stu = read_csv(folder / "STU.csv")
    stu[42][STU_HEADER.index("FN")] = "Renamed"
    write_csv(folder / "STU.csv", stu[0], stu[1:])
    imm = read_csv(folder / "IMM.csv")
    write_csv(folder / "IMM.csv", imm[0], [*imm[1:], ["S000003", "MMR", "1", "2011-01-01"]])

    report = load(engine, folder)
    assert report.tables["HIS"].changed == 3 and report.tables["HIS"].new == 0
    assert report.tables["STU"].changed == 1
    assert counts(report)["IMM"] == (1, 0, rows["IMM"])
    assert all(
        counts(report)[c] == (0, 0, rows[c]) for c in ("TST", "CST", "CTS", "ENR", "LAC", "PFT")
    )
    after = data_snapshot(snapshot)
    for name in after:
        gone = set(before[name]) - set(after[name])
        added = set(after[name]) - set(before[name])
        if name == "HIS":
            assert len(gone) == len(added) == 3
            # Updated in place: the same students and SQ numbers.
            assert {r[:2] for r in gone} == {r[:2] for r in added}
        elif name == "students":
            assert len(gone) == len(added) == 1
        elif name == "IMM":
            assert not gone and [r[:2] for r in added] == [("S000003", 3)]
        else:
            assert not gone and not added, name


def _bad_value(folder: Path) -> str:
    his = read_csv(folder / "HIS.csv")
    his[4][his[0].index("YR")] = "2O24"  # line 5 of the file
    write_csv(folder / "HIS.csv", his[0], his[1:])
    return 'HIS.csv line 5, column YR: "2O24" is not a year'


def _wrong_header(folder: Path) -> str:
    his = read_csv(folder / "HIS.csv")
    his[0][his[0].index("MK")] = "MARK"
    write_csv(folder / "HIS.csv", his[0], his[1:])
    return 'HIS.csv line 1: header: "MARK" is not a column of HIS'


def _missing_key_column(folder: Path) -> str:
    enr = read_csv(folder / "ENR.csv")
    at = enr[0].index("ED")
    write_csv(
        folder / "ENR.csv",
        [c for i, c in enumerate(enr[0]) if i != at],
        [[c for i, c in enumerate(r) if i != at] for r in enr[1:]],
    )
    return "ENR.csv line 1: header: missing required column(s) ED"


def _unknown_table(folder: Path) -> str:
    (folder / "ATT.csv").write_text("PID,DT\nS000001,2024-01-01\n", encoding="utf-8")
    return "ATT.csv: not a table this loads"


def _duplicate_key(folder: Path) -> str:
    tst = read_csv(folder / "TST.csv")
    copy = list(tst[3])
    copy[tst[0].index("SS")] = "2500"  # same student, test, part, administration
    write_csv(folder / "TST.csv", tst[0], [*tst[1:7], copy, *tst[7:]])
    return "TST.csv line 8: the same student and ID, PT, TA (the table's key) as line 4"


def _wrong_encoding(folder: Path) -> str:
    path = folder / "HIS.csv"
    lines = path.read_bytes().split(b"\n")
    lines[6] = lines[6].replace(b"Course", "Cóurse".encode("latin-1"))
    path.write_bytes(b"\n".join(lines))
    return "HIS.csv line 7: not UTF-8 text"


def _truncated(folder: Path) -> str:
    path = folder / "PFT.csv"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 9])
    return "PFT.csv line 21: the file ends in the middle of a line"


def _huge_field(folder: Path) -> str:
    path = folder / "HIS.csv"
    his = read_csv(path)
    with path.open("a", encoding="utf-8") as out:
        out.write(
            ",".join(his[1][:4])
            + ',"'
            + "x" * (80 * 1024 * 1024)
            + '",A,5.00,5.00,01611920130229,AER\n'
        )
    return f"HIS.csv line {len(his) + 1}: the line is longer than 1024 KiB"


def _huge_quoted_field(folder: Path) -> str:
    path = folder / "HIS.csv"
    his = read_csv(path)
    with path.open("a", encoding="utf-8") as out:
        field = "\n".join(["y" * 1000] * 100)  # 100 KB over 100 short lines
        out.write(",".join(his[1][:4]) + ',"' + field + '",A,5.00,5.00,01611920130229,AER\n')
    return "(csv.field_size_limit)"


def _short_row(folder: Path) -> str:
    with (folder / "IMM.csv").open("a", encoding="utf-8") as out:
        out.write("S000001,MMR\n")
    return "IMM.csv line 42: 2 fields where the header has 4"


def _unknown_student(folder: Path) -> str:
    with (folder / "IMM.csv").open("a", encoding="utf-8") as out:
        out.write("S999999,MMR,1,2011-01-01\n")
    return 'IMM.csv line 42, column PID: "S999999": no student with this ID'


def _bad_student(folder: Path) -> str:
    stu = read_csv(folder / "STU.csv")
    stu[3][STU_HEADER.index("BD")] = "2010-02-30"
    write_csv(folder / "STU.csv", stu[0], stu[1:])
    return 'STU.csv line 4, column BD: "2010-02-30": birth date: not a real calendar date'


def _too_long(folder: Path) -> str:
    his = read_csv(folder / "HIS.csv")
    his[2][his[0].index("CN")] = "C" * 13
    write_csv(folder / "HIS.csv", his[0], his[1:])
    return 'HIS.csv line 3, column CN: "CCCCCCCCCCCCC" is longer than 12 characters'


def _ssid_twice(folder: Path) -> str:
    stu = read_csv(folder / "STU.csv")
    stu[9][STU_HEADER.index("CID")] = stu[2][STU_HEADER.index("CID")]
    write_csv(folder / "STU.csv", stu[0], stu[1:])
    return "STU.csv line 10, column CID: the same SSID as line 3"


def _ssid_of_another(folder: Path) -> str:
    stu = read_csv(folder / "STU.csv")
    stu[1][STU_HEADER.index("ID")] = "NEW0001"  # a new student with S000001's SSID
    write_csv(folder / "STU.csv", stu[0], stu[1:])
    return 'STU.csv line 2, column CID: "1000000001": the SSID is already student S000001\'s'


BAD_FILES = {
    "ssid twice": _ssid_twice,
    "ssid of another student": _ssid_of_another,
    "bad value": _bad_value,
    "wrong header": _wrong_header,
    "missing key column": _missing_key_column,
    "unknown table": _unknown_table,
    "duplicate natural key": _duplicate_key,
    "wrong encoding": _wrong_encoding,
    "truncated last line": _truncated,
    "80 MB single field": _huge_field,
    "huge quoted field": _huge_quoted_field,
    "short row": _short_row,
    "unknown student": _unknown_student,
    "bad student": _bad_student,
    "too long": _too_long,
}


@pytest.mark.parametrize("spoil", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_file_is_refused_with_its_line_and_nothing_written(
    engine: Engine,
    small: Path,
    snapshot: Callable[[], Snapshot],
    spoil: Callable[[Path], str],
) -> None:
    load(engine, small)
    # Also a good change in the same export: it must not be written either.
    stu = read_csv(small / "STU.csv")
    stu[1][STU_HEADER.index("FN")] = "Changed"
    write_csv(small / "STU.csv", stu[0], stu[1:])
    before = snapshot()
    expected = spoil(small)
    with pytest.raises(ExportRefused) as refused:
        load(engine, small)
    assert snapshot() == before
    assert any(expected in str(p) for p in refused.value.problems), refused.value.problems
    assert expected.partition(":")[0] in str(refused.value)
    assert refused.value.count == len(refused.value.problems)


def test_the_first_100_problems_are_named_and_all_counted(engine: Engine, small: Path) -> None:
    his = read_csv(small / "HIS.csv")
    for row in his[1:]:
        row[his[0].index("CR")] = "lots"
        row[his[0].index("CC")] = "1,5"
    write_csv(small / "HIS.csv", his[0], his[1:])
    cts = read_csv(small / "CTS.csv")
    for row in cts[1:]:
        row[cts[0].index("DT")] = "03/32/2024"
    write_csv(small / "CTS.csv", cts[0], cts[1:])
    with pytest.raises(ExportRefused) as refused:
        load(engine, small)
    assert refused.value.count == 20 + 80 * 2  # every bad value of every row
    assert len(refused.value.problems) == MAX_PROBLEMS
    assert str(refused.value.problems[0]).startswith('CTS.csv line 2, column DT: "03/32/2024"')
    assert "and 80 more" in str(refused.value)
    assert stored_rows(engine) == dict.fromkeys(stored_rows(engine), 0)


def test_dry_run_counts_without_writing(
    engine: Engine, small: Path, snapshot: Callable[[], Snapshot]
) -> None:
    before = snapshot()
    dry = load(engine, small, dry_run=True)
    assert snapshot() == before
    assert counts(dry)["HIS"] == (80, 0, 0) and counts(dry)["STU"] == (20, 0, 0)
    assert dry.dry_run and dry.as_json()["tables"]["IMM"] == {
        "new": 40,
        "changed": 0,
        "unchanged": 0,
    }
    assert counts(load(engine, small)) == counts(dry)
    his = read_csv(small / "HIS.csv")
    his[1][his[0].index("MK")] = "Z"
    write_csv(small / "HIS.csv", his[0], his[1:])
    loaded = snapshot()
    assert counts(load(engine, small, dry_run=True))["HIS"] == (0, 1, 79)
    assert snapshot() == loaded


def test_us_dates_and_yes_no_flags_are_read(engine: Engine, small: Path) -> None:
    pft = read_csv(small / "PFT.csv")
    pft[1][pft[0].index("TD")] = "2/20/2024"  # as Excel writes it: the same row
    pft[1][pft[0].index("HF")] = "true"
    write_csv(small / "PFT.csv", pft[0], pft[1:])
    assert counts(load(engine, small))["PFT"] == (20, 0, 0)
    assert counts(load(engine, small))["PFT"] == (0, 0, 20)


def test_a_quoted_empty_text_is_empty_text_and_an_empty_field_no_value(
    engine: Engine, small: Path
) -> None:
    """As ``rt sis export`` writes them: ``""`` is an empty text, nothing at all is NULL."""
    lines = (small / "HIS.csv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    assert "MK" in header and "CO" in header
    first = next(csv.reader([lines[1]]))
    first[header.index("MK")] = "\x01"  # placeholders for the hand-written fields
    first[header.index("CO")] = "\x02"
    line = ",".join(f'"{f}"' if f and f not in ("\x01", "\x02") else f for f in first)
    lines[1] = line.replace("\x01", '""').replace("\x02", "")
    (small / "HIS.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    load(engine, small)
    pid = first[header.index("PID")]
    with engine.connect() as conn:
        his = RECORD_TABLES["HIS"]
        stored = conn.execute(
            select(his.c.MK, his.c.CO).where(his.c.PID == pid).order_by(his.c.SQ)
        ).first()
    assert stored is not None and tuple(stored) == ("", None)


# --- the rt command -----------------------------------------------------------------


class _EntryPoint:
    def __init__(self, name: str, target: str) -> None:
        self.name, self._target = name, target

    def load(self) -> object:
        module, _, attr = self._target.partition(":")
        return getattr(importlib.import_module(module), attr)


def _district_config(tmp_path: Path) -> Path:
    config = DistrictConfig(
        district_code="1964733",
        data_dir=tmp_path / "data",
        peer_listen="127.0.0.1:0",
        advertised_endpoints=("127.0.0.1:1",),
        registry_address="127.0.0.1:2",
        registry_enroll_address="127.0.0.1:3",
        registry_ca_path=tmp_path / "ca.pem",
        registry_signing_key="00" * 32,
    )
    path = tmp_path / "district.toml"
    write_config(config, path)
    return path


def test_rt_sis_load_through_the_declared_entry_point(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, small: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``rt sis load`` as pyproject.toml declares it (the installed metadata predates it)."""
    import rt_client.cli as rt_cli
    from rt_server.store import create_schema, make_engine

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = project["entry-points"]["rt.commands"]
    assert declared["sis"] == "rt_server.cli:add_sis_command"
    eps = [_EntryPoint(n, t) for n, t in declared.items()]
    monkeypatch.setattr(rt_cli, "entry_points", lambda group: eps if group == "rt.commands" else [])
    config = _district_config(tmp_path)
    (tmp_path / "data").mkdir()
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'district.db'}")
    create_schema(engine)
    engine.dispose()

    argv = ["sis", "load", str(small), "--config", str(config), "--json"]
    assert rt_cli.main([*argv, "--dry-run"]) == rt_cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)["tables"]["STU"]["new"] == 20
    assert rt_cli.main(argv) == rt_cli.EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert summary["dry_run"] is False and summary["tables"]["HIS"]["new"] == 80
    assert rt_cli.main(argv[:-1]) == rt_cli.EXIT_OK
    out = capsys.readouterr().out
    assert "HIS" in out and "80" in out and "rows/s" in out

    _bad_value(small)
    assert rt_cli.main(argv) == rt_cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert 'HIS.csv line 5, column YR: \\"2O24\\" is not a year' in err
    assert "Traceback" not in err
    assert rt_cli.main(["sis", "load", str(tmp_path / "nowhere"), "--config", str(config)]) == 1
    assert "no such folder" in capsys.readouterr().err


def test_progress_is_reported_as_rows_are_read(engine: Engine, tmp_path: Path) -> None:
    rows = generate_export(tmp_path / "export", 400)
    seen: list[int] = []
    load(engine, tmp_path / "export", progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == sum(rows.values()) and len(seen) > 8


# --- STU.SC: the SIS's school number, mapped to its CDS code -------------------------------


def _school_numbers(folder: Path) -> None:
    """STU.SC as a real Aeries export has it: the local school number, not the CDS code."""
    stu = read_csv(folder / "STU.csv")
    for row in stu[1:]:
        row[STU_HEADER.index("SC")] = "994"
    write_csv(folder / "STU.csv", stu[0], stu[1:])


def test_a_school_number_is_mapped_to_its_cds_code(engine: Engine, small: Path) -> None:
    _school_numbers(small)
    assert counts(load(engine, small, schools={"994": REQUESTING_SCHOOL}))["STU"] == (20, 0, 0)
    with engine.connect() as conn:
        assert set(conn.execute(select(STUDENTS.c.school)).scalars()) == {REQUESTING_SCHOOL}
    # Unchanged on reload: the mapped code is what is compared.
    assert counts(load(engine, small, schools={"994": REQUESTING_SCHOOL}))["STU"] == (0, 0, 20)


def test_an_unmapped_school_number_is_refused_naming_it(
    engine: Engine, small: Path, snapshot: Callable[[], Snapshot]
) -> None:
    _school_numbers(small)
    before = data_snapshot(snapshot)
    with pytest.raises(ExportRefused) as refused:
        load(engine, small, schools={"995": REQUESTING_SCHOOL})
    first = str(refused.value.problems[0])
    assert first.startswith('STU.csv line 2, column SC: "994" is not a 14-digit CDS code')
    assert '"994" = "<its CDS code>"' in first and "[sis.schools]" in first
    assert refused.value.count == 20
    assert data_snapshot(snapshot) == before


def test_sis_schools_are_read_from_district_toml(tmp_path: Path) -> None:
    from rt_client.config import load_config
    from rt_client.errors import ConfigError

    path = _district_config(tmp_path)
    text = path.read_text(encoding="utf-8")
    path.write_text(text + '\n[sis.schools]\n994 = "19647331932334"\n', encoding="utf-8")
    assert load_config(path).sis_schools == {"994": "19647331932334"}
    path.write_text(text + '\n[sis.schools]\n994 = "1964733"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match='school "994" must map to its 14-digit CDS code'):
        load_config(path)
