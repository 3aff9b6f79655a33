"""Checks on the brand -> generic drug name table used by the note extractor."""

import csv
import re
from pathlib import Path

TABLE = Path(__file__).resolve().parents[2] / "features/notes/extraction/brand_generic.csv"

# lower-case words of letters, digits and hyphens, single spaces between words,
# combination products joined by " / "
_WORDS = r"[a-z0-9-]+(?: [a-z0-9-]+)*"
GENERIC_RE = re.compile(rf"{_WORDS}(?: / {_WORDS})*")


def _read() -> tuple[list[str], list[list[str]]]:
    with TABLE.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    return header, rows


def _pairs() -> list[tuple[str, str]]:
    _, rows = _read()
    return [(row[0], row[1]) for row in rows]


def test_header_is_exactly_brand_generic():
    header, _ = _read()
    assert header == ["brand", "generic"]


def test_has_at_least_250_rows():
    _, rows = _read()
    assert len(rows) >= 250


def test_every_row_has_two_cells():
    _, rows = _read()
    bad = [row for row in rows if len(row) != 2]
    assert bad == []


def test_no_empty_cells_or_surrounding_whitespace():
    bad = [
        (brand, generic)
        for brand, generic in _pairs()
        if not brand or not generic or brand != brand.strip() or generic != generic.strip()
    ]
    assert bad == []


def test_brands_unique_case_insensitively():
    seen: dict[str, str] = {}
    dupes = []
    for brand, _ in _pairs():
        key = brand.casefold()
        if key in seen:
            dupes.append((seen[key], brand))
        seen[key] = brand
    assert dupes == []


def test_generic_is_lower_case_with_allowed_characters_only():
    bad = [
        (brand, generic)
        for brand, generic in _pairs()
        if generic != generic.lower() or not GENERIC_RE.fullmatch(generic)
    ]
    assert bad == []


def test_brand_differs_from_its_generic():
    bad = [(b, g) for b, g in _pairs() if b.casefold() == g.casefold()]
    assert bad == []


def test_no_brand_is_also_a_generic():
    pairs = _pairs()
    generics = {generic.casefold() for _, generic in pairs}
    bad = [brand for brand, _ in pairs if brand.casefold() in generics]
    assert bad == []


def test_well_known_pairs_present():
    table = dict(_pairs())
    expected = {
        "Lasix": "furosemide",
        "Tylenol": "acetaminophen",
        "Robitussin": "guaifenesin",
        "Antivert": "meclizine",
        "Santyl": "collagenase",
        "Synthroid": "levothyroxine",
    }
    missing = {b: g for b, g in expected.items() if table.get(b) != g}
    assert missing == {}
