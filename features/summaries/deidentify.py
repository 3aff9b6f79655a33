"""The minimum necessary for the LLM: the patient's identifiers replaced before the notes leave,
and put back in what comes back.

Replaced: the patient's registry name (full, given and family, in any case), MRN and birth date
(in the usual written forms), and every phone number and e-mail address. The placeholders are
bracketed words no clinical text uses, so putting them back cannot touch anything else.
`LLM_DEIDENTIFY=false` turns this off, for an LLM run inside the hospital.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

GIVEN_NAME = "[PATIENT_GIVEN_NAME]"
FAMILY_NAME = "[PATIENT_FAMILY_NAME]"
MRN = "[PATIENT_MRN]"
BIRTH_DATE = "[PATIENT_BIRTH_DATE]"

_PHONE = re.compile(
    r"(?<![\w/.-])(?:\+?\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w/-])"
)
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_PLACEHOLDER = re.compile(r"\[PATIENT_[A-Z_]+(?:_\d+)?\]")


def _date_forms(day: date) -> list[str]:
    """How a birth date is written in notes: 1950-06-15, 06/15/1950, 6/15/1950, 15/06/1950,
    June 15, 1950, 15 June 1950, Jun 15 1950."""
    month = day.strftime("%B")
    forms = {
        day.isoformat(),
        f"{day.month:02d}/{day.day:02d}/{day.year}",
        f"{day.month}/{day.day}/{day.year}",
        f"{day.day:02d}/{day.month:02d}/{day.year}",
        f"{day.day}/{day.month}/{day.year}",
        f"{day.month}-{day.day}-{day.year}",
        f"{day.month:02d}-{day.day:02d}-{day.year}",
    }
    for name in (month, month[:3]):
        forms |= {f"{name} {day.day}, {day.year}", f"{name} {day.day} {day.year}"}
        forms |= {f"{day.day} {name} {day.year}", f"{day.day} {name}, {day.year}"}
    return sorted(forms, key=len, reverse=True)


def _words(value: str) -> str:
    """A name as a pattern: whole words, any case, any run of spaces between its parts."""
    return r"\s+".join(re.escape(part) for part in value.split())


@dataclass
class Deidentifier:
    given_name: str
    family_name: str
    mrn: str
    birth_date: date
    enabled: bool = True
    # What each numbered placeholder stands for (phones and e-mails), filled while scrubbing.
    originals: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        fixed: list[tuple[str, str]] = [(self.mrn, MRN)]
        fixed += [(form, BIRTH_DATE) for form in _date_forms(self.birth_date)]
        names = [(self.family_name, FAMILY_NAME), (self.given_name, GIVEN_NAME)]
        # Longest first, so "Mary Ann" goes before "Mary".
        self._fixed = [
            (re.compile(rf"(?<![\w/-]){re.escape(value)}(?![\w/-])"), placeholder)
            for value, placeholder in fixed
            if value.strip()
        ]
        self._names = [
            (re.compile(rf"(?<!\w){_words(value)}(?!\w)", re.IGNORECASE), placeholder)
            for value, placeholder in sorted(names, key=lambda pair: -len(pair[0]))
            if value.strip()
        ]
        self.originals.update(
            {
                GIVEN_NAME: self.given_name,
                FAMILY_NAME: self.family_name,
                MRN: self.mrn,
                BIRTH_DATE: self.birth_date.isoformat(),
            }
        )

    def _numbered(self, kind: str) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            found = match.group(0)
            for placeholder, original in self.originals.items():
                if original == found and placeholder.startswith(f"[PATIENT_{kind}_"):
                    return placeholder
            count = sum(p.startswith(f"[PATIENT_{kind}_") for p in self.originals) + 1
            placeholder = f"[PATIENT_{kind}_{count}]"
            self.originals[placeholder] = found
            return placeholder

        return replace

    def scrub(self, text: str) -> str:
        """The text with the patient's identifiers replaced by placeholders."""
        if not self.enabled or not text:
            return text
        text = _EMAIL.sub(self._numbered("EMAIL"), text)
        for pattern, placeholder in self._fixed:
            text = pattern.sub(placeholder, text)
        text = _PHONE.sub(self._numbered("PHONE"), text)
        for pattern, placeholder in self._names:
            text = pattern.sub(placeholder, text)
        return text

    def restore(self, text: str) -> str:
        """Placeholders in an answer put back as what they stood for."""
        if not self.enabled:
            return text
        return _PLACEHOLDER.sub(lambda m: self.originals.get(m.group(0), m.group(0)), text)

    def scrub_all(self, value: Any, *, keep: frozenset[str] = frozenset()) -> Any:
        """Every string inside dicts and lists scrubbed, but those under the keys `keep`."""
        return _walk(value, self.scrub, keep)

    def restore_all(self, value: Any) -> Any:
        return _walk(value, self.restore, frozenset())


def _walk(value: Any, change: Callable[[str], str], keep: frozenset[str]) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {k: v if k in keep else _walk(v, change, keep) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(item, change, keep) for item in value]
    return value
