"""Shared fixtures: paths to the real data beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DATA_DIR", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def reviews_dir() -> Path:
    path = SHARED / "reviews"
    if not path.is_dir():
        pytest.skip(f"real review samples not found at {path} (set SHARED_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def bert_vocab_dir() -> Path:
    path = SHARED / "bert-base-uncased-tokenizer"
    if not path.is_dir():
        pytest.skip(f"bert-base-uncased tokenizer not found at {path} (set SHARED_DATA_DIR)")
    return path
