"""Image references of the pipeline's components: pure names, nothing read at import.

Components name their image with :func:`image` at decoration time, which gives the default
``ghcr.io/review-classifier/<name>:<project version>``; the registry and tag a cluster uses are
chosen when the pipeline is compiled (``pipelines.compile.compile_pipeline(registry=, tag=)``,
from IMAGE_REGISTRY/IMAGE_TAG at the command line), and :func:`retarget` rewrites them there.
Importing a component therefore never reads the environment or ``./.env``.
"""

from __future__ import annotations

import re

IMAGE_NAMES = ("spark", "train", "serve")
DEFAULT_REGISTRY = "ghcr.io/review-classifier"
DEFAULT_TAG = "0.1.0"  # the project version


def image(name: str, registry: str = DEFAULT_REGISTRY, tag: str = DEFAULT_TAG) -> str:
    """``<registry>/<name>:<tag>`` for one of the project's images."""
    if name not in IMAGE_NAMES:
        raise ValueError(f"unknown image {name!r}; one of: {', '.join(IMAGE_NAMES)}")
    return f"{registry.rstrip('/')}/{name}:{tag}"


def retarget(pipeline_yaml: str, registry: str, tag: str) -> str:
    """A compiled pipeline with its default image references moved to ``registry``/``tag``."""
    names = "|".join(IMAGE_NAMES)
    pattern = re.compile(
        rf"^(\s+image: ){re.escape(DEFAULT_REGISTRY)}/({names}):{re.escape(DEFAULT_TAG)}$", re.M
    )
    return pattern.sub(lambda m: m.group(1) + image(m.group(2), registry, tag), pipeline_yaml)
