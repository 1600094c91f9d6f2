"""What every stage's ``main()`` does around its work: logging, and one line for a failure."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from components.common.errors import PlatformError
from components.common.logs import configure_logging

T = TypeVar("T")


def run_stage(stage: str, work: Callable[[], T]) -> T | None:
    """Run ``work`` with logging set up; a PlatformError prints one line and returns None."""
    configure_logging()
    try:
        return work()
    except PlatformError as e:
        print(f"{stage} failed: {e}", file=sys.stderr)
        return None
