"""Compile the pipelines to YAML: ``python -m pipelines.compile [--output PATH]``.

Both are checked in beside their code: ``review_classifier.yaml`` (training) and
``batch_score.yaml`` (batch scoring).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kfp import compiler

from components.common.images import DEFAULT_REGISTRY, DEFAULT_TAG, retarget
from components.common.settings import Settings
from pipelines.batch_score import batch_score
from pipelines.review_classifier import review_classifier

DEFAULT_OUTPUT = Path(__file__).with_name("review_classifier.yaml")
PIPELINES: dict[str, Any] = {"review-classifier": review_classifier, "batch-score": batch_score}
OUTPUTS = {"review-classifier": DEFAULT_OUTPUT,
           "batch-score": Path(__file__).with_name("batch_score.yaml")}  # fmt: skip


def compile_pipeline(output: Path = DEFAULT_OUTPUT, name: str = "review-classifier",
                     registry: str = DEFAULT_REGISTRY, tag: str = DEFAULT_TAG) -> Path:  # fmt: skip
    """Compile one pipeline to ``output`` with its images at ``registry``/``tag``."""
    compiler.Compiler().compile(PIPELINES[name], str(output))
    if (registry, tag) != (DEFAULT_REGISTRY, DEFAULT_TAG):
        output.write_text(retarget(output.read_text(), registry, tag))
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.compile", description=__doc__)
    parser.add_argument("--pipeline", choices=[*PIPELINES, "all"], default="all",
                        help="which pipeline to compile")  # fmt: skip
    parser.add_argument("--output", type=Path, default=None,
                        help="YAML to write (one pipeline; default: beside its code)")  # fmt: skip
    parser.add_argument("--image-registry", default=None,
                        help="registry of the images (default: IMAGE_REGISTRY)")  # fmt: skip
    parser.add_argument("--image-tag", default=None,
                        help="tag of the images (default: IMAGE_TAG)")  # fmt: skip
    args = parser.parse_args(argv)
    settings = Settings.from_env()  # the command line is where the environment is read
    registry = args.image_registry or settings.image_registry
    tag = args.image_tag or settings.image_tag
    names = list(PIPELINES) if args.pipeline == "all" else [args.pipeline]
    if args.output and len(names) > 1:
        names = ["review-classifier"]  # --output alone keeps its old meaning
    for name in names:
        print(compile_pipeline(args.output or OUTPUTS[name], name, registry, tag))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
