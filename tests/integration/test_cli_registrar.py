"""The ``rt`` CLI as a registrar uses it, against two real running districts.

Short request ids (issue 13, item 7), ``rt review --rows`` (item 9), the same
errors everywhere and ``--json`` errors (item 10), and the README's records
file (its README section). ``rt`` runs in this process (``rt_client.cli.main``)
against the districts' registrar sockets, as the ``rt`` script would.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

import rt_client.cli as rt_cli
from protos.rt.v1 import registrar_pb2
from rt_server.flows import requester
from tests.harness.cli import Rt
from tests.harness.flow import (
    Status,
    add_student,
    approve,
    assert_unchanged,
    create_request,
    rows_of,
    settle,
    small_records,
    snapshot,
    wait_status,
)
from tests.harness.world import PRIOR_SCHOOL, Pair

REPO = Path(__file__).resolve().parents[2]
UNKNOWN_ID = "11111111-2222-4333-8444-555555555555"


def _request_with_id(p: Pair, request_id: str) -> str:
    """B asks A for B1's records, under ``request_id`` (ids are random otherwise)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(requester, "new_id", lambda: request_id)
        made = create_request(p)
    assert made == request_id
    return made


# --- item 7: request ids by a unique prefix -------------------------------------------------

TWINS = ("354b6766-0c1f-4a43-9d3e-8f1a2b3c4d5e", "354b6766-0c2a-4b43-8d3e-8f1a2b3c4d5f")
LONE = "9e1d0a33-5f2b-4c7d-a1e4-0b9c8d7e6f50"


def test_tables_show_short_ids_and_every_command_takes_a_prefix(districts: Pair, rt: Rt) -> None:
    p = districts
    add_student(p.a, "A1", small_records(3, 2))
    add_student(p.b, "B1")
    for request_id in (*TWINS, LONE):
        _request_with_id(p, request_id)
    run = rt

    listing = run(p.b, "requests")
    assert listing.code == 0, listing.err
    shown = re.findall(r"[│|] ([0-9a-f-]{8,36}) +[│|]", listing.out)
    assert sorted(shown) == sorted(["354b6766-0c1", "354b6766-0c2", "9e1d0a33"]), listing.out
    assert LONE not in listing.out  # never the whole id, never cut with '…'
    as_json = json.loads(run(p.b, "requests", "--json").out)
    assert {r["request_id"]: r["short_id"] for r in as_json} == {
        TWINS[0]: "354b6766-0c1",
        TWINS[1]: "354b6766-0c2",
        LONE: "9e1d0a33",
    }

    # Every command takes a prefix: the whole flow, by short ids (upper case and '…' too).
    assert run(p.b, "show", "9E1D0A33…").code == 0
    assert LONE in run(p.b, "show", "9e1d0a33").out
    assert run(p.a, "match", "9e1d0a33").code == 0
    done = run(p.a, "approve", "9e1d0a33", "--student", "A1")
    assert done.code == 0, done.err
    wait_status(p.b, LONE, Status.DATA_RECEIVED)
    settle(p.a, p.b)
    assert run(p.b, "review", "9e1d0a33", "--rows").code == 0
    assert run(p.b, "message", "9e1d0a33", "thanks").code == 0
    assert "thanks" in run(p.b, "message", "9e1d0a33").out
    imported = run(p.b, "import", "9e1d0a33")
    assert imported.code == 0, imported.err
    assert run(p.a, "reject", "354b6766-0c2", "--reason", "records-withheld").code == 0
    wait_status(p.b, TWINS[1], Status.REJECTED)
    disclosures = run(p.a, "disclosures")
    assert "9e1d0a33" in disclosures.out and LONE not in disclosures.out

    # A prefix of two requests names both; one under 8 characters is refused.
    before = snapshot(p.a)
    ambiguous = run(p.a, "approve", "354b6766", "--student", "A1")
    assert ambiguous.code == 1
    assert "ambiguous" in ambiguous.err
    assert "354b6766-0c1" in ambiguous.err and "354b6766-0c2" in ambiguous.err
    short = run(p.a, "approve", "354b676", "--student", "A1")
    assert short.code == 2 and "at least its first 8 characters" in short.err
    assert_unchanged(before, snapshot(p.a))


