"""Logging set-up, called once from each entry point's ``main()``."""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(level: str | int | None = None, rank: int | None = None) -> None:
    """Log to stderr; rank 0 (or a non-distributed process) at ``level``, other ranks at WARNING."""
    if rank is None:
        rank = int(os.environ.get("RANK", "0"))
    if level is None:
        level = os.environ.get("LOG_LEVEL", "INFO")
    effective = level if rank == 0 else logging.WARNING
    logging.basicConfig(level=effective, format=FORMAT, stream=sys.stderr, force=True)
    # Chatty libraries whose INFO lines drown ours.
    for name in ("botocore", "boto3", "urllib3", "s3transfer", "py4j", "filelock"):
        logging.getLogger(name).setLevel(logging.WARNING)
