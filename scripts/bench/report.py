"""The benchmark's table (Markdown, as pasted into the README) and its targets."""

from __future__ import annotations

from typing import Any

# (scenario, figure, how to read it from the result, limit): the targets.
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("one_student", "request latency p50 (ms)", "request_latency_ms_p50", 10.0),
    ("one_student", "delivery latency p50 (ms)", "delivery_latency_ms_p50", 25.0),
    ("one_student", "delivery latency p99 (ms)", "delivery_latency_ms_p99", 100.0),
    ("summer_rush", "ratio_vs_peer", "ratio_vs_peer", 0.5),
    ("consolidation", "ratio_vs_peer", "ratio_vs_peer", 1.0),
    ("consolidation", "rss_growth sender", "rss_growth.sender", 1.25),
    ("consolidation", "rss_growth receiver", "rss_growth.receiver", 1.25),
    ("consolidation", "peak RSS sender (MB)", "peak_rss_max.sender", 300.0),
    ("consolidation", "peak RSS receiver (MB)", "peak_rss_max.receiver", 300.0),
    ("sis_load", "ratio_vs_sqlite3_import", "ratio_vs_sqlite3_import", 2.0),
    ("sis_load", "peak RSS rt sis load (MB)", "peak_rss_mb", 300.0),
    # The same, with both districts on PostgreSQL (``--postgres``; the peer as before).
    ("summer_rush_postgresql", "ratio_vs_peer", "ratio_vs_peer", 0.5),
    ("consolidation_postgresql", "ratio_vs_peer", "ratio_vs_peer", 1.0),
)

# Scenarios run again with the districts on PostgreSQL carry this suffix.
POSTGRES_SUFFIX = "_postgresql"


def _get(result: dict[str, Any], path: str) -> float | None:
    if path.startswith("peak_rss_max."):
        side = path.split(".", 1)[1]
        peaks = [v[side] for v in result.get("peak_rss_mb", {}).values()]
        return max(peaks) if peaks else None
    value: Any = result
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value if isinstance(value, (int, float)) else None


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_name = {r["scenario"]: r for r in results}
    out = []
    for scenario, figure, path, limit in TARGETS:
        result = by_name.get(scenario)
        value = _get(result, path) if result else None
        out.append({
            "scenario": scenario, "figure": figure, "value": value, "target": f"<= {limit:g}",
            "holds": None if value is None else value <= limit,
        })  # fmt: skip
    return out


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _pair(a: Any, b: Any, unit: str = "", digits: int = 1) -> str:
    return f"{_f(a, digits)} / {_f(b, digits)}{unit}"


def one_line(r: dict[str, Any]) -> str:
    name = r["scenario"]
    if name.endswith(POSTGRES_SUFFIX):
        plain = one_line({**r, "scenario": name.removesuffix(POSTGRES_SUFFIX)})
        return f"{plain} [PostgreSQL]"
    if name == "one_student":
        return (
            f"B1 one_student: {r['transfers']} transfers of {r['rows_per_transfer']:.0f} rows; "
            f"request p50/p99 {_pair(r['request_latency_ms_p50'], r['request_latency_ms_p99'])}"
            f" ms; delivery p50/p99 "
            f"{_pair(r['delivery_latency_ms_p50'], r['delivery_latency_ms_p99'])} ms; "
            f"import p50 {_f(r['import_ms_p50'])} ms"
        )
    if name == "summer_rush":
        return (
            f"B2 summer_rush: {r['students']} students, {r['rows']} rows in "
            f"{_f(r['wall_s'], 2)} s ({_f(r['rows_per_s'], 0)} rows/s); "
            f"peer {_f(r['peer_wall_s'], 2)} s; ratio {_f(r['ratio_vs_peer'], 3)}"
        )
    if name == "consolidation":
        return (
            f"B3 consolidation: {r['rows']} rows in {_f(r['wall_s'], 2)} s "
            f"({_f(r['rows_per_s'], 0)} rows/s); peer {_f(r['peer_wall_s'], 2)} s; "
            f"ratio {_f(r['ratio_vs_peer'], 3)}; rss growth "
            f"{_pair(r['rss_growth']['sender'], r['rss_growth']['receiver'], digits=3)}"
        )
    if name == "registry_lookups":
        return (
            f"registry_lookups: {_f(r['registry_lookups_per_s'], 0)} LookupDistrict/s "
            f"({r['districts']:,} districts, {r['threads']} threads)"
        )
    if name == "idle":
        return f"idle: district server RSS {_f(r['idle_rss_mb'])} MB after {r['settle_s']:g} s"
    if name == "sis_load":
        return (
            f"sis_load: {r['rows']} rows by rt sis load in {_f(r['load_s'], 2)} s "
            f"(reload {_f(r['reload_s'], 2)} s); {r['floor']} {_f(r['floor_s'], 2)} s; "
            f"ratio {_f(r['ratio_vs_sqlite3_import'], 2)}; peak RSS {_f(r['peak_rss_mb'])} MB"
        )
    return f"transport_limit: {_f(r['mb_s'], 0)} MB/s"


