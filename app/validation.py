"""Input types shared by every feature's schemas."""

import re
from typing import Annotated

from pydantic import AfterValidator

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def reject_control_characters(value: str) -> str:
    # PostgreSQL cannot store NUL in text, and no name or search needs a control character:
    # refuse them here (422 naming the field), not in the database (500).
    if _CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters")
    return value


NoControlCharacters = AfterValidator(reject_control_characters)
# One line of text: what query parameters and short fields accept.
PlainText = Annotated[str, NoControlCharacters]
