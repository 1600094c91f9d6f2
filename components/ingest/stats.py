"""What an ingest run counts and times: ``stats.json``, its stage timer and its sums."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from components.common.errors import PlatformError
from components.ingest import inputs as raw_inputs

logger = logging.getLogger(__name__)


@dataclass
class Stats:
    """What ``stats.json`` holds; the sums are checked before it is written."""

    rows_read: int = 0
    rows_accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    classes_before: dict[str, int] = field(default_factory=dict)
    classes_after: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    split_classes: dict[str, dict[str, int]] = field(default_factory=dict)
    label_map: dict = field(default_factory=dict)
    inputs: list[dict] = field(default_factory=list)
    input_status: dict[str, str] = field(default_factory=dict)
    data_version: str = ""
    feedback: dict = field(default_factory=dict)
    read_path: str = ""
    text_cleaner: str = ""
    blank_lines: int = 0
    # repeated normalized texts before the split, and the policy that kept one row of each
    text_duplicates: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)


class StageTimer:
    """Logs each stage as it starts and ends, and records its wall time."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        logger.info("▶ %s", name)
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 3)
        logger.info("✔ %s (%.1fs)", name, self.timings[name])


def data_version(files: list[raw_inputs.InputFile]) -> str:
    """A short digest of the input list and each file's version: the lineage data version."""
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.uri):
        digest.update(f"{f.uri}\0{f.size}\0{f.version}\n".encode())
    return digest.hexdigest()[:16]


def record_counts(stats: Stats, counts: list[Any], label_map: Any, blank: str) -> dict[int, int]:
    """Rows read, rejected by reason and accepted per class, from (reason, label, count) rows.

    Blank lines are counted apart. Returns the accepted rows per label id.
    """
    before: dict[int, int] = {}
    for row in counts:
        if row["reason"] == blank:
            stats.blank_lines += row["count"]
            continue
        stats.rows_read += row["count"]
        if row["reason"] is None:
            before[row["label"]] = before.get(row["label"], 0) + row["count"]
        else:
            stats.rejected[row["reason"]] += row["count"]
    stats.rows_accepted = sum(before.values())
    stats.classes_before = {label_map.id2label[k]: v for k, v in sorted(before.items())}
    logger.info(
        "rows read %d, accepted %d, rejected %s",
        stats.rows_read, stats.rows_accepted, {k: v for k, v in stats.rejected.items() if v},
    )  # fmt: skip
    return before


def record_splits(stats: Stats, counts: list[Any], label_map: Any, split_names: tuple) -> None:
    """Rows per split and class, from sorted (split, label, count) rows."""
    for row in counts:
        per = stats.split_classes.setdefault(row["split"], {})
        per[label_map.id2label[row["label"]]] = row["count"]
    for name in split_names:
        stats.splits[name] = sum(stats.split_classes.get(name, {}).values())
    after: dict[str, int] = {}
    for per in stats.split_classes.values():
        for label, n in per.items():
            after[label] = after.get(label, 0) + n
    stats.classes_after = {
        name: after[name] for name in label_map.id2label.values() if name in after
    }


def check_sums(stats: Stats) -> None:
    """Nothing vanishes: accepted + rejected = read, and splits add up to what was kept."""
    if stats.rows_accepted + sum(stats.rejected.values()) != stats.rows_read:
        raise PlatformError(f"row accounting is off: {stats.rows_read} read, {stats}")
    dropped = stats.text_duplicates.get("rows_dropped", 0)
    if stats.text_duplicates and sum(stats.classes_after.values()) > stats.rows_accepted - dropped:
        raise PlatformError(f"dedupe accounting is off: {stats.text_duplicates}, {stats}")
    if sum(stats.splits.values()) != sum(stats.classes_after.values()):
        raise PlatformError(f"split accounting is off: {stats.splits} vs {stats.classes_after}")
