"""Spark's and py4j's errors as one line a user can act on: which input, and why."""

from __future__ import annotations

import re

from components.common.errors import InvalidInput


def error_summary(e: Exception) -> str:
    """The most telling line of a Spark/py4j error (the innermost cause), not the trace."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    exception = r"^(?:Caused by:\s*|:\s*)?([\w.$]+(?:Error|Exception)\b.*)"
    causes = [m.group(1) for line in lines if (m := re.match(exception, line))]
    return (causes[-1] if causes else lines[0] if lines else type(e).__name__)[:300]


def read_failure(e: Exception, inputs: dict[str, str]) -> InvalidInput:
    """One line for a failed Spark job: the input file it names (as the user named it), why.

    ``inputs`` maps what Spark read (a local path or an s3a:// URI) to the input's name.
    """
    summary = error_summary(e)
    match = re.search(r"((?:s3a|file):/+[^\s,'\"]+?)\.?(?:\s|$)", str(e))
    if not match:
        return InvalidInput(f"Spark failed: {summary}")
    named = match.group(1)
    local = re.sub(r"^file:/+", "/", named)
    display = inputs.get(named) or inputs.get(local) or named
    if display.endswith(".gz") and re.search(r"EOFException|ZipException|gzip", summary):
        return InvalidInput(f"{display}: unreadable gzip ({summary})")
    return InvalidInput(f"Spark failed on {display}: {summary}")
