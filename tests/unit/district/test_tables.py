"""The table registry and the generic proto <-> row dict <-> database round trip."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    Engine,
    Integer,
    Numeric,
    String,
    insert,
    inspect,
    select,
)

from protos.rt.v1 import common_pb2, records_pb2
from rt_client.errors import InvalidInput
from rt_server.core import tables
from rt_server.core.tables import (
    ALL_TABLES,
    TABLES,
    ColumnKind,
    ColumnSpec,
    Unconvertible,
    format_table_list,
    parse_date,
    parse_decimal,
    parse_table_list,
    row_from_proto,
    row_to_proto,
    table_set,
    table_spec,
)
from rt_server.core.validate import INT32_MAX, INT32_MIN, validate_row
from rt_server.store import students
from rt_server.store.export import iter_batches
from rt_server.store.schema import RECORD_TABLES, STUDENTS
from scripts import samples

HOSTILE = "Robert'); DROP TABLE students;--"


def test_registry_covers_eight_tables_in_transfer_order() -> None:
    assert ALL_TABLES == ("TST", "CST", "CTS", "HIS", "ENR", "IMM", "LAC", "PFT")
    for code, spec in TABLES.items():
        assert spec.code == code
        assert common_pb2.TableCode.Name(spec.enum) == code
        assert spec.batch_field == code.lower()
        assert spec.row_class.DESCRIPTOR.name == code.capitalize() + "Row"
        # every proto field is a column, every column but PID a proto field
        proto_fields = {f.name.upper() for f in spec.row_class.DESCRIPTOR.fields}
        assert proto_fields == set(spec.column_names)
        assert set(RECORD_TABLES[spec.code].c.keys()) == proto_fields | {"PID"}
        assert {"SQ", "SRC"} <= proto_fields
        assert not {"PID", "SQ", "SRC"} & set(spec.data_columns)


def test_natural_keys_are_those_of_the_design() -> None:
    assert {c: s.natural_key for c, s in TABLES.items()} == {
        "TST": ("ID", "PT", "TA"),
        "CST": ("ID", "SD", "TA"),
        "CTS": ("NM", "DT"),
        "HIS": ("YR", "TE", "CN", "ST"),
        "ENR": ("SC", "YR", "ED"),
        "IMM": ("VC", "DT"),
        "LAC": ("AC", "AD"),
        "PFT": ("TD", "CP"),
    }


def test_schema_has_pid_sq_key_and_natural_key_index(engine: Engine) -> None:
    inspector = inspect(engine)
    for code, spec in TABLES.items():
        assert inspector.get_pk_constraint(code)["constrained_columns"] == ["PID", "SQ"]
        indexes = {tuple(i["column_names"]) for i in inspector.get_indexes(code)}
        assert ("PID", *spec.natural_key) in indexes
        fks = inspector.get_foreign_keys(code)
        assert [(fk["referred_table"], fk["constrained_columns"]) for fk in fks] == [
            ("students", ["PID"])
        ]


def test_column_kinds_follow_the_column_types() -> None:
    his = TABLES["HIS"].by_name
    assert his["DC"].kind is ColumnKind.DATE
    assert (his["CR"].kind, his["CR"].precision, his["CR"].scale) == (ColumnKind.DECIMAL, 6, 2)
    assert his["GR"].kind is ColumnKind.INT
    assert (his["CO"].kind, his["CO"].max_length) == (ColumnKind.STRING, 60)
    assert TABLES["PFT"].by_name["HF"].kind is ColumnKind.BOOL


def _column_facts(column: Column[Any]) -> tuple[ColumnKind, int | None, int | None, int | None]:
    """(kind, max length, precision, scale) as a database column's SQLAlchemy type promises them.

    Read from the type alone, not from how ``schema`` built it, so a record
    table edited by hand (or built wrongly) disagrees with the core's spec.
    """
    sql_type = column.type
    # Order matters: Date and Boolean are checked before the wider families.
    if isinstance(sql_type, Date):
        return ColumnKind.DATE, None, None, None
    if isinstance(sql_type, Boolean):
        return ColumnKind.BOOL, None, None, None
    if isinstance(sql_type, Integer):
        return ColumnKind.INT, None, None, None
    if isinstance(sql_type, Numeric):
        assert sql_type.asdecimal, f"{column}: decimals must come back exact"
        return ColumnKind.DECIMAL, None, sql_type.precision, sql_type.scale
    if isinstance(sql_type, String):
        return ColumnKind.STRING, sql_type.length, None, None
    raise AssertionError(f"{column}: unsupported column type {sql_type!r}")


def test_schema_record_tables_agree_with_the_core_specs() -> None:
    assert list(RECORD_TABLES) == list(ALL_TABLES)
    for code, spec in TABLES.items():
        table = RECORD_TABLES[code]
        assert table.name == code
        assert [c.name for c in table.columns] == ["PID", *(c.name for c in spec.stored_columns)]
        assert {c.name for c in spec.stored_columns} == set(spec.column_names)
        assert not table.c.PID.nullable
        for column in spec.stored_columns:
            db_column = table.c[column.name]
            facts = (column.kind, column.max_length, column.precision, column.scale)
            assert _column_facts(db_column) == facts, f"{code}.{column.name}"
            assert db_column.nullable is not column.required, f"{code}.{column.name}"
    assert [c.name for c in TABLES["HIS"].stored_columns if c.required] == ["SQ"]


def test_declarations_that_disagree_with_the_proto_fail_at_import() -> None:
    his = next(d for d in tables._DECLARED if d.code == "HIS")
    batch_field = records_pb2.RecordBatch.DESCRIPTOR.fields_by_name["his"]
    assert tables._table_spec(his, batch_field) == TABLES["HIS"]
    broken = [
        dataclasses.replace(his, data=his.data[:-1]),  # PF missing
        dataclasses.replace(his, data=(*his.data, tables._text("XX", 4))),  # not in the proto
        dataclasses.replace(his, data=(tables._int("YR"), *his.data[1:])),  # wrong wire type
        dataclasses.replace(his, natural_key=("YR", "ZZ")),
    ]
    for declared in broken:
        with pytest.raises(RuntimeError):
            tables._table_spec(declared, batch_field)


def test_table_spec_accepts_codes_and_enum_values() -> None:
    assert table_spec("his") is table_spec("HIS") is table_spec(common_pb2.HIS)
    for bad in ("XYZ", "", common_pb2.TABLE_CODE_UNSPECIFIED, 99):
        with pytest.raises(InvalidInput):
            table_spec(bad)
    assert table_set(["PFT", "tst", common_pb2.PFT]) == ("TST", "PFT")
    assert table_set([], empty_means_all=True) == ALL_TABLES
    assert parse_table_list("HIS,TST") == parse_table_list(("HIS", "TST")) == ("TST", "HIS")
    assert parse_table_list("") == parse_table_list(None) == ()
    assert format_table_list([common_pb2.PFT, "his"]) == "HIS,PFT"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.5", Decimal("2.50")),
        ("2.50", Decimal("2.50")),
        ("2.500", Decimal("2.50")),
        ("12.75", Decimal("12.75")),
        ("0", Decimal("0.00")),
        ("-0", Decimal("0.00")),
        ("-3.1", Decimal("-3.10")),
        ("9999", Decimal("9999.00")),
    ],
)
def test_decimals_normalise_to_the_column_scale_exactly(text: str, expected: Decimal) -> None:
    value = parse_decimal(text, 2)
    assert value == expected
    assert str(value) == str(expected)  # same scale, not just the same value


@pytest.mark.parametrize(
    "text", ["2.555", "2.501", "1e3", "NaN", "Infinity", " 1", "1 ", "+1", ".5", "5.", "1,5", ""]
)
def test_decimals_that_would_need_rounding_or_are_not_plain_are_refused(text: str) -> None:
    with pytest.raises(Unconvertible):
        parse_decimal(text, 2)


def test_dates_must_be_real_and_in_one_spelling() -> None:
    assert parse_date("2024-02-29") == dt.date(2024, 2, 29)
    for bad in (
        "2025-02-30",
        "2023-02-29",
        "2025-13-01",
        "0000-01-01",
        "20250102",
        "2025-1-2",
        "2025-01-02T00:00",
        "",
        "２０２５-01-02",
    ):
        with pytest.raises(Unconvertible):
            parse_date(bad)


def test_unset_is_none_and_empty_string_stays_empty() -> None:
    row = row_from_proto("HIS", records_pb2.HisRow(co="", cr="2.5", gr=0, dc="2024-02-29"))
    assert row["CO"] == ""
    assert row["MK"] is None
    assert row["GR"] == 0  # a set zero is not NULL
    assert row["CR"] == Decimal("2.50")
    assert row["DC"] == dt.date(2024, 2, 29)
    back = row_to_proto("HIS", row)
    assert back.HasField("co") and back.co == ""  # type: ignore[attr-defined]
    assert not back.HasField("mk")
    assert back.HasField("gr") and back.gr == 0  # type: ignore[attr-defined]
    assert back.cr == "2.50"  # type: ignore[attr-defined]


def test_bool_false_is_not_null() -> None:
    row = row_from_proto("PFT", records_pb2.PftRow(hf=False))
    assert row["HF"] is False
    assert row_to_proto("PFT", row).HasField("hf")
    assert row_from_proto("PFT", records_pb2.PftRow())["HF"] is None


def test_row_of_another_table_is_refused() -> None:
    with pytest.raises(InvalidInput, match="HIS row 4: not a row of this table"):
        row_from_proto("HIS", records_pb2.TstRow(id="X"), index=4)


def test_bad_date_names_table_row_and_column_not_the_value() -> None:
    with pytest.raises(InvalidInput) as err:
        row_from_proto("ENR", records_pb2.EnrRow(ed="2025-02-30"), index=7)
    assert str(err.value) == "ENR row 7, column ED: not a real calendar date"
    assert "2025" not in str(err.value)


def _edge_rows() -> dict[str, list[Any]]:
    """Rows that stress the round trip: Unicode, quotes, SQL, empty vs NULL, decimals, dates."""
    return {
        "HIS": [
            records_pb2.HisRow(
                sq=1,
                yr="2023-2024",
                te="F",
                cn="1101",
                co="Español — Nuñez 1",
                cr="2.5",
                cc="0",
                st="01611920130229",
                dc="2024-02-29",
            ),
            records_pb2.HisRow(
                sq=2,
                yr="2023-2024",
                te="S",
                cn="1102",
                co=HOSTILE,
                mk="",
                cr="12.75",
                ch="",
                pf=None,
            ),
            records_pb2.HisRow(sq=3, co="O'Brien's \"Honors\" 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ☃ 中文"),
            records_pb2.HisRow(sq=4),  # every column NULL
        ],
        "TST": [
            records_pb2.TstRow(
                sq=1, id="CAASPP-ELA", pt=0, ta="2023-24 SPR", ss=2500, gr=-10, pc=0, pl=""
            )
        ],
        "CST": [records_pb2.CstRow(sq=1, id="CAASPP-MATH", sd="MATH.CR", sc="-0.5")],
        "CTS": [
            records_pb2.CtsRow(
                sq=1,
                nm="SAT",
                dt="2024-10-05",
                ttl=1450,
                st1="EBRW",
                sc1=720,
                st13="Ω",
                sc13=INT32_MAX,
            )
        ],
        "ENR": [
            records_pb2.EnrRow(
                sq=1,
                sc="01611920130229",
                yr="2024-2025",
                gr=INT32_MIN,
                ed="2024-08-14",
                ld="2025-06-12",
                er="T160",
            )
        ],
        "IMM": [records_pb2.ImmRow(sq=1, vc="03", dn=2, dt="2014-05-17")],
        "LAC": [
            records_pb2.LacRow(
                sq=1, l1="01", l2="01", l3="00", ac="ELPAC-SUM", ad="2024-03-01", lv="3"
            )
        ],
        "PFT": [
            records_pb2.PftRow(
                sq=1, td="2024-03-01", cp="AEROBIC CAPACITY", sc="42.3", hf=True, gr=9
            ),
            records_pb2.PftRow(sq=2, td="2024-03-01", cp="FLEXIBILITY", hf=False),
        ],
    }


def test_exact_round_trip_of_all_eight_tables_through_the_database(engine: Engine) -> None:
    edge = _edge_rows()
    batches = []
    for code, rows in edge.items():
        batch = records_pb2.RecordBatch(table=TABLES[code].enum)
        getattr(batch, TABLES[code].batch_field).extend(rows)
        batches.append(batch)
    pid = students.add_student(
        engine,
        {"legal_first_name": "Zoë", "legal_last_name": HOSTILE[:50], "birth_date": "2009-01-02"},
        batches,
        actor="registrar",
    )
    out = list(iter_batches(engine, pid, ALL_TABLES))
    assert [common_pb2.TableCode.Name(b.table) for b in out] == list(ALL_TABLES)
    for batch in out:
        code = common_pb2.TableCode.Name(batch.table)
        sent = [row_from_proto(code, m) for m in edge[code]]
        received = [row_from_proto(code, m) for m in getattr(batch, code.lower())]
        assert received == sent  # same values, NULLs and empty strings, in SQ order
        for a, b in zip(sent, received, strict=True):
            for column, value in a.items():
                assert type(b[column]) is type(value)  # no str/int/float drift
                if isinstance(value, Decimal):
                    assert str(b[column]) == str(value)  # same scale too
    his = {m.sq: m for m in out[3].his}
    assert his[1].cr == "2.50" and his[1].cc == "0.00" and his[2].cr == "12.75"
    assert his[2].co == HOSTILE and his[2].mk == "" and not his[2].HasField("ci")
    assert not any(
        his[4].HasField(f.name) for f in records_pb2.HisRow.DESCRIPTOR.fields if f.name != "sq"
    )
    # and the students table survived the hostile string, names intact
    with engine.connect() as conn:
        names = conn.execute(select(STUDENTS.c.legal_last_name)).scalars().all()
    assert names == [HOSTILE[:50]]


def test_sample_batches_round_trip_exactly(engine: Engine) -> None:
    rng = random.Random(7)
    student = samples.sample_student(rng, 42)
    batches = samples.sample_batches(rng, birth_date=student["birth_date"], batch_rows=50)
    pid = students.add_student(engine, student, batches, actor="loader")
    assert pid == "S000042"
    exported = list(iter_batches(engine, pid, ALL_TABLES, batch_rows=50))
    assert exported == batches  # message equality: every field, byte for byte


def _value_strategy(column: ColumnSpec) -> st.SearchStrategy[Any]:
    if column.kind is ColumnKind.STRING:
        assert column.max_length is not None
        text = st.text(
            alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            max_size=column.max_length,
        )
        return st.none() | text
    if column.kind is ColumnKind.INT:
        return st.none() | st.integers(INT32_MIN, INT32_MAX)
    if column.kind is ColumnKind.BOOL:
        return st.none() | st.booleans()
    if column.kind is ColumnKind.DATE:
        return st.none() | st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31))
    assert column.precision is not None and column.scale is not None
    limit = 10 ** (column.precision - column.scale) - 1
    return st.none() | st.decimals(-limit, limit, places=column.scale, allow_nan=False)


@st.composite
def _any_row(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    code = draw(st.sampled_from(ALL_TABLES))
    return code, {c.name: draw(_value_strategy(c)) for c in TABLES[code].columns}


@settings(max_examples=300, deadline=None)
@given(_any_row())
def test_any_valid_row_survives_proto_and_back(case: tuple[str, dict[str, Any]]) -> None:
    code, row = case
    checked = validate_row(code, row)
    wire = row_to_proto(code, checked).SerializeToString()
    again = row_from_proto(code, TABLES[code].row_class.FromString(wire))
    assert validate_row(code, again) == checked


def test_database_rows_read_back_with_python_types(engine: Engine, student_id: str) -> None:
    spec = TABLES["PFT"]
    row = row_from_proto(spec, records_pb2.PftRow(td="2024-03-01", cp="X", sc="9999999.99"))
    with engine.begin() as conn:
        conn.execute(insert(RECORD_TABLES[spec.code]), [{**row, "PID": student_id, "SQ": 1}])
    with engine.connect() as conn:
        back = dict(conn.execute(select(RECORD_TABLES[spec.code])).mappings().one())
    assert back["SC"] == Decimal("9999999.99") and str(back["SC"]) == "9999999.99"
    assert back["TD"] == dt.date(2024, 3, 1)


def test_every_column_has_a_name_for_people(monkeypatch: pytest.MonkeyPatch) -> None:
    """The console shows each Aeries code with its name from the one table
    (rt_client.column_names); a column declared without one fails at import."""
    from rt_client.column_names import COLUMN_NAMES, column_name

    for code, spec in TABLES.items():
        for column in spec.column_names:
            assert column_name(code, column), f"{code}.{column}"
    assert column_name("his", "mk") == "Mark" and column_name("ENR", "SC") == "School"
    his = next(d for d in tables._DECLARED if d.code == "HIS")
    batch_field = records_pb2.RecordBatch.DESCRIPTOR.fields_by_name["his"]
    monkeypatch.setitem(
        COLUMN_NAMES, "HIS", {k: v for k, v in COLUMN_NAMES["HIS"].items() if k != "MK"}
    )
    with pytest.raises(RuntimeError, match="MK"):
        tables._table_spec(his, batch_field)
