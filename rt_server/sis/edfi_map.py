"""Aeries codes -> Ed-Fi 5.2 descriptor URIs (``uri://<namespace>/<Descriptor>#<value>``).

Codes that have an Ed-Fi default descriptor value map to it under
``uri://ed-fi.org``; codes Ed-Fi has no default for (CALPADS exit codes,
performance levels, local test ids) keep their Aeries code under the
exporting district's namespace, for the receiving ODS to map.
"""

from __future__ import annotations

import re
from typing import Final

ED_FI: Final = "uri://ed-fi.org"

_GRADES: Final = {
    -2: "Preschool/Prekindergarten", -1: "Preschool/Prekindergarten", 0: "Kindergarten",
    1: "First grade", 2: "Second grade", 3: "Third grade", 4: "Fourth grade",
    5: "Fifth grade", 6: "Sixth grade", 7: "Seventh grade", 8: "Eighth grade",
    9: "Ninth grade", 10: "Tenth grade", 11: "Eleventh grade", 12: "Twelfth grade",
}  # fmt: skip
_TERMS: Final = {
    "F": "Fall Semester", "S": "Spring Semester", "U": "Summer Semester", "Y": "Year Round",
    "1": "First Quarter", "2": "Second Quarter", "3": "Third Quarter", "4": "Fourth Quarter",
}  # fmt: skip
_SEXES: Final = {"F": "Female", "M": "Male", "X": "Non-binary"}
# CVX codes of the Ed-Fi default immunization types; others are AdditionalImmunization.
_IMMUNIZATIONS: Final = {"08": "HepB", "20": "DTaP", "10": "IPV", "03": "MMR", "21": "VAR"}
_VACCINE_NAMES: Final = {
    "49": "Hib", "83": "Hepatitis A", "115": "Tdap", "114": "MenACWY",
    "165": "HPV", "150": "Influenza",
}  # fmt: skip
# CALPADS language codes -> ISO 639-3 (Ed-Fi's LanguageDescriptor values).
_LANGUAGES: Final = {
    "00": "eng", "01": "spa", "02": "vie", "03": "yue", "04": "kor", "05": "fil",
    "06": "por", "07": "cmn", "08": "jpn", "09": "khm", "11": "ara", "12": "hye",
}  # fmt: skip
_ADMIN_YEAR: Final = re.compile(r"([0-9]{4})-([0-9]{2})\b")


def uri(descriptor: str, value: str, namespace: str = ED_FI) -> str:
    return f"{namespace}/{descriptor}#{value}"


def grade_level(grade: int | None) -> str:
    return uri(
        "GradeLevelDescriptor", _GRADES.get(grade, "Ungraded") if grade is not None else "Ungraded"
    )


def term(code: str, local: str) -> str:
    known = _TERMS.get(code.upper())
    return uri("TermDescriptor", known) if known else uri("TermDescriptor", code, local)


def sex(code: str | None) -> str | None:
    known = _SEXES.get((code or "").upper())
    return uri("SexDescriptor", known) if known else None


def language(code: str, local: str) -> str:
    known = _LANGUAGES.get(code)
    return uri("LanguageDescriptor", known) if known else uri("LanguageDescriptor", code, local)


def immunization_type(cvx: str) -> str | None:
    known = _IMMUNIZATIONS.get(cvx)
    return uri("ImmunizationTypeDescriptor", known) if known else None


def vaccine_name(cvx: str) -> str:
    name = _VACCINE_NAMES.get(cvx)
    return f"CVX {cvx} ({name})" if name else f"CVX {cvx}"


def school_year_of_admin(admin: str) -> str | None:
    """``"2023-24 SPR"`` -> ``"2023-2024"``; None if the administration names no year."""
    found = _ADMIN_YEAR.match(admin)
    if found is None:
        return None
    start = int(found.group(1))
    return f"{start}-{start + 1}" if (start + 1) % 100 == int(found.group(2)) else None
