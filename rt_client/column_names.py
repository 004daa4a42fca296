"""A short human name for each column of the eight record tables (Aeries' codes), the one
table of them: the console shows "MK — Mark" beside each code, and ``rt_server.core.tables``
refuses to load if one of its declared columns has no name here.

Names are per table: a code can mean different things in two tables (``SC`` is a school in
ENR and a score in CST and PFT).
"""

from __future__ import annotations

from typing import Final

__all__ = ["COLUMN_NAMES", "column_name"]

_SUBTESTS: Final = {
    name: text
    for n in range(1, 14)
    for name, text in ((f"ST{n}", f"Subtest {n}"), (f"SC{n}", f"Subtest {n} score"))
}

COLUMN_NAMES: Final[dict[str, dict[str, str]]] = {
    "TST": {
        "ID": "Test",
        "PT": "Part",
        "TA": "Administration",
        "TD": "Test date",
        "GR": "Grade",
        "TY": "Test type",
        "SS": "Scale score",
        "PL": "Performance level",
        "PC": "Percentile",
    },
    "CST": {
        "ID": "Test",
        "SD": "Content standard",
        "TA": "Administration",
        "TD": "Test date",
        "SC": "Score",
        "PL": "Performance level",
    },
    "CTS": {"NM": "Test name", "DT": "Test date", "TTL": "Total score", **_SUBTESTS},
    "HIS": {
        "YR": "School year",
        "GR": "Grade",
        "TE": "Term",
        "CN": "Course number",
        "CO": "Course title",
        "MK": "Mark",
        "CR": "Credit attempted",
        "CC": "Credit completed",
        "ST": "School",
        "CI": "Citizenship",
        "RT": "Repeat tag",
        "DC": "Date changed",
        "CH": "Honors / credit flag",
        "PF": "Pass/fail",
    },
    "ENR": {
        "SC": "School",
        "YR": "School year",
        "GR": "Grade",
        "ED": "Enter date",
        "LD": "Leave date",
        "ER": "Exit reason",
    },
    "IMM": {"VC": "Vaccine", "DN": "Dose number", "DT": "Dose date"},
    "LAC": {
        "L1": "First language",
        "L2": "Primary language",
        "L3": "Home language",
        "AC": "Assessment",
        "AD": "Assessment date",
        "LV": "Level",
    },
    "PFT": {
        "TD": "Test date",
        "CP": "Component",
        "SC": "Score",
        "HF": "Healthy fitness zone",
        "GR": "Grade",
    },
}
# Every table's bookkeeping columns.
for _names in COLUMN_NAMES.values():
    _names.update({"SQ": "Sequence", "SRC": "Source", "PID": "Student"})


def column_name(table: str, column: str) -> str:
    """The human name of ``table``'s ``column`` (codes as Aeries writes them); "" if none."""
    return COLUMN_NAMES.get(table.upper(), {}).get(column.upper(), "")