def table(document: dict[str, Any]) -> str:
    """The figures and the targets, as two Markdown tables."""
    results = {r["scenario"]: r for r in document["scenarios"]}
    rows: list[tuple[str, str, str]] = []
    if b1 := results.get("one_student"):
        rows += [
            ("B1 one_student", "transfers (rows each)",
             f"{b1['transfers']} ({b1['rows_per_transfer']:.0f})"),
            ("", "request latency p50 / p99",
             _pair(b1["request_latency_ms_p50"], b1["request_latency_ms_p99"], " ms")),
            ("", "delivery latency p50 / p99",
             _pair(b1["delivery_latency_ms_p50"], b1["delivery_latency_ms_p99"], " ms")),
            ("", "import p50 / p99", _pair(b1["import_ms_p50"], b1["import_ms_p99"], " ms")),
        ]  # fmt: skip
    if b2 := results.get("summer_rush"):
        rows += [
            ("B2 summer_rush", "students / rows", _pair(b2["students"], b2["rows"])),
            ("", "wall, first approval → last import",
             f"{_f(b2['wall_s'], 2)} s (median of {b2['runs']})"),
            ("", "rows/s, students/s", f"{_f(b2['rows_per_s'], 0)}, {_f(b2['students_per_s'])}"),
            ("", "requests before it (one by one)", f"{_f(b2['request_phase_s'], 2)} s"),
            ("", "peer: CSV + GPG, one file per student", f"{_f(b2['peer_wall_s'], 2)} s"),
            ("", "ratio_vs_peer (ours / peer)", _f(b2["ratio_vs_peer"], 3)),
        ]  # fmt: skip
    if b3 := results.get("consolidation"):
        rows += [
            ("B3 consolidation", "rows in one transfer", _f(b3["rows"])),
            ("", "wall, approve → imported", f"{_f(b3['wall_s'], 2)} s"),
            ("", "of which delivery / import", _pair(b3["delivery_s"], b3["import_s"], " s", 2)),
            ("", "rows/s", _f(b3["rows_per_s"], 0)),
            ("", "ciphertext, delivery rate",
             f"{_f(b3['ciphertext_mb'])} MB, {_f(b3['delivery_mb_s'])} MB/s"),
            ("", "peer: CSV + GPG, one file", f"{_f(b3['peer_wall_s'], 2)} s"),
            ("", "ratio_vs_peer (ours / peer)", _f(b3["ratio_vs_peer"], 3)),
        ]  # fmt: skip
        for size, peak in b3["peak_rss_mb"].items():
            rows.append(("", f"peak RSS at {int(size):,} rows (sender / receiver)",
                         _pair(peak["sender"], peak["receiver"], " MB")))  # fmt: skip
        if floor := b3.get("sqlite_insert_floor"):
            alone = _pair(floor["executemany_s"], floor["insert_select_s"], " s", 2)
            rows.append(("", "SQLite alone, same rows: executemany / INSERT … SELECT", alone))
        growth = b3["rss_growth"]
        rows.append(("", "rss_growth (sender / receiver)",
                     _pair(growth["sender"], growth["receiver"], digits=3)))  # fmt: skip
    for name in ("summer_rush", "consolidation"):
        if pg := results.get(name + POSTGRES_SUFFIX):
            label = "B2" if name == "summer_rush" else "B3"
            rows += [
                (f"{label} {name}, PostgreSQL", "wall (median)", f"{_f(pg['wall_s'], 2)} s"),
                ("", "peer: CSV + GPG (same pipeline)", f"{_f(pg['peer_wall_s'], 2)} s"),
                ("", "ratio_vs_peer (ours / peer)", _f(pg["ratio_vs_peer"], 3)),
            ]
    if t := results.get("transport_limit"):
        rows.append(
            ("transport_limit", "raw gRPC mTLS stream, 1 MiB frames", f"{_f(t['mb_s'], 0)} MB/s")
        )
    if idle := results.get("idle"):
        rows.append(("idle", "idle_rss_mb: rt serve RSS, started and settled",
                     f"{_f(idle['idle_rss_mb'])} MB"))  # fmt: skip
    if lk := results.get("registry_lookups"):
        rows.append(("registry_lookups",
                     f"LookupDistrict/s, {lk['districts']:,} districts, {lk['threads']} threads",
                     _f(lk["registry_lookups_per_s"], 0)))  # fmt: skip
    if sl := results.get("sis_load"):
        rows += [
            ("sis_load", "rows (8 tables + STU) loaded", _f(sl["rows"])),
            ("", "rt sis load, first / reload", _pair(sl["load_s"], sl["reload_s"], " s", 2)),
            ("", f"floor: {sl['floor']}", f"{_f(sl['floor_s'], 2)} s"),
            ("", "ratio_vs_sqlite3_import", _f(sl["ratio_vs_sqlite3_import"], 2)),
            ("", "peak RSS of rt sis load", f"{_f(sl['peak_rss_mb'])} MB"),
        ]
    lines = ["| scenario | figure | value |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", "| target | value | limit | holds |", "|---|---|---|---|"]
    for t in document["targets"]:
        holds = {True: "yes", False: "**no**", None: "not run"}[t["holds"]]
        value = _f(t["value"], 3)
        lines.append(f"| {t['scenario']} {t['figure']} | {value} | {t['target']} | {holds} |")
    return "\n".join(lines)