def test_the_registrar_service_resolves_prefixes(districts: Pair) -> None:
    """Scripts calling the service get the same: a prefix resolved, or a clear refusal."""
    import grpc

    p = districts
    add_student(p.b, "B1")
    _request_with_id(p, LONE)
    detail = p.b.rpc.GetRequest(registrar_pb2.RequestRef(request_id="9e1d0a33"), timeout=10)
    assert detail.summary.request_id == LONE
    for ref, code, text in [
        ("9e1d", grpc.StatusCode.INVALID_ARGUMENT, "too short"),
        ("ffffffff", grpc.StatusCode.NOT_FOUND, "no request ffffffff here"),
        ("x" * 10_000, grpc.StatusCode.INVALID_ARGUMENT, "not a request id"),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            p.b.rpc.GetRequest(registrar_pb2.RequestRef(request_id=ref), timeout=10)
        assert info.value.code() == code and text in (info.value.details() or "")


# --- item 9: rt review --rows -----------------------------------------------------------------


def test_review_rows_are_tables_with_conflicts_side_by_side(districts: Pair, rt: Rt) -> None:
    p = districts
    run = rt
    records = small_records(5, 2)
    add_student(p.a, "A1", records)
    ours = dict(records["HIS"][0])
    theirs_mark = ours["MK"]
    ours["MK"] = "F" if theirs_mark != "F" else "D"
    add_student(p.b, "B1", {"HIS": [ours], "ENR": [records["ENR"][0]]})
    request_id = create_request(p)
    approve(p, request_id, "A1")

    review = run(p.b, "review", request_id, "--rows")
    assert review.code == 0, review.err
    assert "{'" not in review.out and "':" not in review.out  # no Python dicts
    # The conflict, side by side: row, column, ours, received.
    assert re.search(
        rf"HIS:0\s+[│|]\s+MK\s+[│|]\s+{re.escape(ours['MK'])}\s+[│|]\s+{re.escape(theirs_mark)}\s",
        review.out,
    ), review.out
    assert re.search(r"ENR:0\s+[│|]\s+DUPLICATE", review.out), review.out
    assert "TST:0" not in review.out  # NEW rows only with --rows all, as some are not NEW
    assert "TST:0" in run(p.b, "review", request_id, "--rows", "all").out


def test_review_rows_shows_new_rows_when_every_row_is_new(districts: Pair, rt: Rt) -> None:
    p = districts
    run = rt
    add_student(p.a, "A1", small_records(6, 2))
    add_student(p.b, "B1")
    request_id = create_request(p)
    approve(p, request_id, "A1")
    review = run(p.b, "review", request_id, "--rows")
    assert review.code == 0, review.err
    assert "Every received row is NEW" in review.out
    for where in ("TST:0", "HIS:1", "PFT:1"):
        assert re.search(rf"{where}\s+[│|]\s+NEW", review.out), review.out


# --- item 10: the same sentence, JSON errors, words --------------------------------------------


def test_a_missing_request_is_the_same_sentence_in_every_command(districts: Pair, rt: Rt) -> None:
    run = rt
    commands = _commands_taking_a_request_id(rt_cli.build_parser())
    assert {"show", "match", "approve", "reject", "retry", "review", "import", "message"} <= set(
        commands
    )
    for ref in (UNKNOWN_ID, "ffffffff"):
        seen = set()
        for command in commands:
            extra = ["--reason", "records-withheld"] if command == "reject" else []
            done = run(districts.b, *command.split(), ref, *extra)
            assert done.code == 1, (command, done.err)
            seen.add(done.err.strip())
        assert seen == {
            f"error: no request {ref} here ('rt requests' lists this district's requests)"
        }
        # And with --json: that message as JSON, with a stable code, and the same exit code.
        done = run(districts.b, "show", ref, "--json")
        assert done.code == 1 and not done.out
        assert json.loads(done.err) == {
            "error": {
                "code": "not_found",
                "message": f"no request {ref} here ('rt requests' lists this district's requests)",
            }
        }


def _commands_taking_a_request_id(parser: argparse.ArgumentParser) -> list[str]:
    found = []

    def walk(p: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, (*path, name))
            elif action.dest == "request_id" and not action.option_strings:
                found.append(" ".join(path))

    walk(parser, ())
    return found


def test_json_errors_for_usage_and_refusals(districts: Pair, rt: Rt) -> None:
    run = rt
    for args, code, exit_code in [
        (("requests", "--limit", "-1"), "usage", 2),
        (("requests", "--limit", "99999999999"), "usage", 2),
        (("student", "list", "--limit", "-5"), "usage", 2),
        (("show", "1234"), "usage", 2),
        (("disclosures", "--student", "S404"), "not_found", 1),
        (("nonsense",), "usage", 2),
    ]:
        text = run(districts.b, *args)
        as_json = run(districts.b, *args, "--json")
        assert text.code == as_json.code == exit_code, (args, text.err, as_json.err)
        assert text.err.startswith("usage:" if exit_code == 2 else "error:"), text.err
        error = json.loads(as_json.err)["error"]
        assert error["code"] == code and error["message"], (args, error)
        assert not as_json.out


def test_disclosures_of_an_unknown_student(districts: Pair, rt: Rt) -> None:
    done = rt(districts.a, "disclosures", "--student", "S404404404")
    assert done.code == 1
    assert "no student S404404404 here" in done.err


def test_student_messages_name_the_allowed_values(districts: Pair, rt: Rt) -> None:
    run = rt
    base = ["student", "add", "--first", "Ana", "--last", "Ruiz", "--school", districts.b.school]
    before = snapshot(districts.b)
    gender = run(districts.b, *base, "--birth-date", "2011-04-02", "--gender", "FF")
    assert gender.code == 1
    assert "gender must be one letter: M (male), F (female) or X (nonbinary)" in gender.err
    old = run(districts.b, *base, "--birth-date", "1850-01-01", "--gender", "F")
    assert old.code == 1
    assert "birth date must be between 1900-01-01 and today (" in old.err
    bad = run(districts.b, *base, "--birth-date", "2011-02-30", "--gender", "F")
    assert bad.code == 2 and "YYYY-MM-DD" in bad.err
    assert_unchanged(before, snapshot(districts.b))


def test_rejections_name_text_and_print_reasons_as_words(districts: Pair, rt: Rt) -> None:
    p = districts
    run = rt
    add_student(p.b, "B1")
    request_id = create_request(p)
    before = snapshot(p.a)
    other = run(p.a, "reject", request_id, "--reason", "other")
    assert other.code != 0 and "--text" in other.err
    assert_unchanged(before, snapshot(p.a))
    done = run(p.a, "reject", request_id, "--reason", "student-not-found")
    assert done.code == 0, done.err
    wait_status(p.b, request_id, Status.REJECTED)
    settle(p.a, p.b)
    for side in (p.a, p.b):
        for args in (("requests",), ("show", request_id), ("message", request_id)):
            out = run(side, *args).out
            assert "STUDENT_NOT_FOUND" not in out, (args, out)
            assert "student not found" in out, (args, out)


def test_version(rt: Rt, capfd: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exited:
        rt_cli.main(["--version"])
    assert exited.value.code == 0
    assert capfd.readouterr().out.strip() == f"rt {version('records-transfer')}"


# --- README: the records file of `rt student add --records` -----------------------------------


def readme_records_example() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    at = readme.index("rt student add\n... --records FILE.json")
    return readme[
        readme.index("```json\n", at) + len("```json\n") : readme.index(
            "```", readme.index("```json\n", at) + 7
        )
    ]


def test_the_readme_records_example_loads_through_the_cli(
    districts: Pair, rt: Rt, tmp_path: Path
) -> None:
    run = rt
    example = tmp_path / "records.json"
    example.write_text(readme_records_example(), encoding="utf-8")
    done = run(
        districts.a,
        "student", "add", "--local-id", "S482915037", "--first", "Ana", "--last", "Nuñez",
        "--birth-date", "2011-04-02", "--gender", "F", "--school", PRIOR_SCHOOL,
        "--records", str(example),
    )  # fmt: skip
    assert done.code == 0, done.err
    assert "S482915037" in done.out
    his = rows_of(districts.a, "HIS", "S482915037")
    assert [(r["CO"], r["MK"], r["TE"]) for r in his] == [
        ("English 9", "A-", "F"),
        ("English 9", "B+", "S"),
    ]
    assert len(rows_of(districts.a, "ENR", "S482915037")) == 1
    assert [r["DN"] for r in rows_of(districts.a, "IMM", "S482915037")] == [1, 2]
    # A bad row: refused, naming the table and row, and nothing of the student stored.
    data = json.loads(readme_records_example())
    data[0]["his"][1]["yr"] = "x" * 500
    example.write_text(json.dumps(data), encoding="utf-8")
    before = snapshot(districts.a)
    bad = run(
        districts.a,
        "student", "add", "--first", "Bo", "--last", "Lee", "--birth-date", "2011-04-02",
        "--gender", "M", "--school", PRIOR_SCHOOL, "--records", str(example),
    )  # fmt: skip
    assert bad.code == 1 and "HIS" in bad.err, bad.err
    assert_unchanged(before, snapshot(districts.a))


def test_records_files_that_are_not_records(tmp_path: Path, rt: Rt, districts: Pair) -> None:
    run = rt
    for content in ("{}", "5", "[5]", '[{"table": "NOPE"}]', "not json"):
        path = tmp_path / "r.json"
        path.write_text(content, encoding="utf-8")
        done = run(
            districts.b,
            "student", "add", "--first", "A", "--last", "B", "--birth-date", "2011-04-02",
            "--gender", "F", "--school", districts.b.school, "--records", str(path),
        )  # fmt: skip
        assert done.code != 0 and "records file" in done.err, (content, done.err)
