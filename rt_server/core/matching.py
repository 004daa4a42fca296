"""Propose which of our students a request is about (DESIGN.md section 4, step 2).

An SSID that matches is an exact match (confidence 100). Otherwise students are
proposed by legal last name, birth date, gender and first name, compared case-
and accent-insensitively ("Nuñez" = "NUNEZ", "O'Brien" = "OBRIEN"), and ranked
by a confidence below 100: a human confirms any match that is not exact.

Pure: ``rank_candidates`` scores the students it is given. Which students
those are (the one with the request's SSID; those sharing its last name key or
birth date) is read by ``rt_server.store.candidates.match_student``.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Final

from rt_server.core.model import StudentIdentity, StudentRecord

__all__ = [
    "MAX_CANDIDATES",
    "NAME_KEY_LEN",
    "Candidate",
    "StudentIdentity",
    "exact_match",
    "name_key",
    "rank_candidates",
]

MAX_CANDIDATES: Final = 10
# A name key is cut to this many characters (folding can lengthen a name:
# "ß" -> "ss"); the students table keeps the keys in columns this wide.
NAME_KEY_LEN: Final = 50
# Below this a candidate is noise: e.g. same birth date and gender only.
_MIN_CONFIDENCE: Final = 50

# Weights: last name 35, birth date 35, first name 15, gender 10, middle name 4.
# The total for a perfect non-SSID match is 99: 100 means "SSID matched".
_LAST, _LAST_PART, _BIRTH, _FIRST, _FIRST_PART, _GENDER, _MIDDLE = 35, 22, 35, 15, 8, 10, 4
_SSID_DIFFERS: Final = 25

# Letters that Unicode does not decompose into a base letter plus accents.
_FOLD: Final = str.maketrans(
    {"đ": "d", "ø": "o", "ł": "l", "æ": "ae", "œ": "oe", "þ": "th", "ð": "d", "ı": "i"}
)
_WORD: Final = re.compile(r"[^\W_]+")


def _fold(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).translate(_FOLD)


def name_key(name: str | None) -> str:
    """``name`` folded for comparison: no case, accents, spaces or punctuation.

    "Nuñez" -> "nunez", "O'Brien" -> "obrien", "Đặng" -> "dang".
    """
    if not name:
        return ""
    return "".join(_WORD.findall(_fold(name)))[:NAME_KEY_LEN]


def _name_parts(name: str | None) -> set[str]:
    """The folded words of a name: "López-Ramírez" -> {"lopez", "ramirez"}."""
    return set(_WORD.findall(_fold(name))) if name else set()


@dataclass(frozen=True)
class Candidate:
    """A student of ours that may be the one requested."""

    student: StudentRecord
    confidence: int  # 0..100; 100 only for an SSID match
    exact: bool  # the SSID matched
    why: str  # e.g. "last name, birth date, gender match; first name similar"

    @property
    def local_id(self) -> str:
        return self.student.local_id


def _similar(a: str, b: str) -> bool:
    return bool(a) and bool(b) and SequenceMatcher(None, a, b).ratio() >= 0.8


def _score(identity: StudentIdentity, student: StudentRecord) -> tuple[int, list[str], list[str]]:
    """Confidence, what matches and what is only similar or different."""
    score = 0
    matched: list[str] = []
    partly: list[str] = []

    want_last, have_last = name_key(identity.legal_last_name), name_key(student.legal_last_name)
    if want_last and want_last == have_last:
        score += _LAST
        matched.append("last name")
    elif _name_parts(identity.legal_last_name) & _name_parts(student.legal_last_name):
        score += _LAST_PART
        partly.append("last name partly matches")
    elif _similar(want_last, have_last):
        score += _LAST_PART
        partly.append("last name similar")

    if identity.birth_date is not None and identity.birth_date == student.birth_date:
        score += _BIRTH
        matched.append("birth date")
    elif identity.birth_date is not None and _transposed(identity.birth_date, student.birth_date):
        score += _BIRTH // 2
        partly.append("birth date with day and month swapped")

    if identity.gender and student.gender and identity.gender.upper() == student.gender.upper():
        score += _GENDER
        matched.append("gender")

    want_first, have_first = name_key(identity.legal_first_name), name_key(student.legal_first_name)
    if want_first and want_first == have_first:
        score += _FIRST
        matched.append("first name")
    elif _similar(want_first, have_first) or (
        # "Jo" for "Josefina", "Alex" for "Alexander"
        len(want_first) >= 2 and len(have_first) >= 2
        and (want_first.startswith(have_first) or have_first.startswith(want_first))
    ):  # fmt: skip
        score += _FIRST_PART
        partly.append("first name similar")

    want_middle = name_key(identity.legal_middle_name)
    if want_middle and want_middle == name_key(student.legal_middle_name):
        score += _MIDDLE
        matched.append("middle name")
    return min(score, 99), matched, partly


def _transposed(a: dt.date, b: dt.date) -> bool:
    """Day and month swapped (03/04 vs 04/03), a common data-entry slip."""
    return a.year == b.year and a.month == b.day and a.day == b.month and a != b


def _why(matched: list[str], partly: list[str]) -> str:
    parts = []
    if matched:
        parts.append(", ".join(matched) + (" match" if len(matched) > 1 else " matches"))
    parts.extend(partly)
    return "; ".join(parts) or "no details match"


def rank_candidates(
    identity: StudentIdentity,
    by_ssid: StudentRecord | None,
    students: Iterable[StudentRecord],
) -> list[Candidate]:
    """Which of ``students`` may be ``identity``, best first, at most ``MAX_CANDIDATES``.

    ``by_ssid`` is our student whose SSID equals the request's, if any: it
    comes first (confidence 100, ``exact=True``; ``why`` notes any demographic
    that disagrees, which a registrar should look at). Then ``students`` (those
    sharing the last name or the birth date, in local id order), scored on last
    name, birth date, gender and first/middle name, those scoring at least 50,
    ties broken by local id.
    """
    results: list[Candidate] = []
    seen: set[str] = set()
    if by_ssid is not None:
        _, matched, _partly = _score(identity, by_ssid)
        disagree = []
        if name_key(identity.legal_last_name) and "last name" not in matched:
            disagree.append("last name")
        if identity.birth_date is not None and "birth date" not in matched:
            disagree.append("birth date")
        why = "SSID matches"
        if disagree:
            why += "; but " + " and ".join(disagree) + " differ"
        results.append(Candidate(by_ssid, 100, True, why))
        seen.add(by_ssid.local_id)

    scored: list[Candidate] = []
    for student in students:
        if student.local_id in seen:
            continue
        confidence, matched, partly = _score(identity, student)
        if identity.ssid and student.ssid and identity.ssid != student.ssid:
            # SSIDs are statewide and unique: a different one is strong evidence
            # of a different student (a twin, a namesake), though not proof.
            confidence -= _SSID_DIFFERS
            partly.append("but SSID differs")
        if confidence >= _MIN_CONFIDENCE:
            scored.append(Candidate(student, confidence, False, _why(matched, partly)))
    scored.sort(key=lambda c: (-c.confidence, c.student.local_id))
    results.extend(scored)
    return results[:MAX_CANDIDATES]


def exact_match(identity: StudentIdentity, candidates: Iterable[Candidate]) -> Candidate | str:
    """The one candidate that is ``identity`` beyond doubt, or why there is none.

    Beyond doubt: its SSID is the request's (``exact``), and so are its birth
    date and legal first and last names (compared as ``name_key`` compares them:
    no case, accents, spaces or punctuation). What a batch approves unseen;
    anything less is for a person to confirm (``rt match``).
    """
    if not identity.ssid:
        return "the request gives no SSID"
    by_ssid = next((c for c in candidates if c.exact), None)
    if by_ssid is None:
        return "no student here has the request's SSID"
    student = by_ssid.student
    differ = []
    if identity.birth_date is None or identity.birth_date != student.birth_date:
        differ.append("birth date")
    if not name_key(identity.legal_first_name) or name_key(identity.legal_first_name) != name_key(
        student.legal_first_name
    ):
        differ.append("first name")
    if not name_key(identity.legal_last_name) or name_key(identity.legal_last_name) != name_key(
        student.legal_last_name
    ):
        differ.append("last name")
    if differ:
        verb = "differs" if len(differ) == 1 else "differ"
        return f"the SSID matches student {student.local_id}, but the {' and '.join(differ)} {verb}"
    return by_ssid
