"""Moving stage outputs into KFP artifact paths (local directories the launcher uploads)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from components.common.storage import S3Storage, is_s3_uri


def write_metrics_file(metrics: Any) -> None:
    """Give a KFP Metrics artifact a file: kfp.local's cache treats a missing one as a miss."""
    path = Path(metrics.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics.metadata))


def materialize(source: str, artifact_path: str, storage: S3Storage | None = None) -> int:
    """Copy a local directory or an S3 prefix to ``artifact_path``; returns files copied."""
    dest = Path(artifact_path)
    if is_s3_uri(source):
        return len((storage or S3Storage()).download_prefix(source, dest))
    shutil.copytree(source, dest, dirs_exist_ok=True)
    return sum(1 for p in dest.rglob("*") if p.is_file())
