"""Shared fixtures: paths to the real data beside the checkout."""

from __future__ import annotations

import functools
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


# Upstream CRDs kept in the repository (Kubeflow Trainer v2; see tests/crds/SOURCE.md).
VENDORED_CRDS = ROOT / "tests" / "crds"


@pytest.fixture(scope="session")
def crds_dir(tmp_path_factory) -> Path:
    """The upstream CRDs: KServe and PyTorchJob from CRDS_DIR (``make crds``), Trainer v2's."""
    import shutil

    path = Path(os.environ.get("CRDS_DIR", ROOT.parent / "shared" / "crds"))
    if not path.is_dir():
        pytest.skip(f"upstream CRDs not found at {path} (set CRDS_DIR or run `make crds`)")
    merged = tmp_path_factory.mktemp("crds")
    for crd in [*path.glob("*.yaml"), *VENDORED_CRDS.glob("*.yaml")]:
        shutil.copy(crd, merged / crd.name)
    return merged


@functools.cache
def crd_schema(crds_dir: Path, filename: str, version: str) -> dict:
    """The openAPIV3Schema of one version of an upstream CRD (parsed once: they are large)."""
    import yaml

    crd = yaml.load(
        (crds_dir / filename).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    )
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise KeyError(f"{filename} has no version {version}")


@pytest.fixture(scope="session")
def small_model(tmp_path_factory, bert_vocab_dir) -> Path:
    """A small random BERT (2 layers, hidden 64) with the real bert-base-uncased vocabulary."""
    import json

    import torch
    from transformers import AutoTokenizer

    from components.common.inference import LABEL_MAP_FILE
    from components.common.schema import label_map_for
    from components.train.model import build_small_bert

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("small-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(bert_vocab_dir))
    model = build_small_bert(len(tokenizer), 2, 64, 2, label_map_for("star_rating"),
                             pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / LABEL_MAP_FILE).write_text(json.dumps({"max_seq_length": 32}))
    return out
