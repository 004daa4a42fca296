"""``make bench`` cannot rot: a tiny run of the benchmark, real servers and all.

``python -m scripts.bench --quick`` starts a registry and two districts as
``rt serve`` subprocesses, runs every scenario at a toy size (and the peer
baseline, if ``sqlite3`` and ``gpg`` are there or can be installed) and writes
its JSON. The figures of a toy run mean nothing; their presence and shape do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.loopback import tool_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.subprocess
def test_quick_benchmark_runs_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = tool_env()  # the venv's rt and rt-registry first on PATH; no RT_CONFIG/RT_REGISTRY_HOME
    result = subprocess.run(
        [sys.executable, "-m", "scripts.bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    document = json.loads(out.read_text())
    by_name = {s["scenario"]: s for s in document["scenarios"]}
    assert set(by_name) == {
        "one_student", "summer_rush", "consolidation", "transport_limit", "idle",
        "registry_lookups", "sis_load",
    }  # fmt: skip
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
    assert "SQLite alone, same rows" in output
    assert by_name["transport_limit"]["mb_s"] > 0
    if "peer baseline is skipped" not in output:
        assert b2["ratio_vs_peer"] > 0 and b3["ratio_vs_peer"] > 0
    assert {t["figure"] for t in document["targets"]} >= {
        "request latency p50 (ms)",
        "ratio_vs_peer",
        "ratio_vs_sqlite3_import",
    }
    assert "| B1 one_student |" in result.stdout  # the table


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.postgres
def test_quick_benchmark_runs_b2_and_b3_on_postgresql_beside_sqlite(tmp_path: Path) -> None:
    """``--postgres``: the same scenarios with both districts on PostgreSQL, reported beside."""
    import os

    url = os.environ.get("RT_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("needs PostgreSQL: run `make test`, or set RT_TEST_POSTGRES_URL")
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "scripts.bench", "--quick", "--only", "B2,B3",
         "--postgres", url, "--out", str(out)],
        cwd=ROOT, env=tool_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    by_name = {s["scenario"]: s for s in json.loads(out.read_text())["scenarios"]}
    assert set(by_name) == {
        "summer_rush", "consolidation", "summer_rush_postgresql", "consolidation_postgresql"
    }  # fmt: skip
    assert by_name["summer_rush_postgresql"]["rows"] == by_name["summer_rush"]["rows"]
    assert by_name["consolidation_postgresql"]["rows"] == 3000
    assert "B3 consolidation, PostgreSQL" in result.stdout  # beside SQLite in the table
