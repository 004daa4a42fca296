"""``make bench`` cannot rot: a tiny run of the benchmark, real servers and all.

``python -m scripts.bench --quick`` starts a registry and two districts as
``rt serve`` subprocesses, runs every scenario at a toy size (and the peer
baseline, if ``sqlite3`` and ``gpg`` are there or can be installed) and writes
its JSON. The figures of a toy run mean nothing; their presence and shape do.

One run serves both tests: with PostgreSQL there (``make test``) and the
PostgreSQL test selected, the run adds ``--postgres URL``, which runs B2 and B3
again with both districts on PostgreSQL after every scenario on SQLite (the
cluster, the peer baseline and the SQLite scenarios are then started once, not
twice).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scripts.loopback import tool_env

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_TEST = "test_quick_benchmark_runs_b2_and_b3_on_postgresql_beside_sqlite"
SQLITE_SCENARIOS = {
    "one_student", "summer_rush", "consolidation", "transport_limit", "idle",
    "registry_lookups", "sis_load",
}  # fmt: skip
POSTGRES_SCENARIOS = {"summer_rush_postgresql", "consolidation_postgresql"}


@dataclass(frozen=True)
class QuickRun:
    """One ``python -m scripts.bench --quick`` run: its JSON, its output, whether on PostgreSQL."""

    document: dict[str, Any]
    stdout: str
    output: str  # stdout + stderr
    postgres: bool

    @property
    def by_name(self) -> dict[str, dict[str, Any]]:
        return {s["scenario"]: s for s in self.document["scenarios"]}


@pytest.fixture(scope="module")
def quick_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    url = os.environ.get("RT_TEST_POSTGRES_URL")
    wanted = any(item.name == POSTGRES_TEST for item in request.session.items)
    postgres = bool(url) and wanted
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    command = [sys.executable, "-m", "scripts.bench", "--quick", "--out", str(out)]
    if postgres:
        command += ["--postgres", str(url)]
    # tool_env: the venv's rt and rt-registry first on PATH; no RT_CONFIG/RT_REGISTRY_HOME
    result = subprocess.run(
        command, cwd=ROOT, env=tool_env(), capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return QuickRun(json.loads(out.read_text()), result.stdout, output, postgres)


@pytest.mark.slow
@pytest.mark.subprocess
def test_quick_benchmark_runs_every_scenario(quick_run: QuickRun) -> None:
    by_name = quick_run.by_name
    expected = SQLITE_SCENARIOS | (POSTGRES_SCENARIOS if quick_run.postgres else set())
    assert set(by_name) == expected
    assert by_name["registry_lookups"]["districts"] == 52  # --quick registers 50
    assert by_name["registry_lookups"]["registry_lookups_per_s"] > 0
    assert 10 < by_name["idle"]["idle_rss_mb"] < 1000
    sl = by_name["sis_load"]
    assert sl["rows"] >= 3000 and sl["load_s"] > 0 and sl["floor_s"] > 0
    assert sl["ratio_vs_sqlite3_import"] > 0 and 0 < sl["peak_rss_mb"] < 300

    b1 = by_name["one_student"]
    assert b1["rows_per_transfer"] == 300
    for key in ("request_latency_ms_p50", "delivery_latency_ms_p50", "delivery_latency_ms_p99",
                "import_ms_p50"):  # fmt: skip
        assert b1[key] > 0, key
    b2 = by_name["summer_rush"]
    assert b2["rows"] == 300 * b2["students"] and b2["wall_s"] > 0 and b2["rows_per_s"] > 0
    b3 = by_name["consolidation"]
    assert b3["rows"] == 3000 and b3["rows_per_s"] > 0
    assert set(b3["peak_rss_mb"]) == {"1000", "3000"}
    assert all(v["sender"] > 0 and v["receiver"] > 0 for v in b3["peak_rss_mb"].values())
    assert b3["rss_growth"]["sender"] > 0 and b3["rss_growth"]["receiver"] > 0
    floor = b3["sqlite_insert_floor"]  # SQLite alone writing the same rows
    assert floor["rows"] == 3000 and floor["executemany_s"] > 0 and floor["insert_select_s"] > 0
    assert "SQLite alone, same rows" in quick_run.output
    assert by_name["transport_limit"]["mb_s"] > 0
    if "peer baseline is skipped" not in quick_run.output:
        assert b2["ratio_vs_peer"] > 0 and b3["ratio_vs_peer"] > 0
    assert {t["figure"] for t in quick_run.document["targets"]} >= {
        "request latency p50 (ms)",
        "ratio_vs_peer",
        "ratio_vs_sqlite3_import",
    }
    assert "| B1 one_student |" in quick_run.stdout  # the table


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.postgres
@pytest.mark.skipif(
    not os.environ.get("RT_TEST_POSTGRES_URL"),
    reason="needs PostgreSQL: run `make test`, or set RT_TEST_POSTGRES_URL",
)
def test_quick_benchmark_runs_b2_and_b3_on_postgresql_beside_sqlite(quick_run: QuickRun) -> None:
    """``--postgres``: the same scenarios with both districts on PostgreSQL, reported beside."""
    assert quick_run.postgres
    by_name = quick_run.by_name
    assert set(by_name) == SQLITE_SCENARIOS | POSTGRES_SCENARIOS
    assert by_name["summer_rush_postgresql"]["rows"] == by_name["summer_rush"]["rows"]
    assert by_name["consolidation_postgresql"]["rows"] == 3000
    assert "B3 consolidation, PostgreSQL" in quick_run.stdout  # beside SQLite in the table
