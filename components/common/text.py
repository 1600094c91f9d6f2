"""How review text is cleaned, in one place.

Ingest (its JVM twin is checked against this), the predictor (so a served review is what the
model was trained on) and the monitor's text properties all use it.
"""

from __future__ import annotations

import html
import re

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACE = re.compile(r"\s+")


def clean_text(text: str | None) -> str | None:
    """Decode HTML entities, turn ``<br />`` into spaces, drop control chars, collapse space."""
    if text is None:
        return None
    text = _BR.sub(" ", text)
    text = html.unescape(text)
    text = _BR.sub(" ", text)  # entities can encode tags: &lt;br /&gt;
    text = _CONTROL.sub(" ", text)
    return _SPACE.sub(" ", text).strip()
