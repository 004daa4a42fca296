"""Letters and copies for parents, as PDF (fpdf2) and CSV bytes: pure, data in, bytes out.

- The notice of disclosure, 34 CFR 99.34(a)(1): the district "makes a reasonable
  attempt to notify the parent ... at the last known address", unless the
  annual notice says it forwards records on request, or the parent asked.
- The parent's copy of what was disclosed, 34 CFR 99.34(a)(1)(ii) / (a)(2):
  given "upon request".

Text uses a Unicode TrueType font when the system has one (DejaVu Sans), so
names such as "Nguyễn" print as written; otherwise PDF's core Helvetica, with
characters it lacks replaced by "?" (and the CSV copy keeps them exactly).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fpdf import FPDF

from rt_server.core.tables import TABLES

__all__ = ["DisclosureFacts", "disclosed_copy_csv", "disclosed_copy_pdf", "parent_notice_pdf"]

_FONTS: Final = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),
)

TABLE_NAMES: Final[Mapping[str, str]] = {
    "HIS": "course history (transcript)",
    "TST": "test scores",
    "CST": "state test scores (CST)",
    "CTS": "test scores (CTS)",
    "ENR": "enrollment history",
    "IMM": "immunizations",
    "LAC": "language assessment",
    "PFT": "physical fitness test",
}


@dataclass(frozen=True)
class DisclosureFacts:
    """One disclosure, as a letter tells it."""

    notice_id: int
    district: str  # ours
    student_name: str  # "Last, First Middle"
    student_local_id: str
    receiving_district: str
    receiving_school: str
    disclosed_at: dt.datetime
    legal_basis: str
    request_id: str
    counts: Sequence[tuple[str, int]]  # (table code, rows), what was sent


class _Pdf(FPDF):
    def __init__(self) -> None:
        super().__init__(format="Letter")
        self.set_margins(22, 22, 22)
        self.set_auto_page_break(auto=True, margin=20)
        font = next((f for f in _FONTS if f.is_file()), None)
        if font is not None:
            self.add_font("Body", "", str(font))
            self._family, self._unicode = "Body", True
        else:
            self._family, self._unicode = "Helvetica", False
        self.add_page()
        self.set_font(self._family, size=11)

    def para(self, text: str, size: int = 11, gap: float = 3) -> None:
        if not self._unicode:
            text = text.encode("latin-1", "replace").decode("latin-1")
        self.set_font(self._family, size=size)
        self.multi_cell(0, size * 0.5, text, align="L", new_x="LMARGIN", new_y="NEXT")
        self.ln(gap)


def parent_notice_pdf(facts: DisclosureFacts, today: dt.date) -> bytes:
    """The 34 CFR 99.34(a)(1) notice of disclosure, one page, as PDF bytes."""
    pdf = _Pdf()
    sent = ", ".join(
        f"{TABLE_NAMES.get(code, code)} ({n} {'entry' if n == 1 else 'entries'})"
        for code, n in facts.counts
    )
    pdf.para(f"School district {facts.district}", size=13)
    pdf.para(f"{today:%B} {today.day}, {today.year}")
    pdf.para(
        "To the parent or guardian of\n"
        f"{facts.student_name} (student number {facts.student_local_id})\n"
        "[mailing address: as in the student information system]",
        gap=6,
    )
    pdf.para("Notice of disclosure of education records", size=13)
    pdf.para(
        f"On {facts.disclosed_at:%B} {facts.disclosed_at.day}, {facts.disclosed_at.year}, "
        f"this district sent the following education records of {facts.student_name} to "
        f"school {facts.receiving_school} of district {facts.receiving_district}, where the "
        f"student seeks or intends to enroll: {sent or 'no records'}."
    )
    pdf.para(
        f"The records were sent under {facts.legal_basis}. Federal law (the Family "
        "Educational Rights and Privacy Act, 34 CFR 99.34) asks us to tell you of this "
        "disclosure."
    )
    pdf.para(
        "You may ask us for a copy of the records that were disclosed (34 CFR 99.34(a)(1)(ii)). "
        "If you believe anything in them is inaccurate, misleading or in violation of the "
        "student's privacy, you may ask us to amend it and, if we decline, ask for a hearing "
        "(34 CFR 99.34(a)(1)(iii); 99.20-99.22)."
    )
    pdf.para(
        f"Please contact the district's records office and quote reference "
        f"{facts.request_id[:8]}-{facts.notice_id}."
    )
    return bytes(pdf.output())


def disclosed_copy_pdf(
    facts: DisclosureFacts, rows: Mapping[str, Sequence[Mapping[str, Any]]], today: dt.date
) -> bytes:
    """The parent's copy of the disclosed records (34 CFR 99.34(a)(2)), one section a table."""
    pdf = _Pdf()
    pdf.para(f"School district {facts.district}", size=13)
    pdf.para(
        f"Copy of the education records of {facts.student_name} (student number "
        f"{facts.student_local_id}) disclosed on {facts.disclosed_at:%Y-%m-%d} to school "
        f"{facts.receiving_school} of district {facts.receiving_district}. Prepared "
        f"{today.isoformat()}. Rows are shown as the district holds them on that date.",
    )
    for code, n in facts.counts:
        table_rows = rows.get(code, [])
        pdf.para(f"{TABLE_NAMES.get(code, code)} ({code}): {n} sent", size=12, gap=1)
        for row in table_rows:
            text = "; ".join(f"{k}={_text(v)}" for k, v in row.items() if v not in (None, ""))
            pdf.para(text, size=9, gap=1)
        pdf.ln(2)
    return bytes(pdf.output())


def disclosed_copy_csv(
    facts: DisclosureFacts, rows: Mapping[str, Sequence[Mapping[str, Any]]]
) -> bytes:
    """The same copy as CSV (UTF-8): table, column, value, one line per field of each row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["table", "sq", "column", "value"])
    for code, _ in facts.counts:
        columns = [c.name for c in TABLES[code].stored_columns] if code in TABLES else []
        for row in rows.get(code, []):
            for column in columns or list(row):
                value = row.get(column)
                if column != "SQ" and value not in (None, ""):
                    writer.writerow([code, row.get("SQ", ""), column, _cell(_text(value))])
    return out.getvalue().encode("utf-8")


def _cell(text: str) -> str:
    # A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "@", "\t", "\r") else text


def _text(value: object) -> str:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return "Y" if value else "N"
    return str(value)
