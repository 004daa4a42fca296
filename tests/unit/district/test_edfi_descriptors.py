"""The Ed-Fi export's descriptor values, against the Ed-Fi Alliance's own sample documents.

No list of Ed-Fi 5.2's default descriptor values was available (the XSDs
define descriptor *types*, not values). The Alliance's samples
(tests/vectors/ed-fi-5.2-samples) do use default values: every value our map
(``rt_server.sis.edfi_map``) shares a descriptor type with there must be
spelled exactly as there. Values no sample shows are listed in
``rt_server/sis/schemas/ed-fi-5.2/README.md`` as unconfirmed.
"""

from __future__ import annotations

import re
from pathlib import Path

from rt_server.sis import edfi_map

SAMPLES = Path(__file__).resolve().parents[2] / "vectors" / "ed-fi-5.2-samples"
_URI = re.compile(r"uri://ed-fi\.org/([A-Za-z]+Descriptor)#([^<\"]+)")


def _published() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for sample in SAMPLES.glob("*.xml"):
        found.update(_URI.findall(sample.read_text(encoding="utf-8")))
    return found


def test_values_the_samples_show_are_spelled_as_published() -> None:
    published = _published()
    assert ("SexDescriptor", "Female") in published  # the samples are there
    ours = {
        edfi_map.sex("F"),
        edfi_map.sex("M"),
        edfi_map.grade_level(11),
        edfi_map.language("00", "uri://district.rt"),
        *(edfi_map.immunization_type(cvx) for cvx in ("08", "20", "10", "03", "21")),
    }
    for value in ours:
        assert value is not None
        found = _URI.fullmatch(value)
        assert found is not None, value
        assert (found[1], found[2]) in published, value


def test_grade_names_follow_the_published_pattern() -> None:
    # Only "Eleventh grade" is in the samples: the others follow its form.
    for grade in range(1, 13):
        assert re.fullmatch(r"uri://ed-fi\.org/GradeLevelDescriptor#[A-Z][a-z]+ grade",
                            edfi_map.grade_level(grade))  # fmt: skip
