"""Compile the pipeline to YAML: ``python -m pipelines.compile [--output PATH]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from kfp import compiler

from pipelines.review_classifier import review_classifier

DEFAULT_OUTPUT = Path(__file__).with_name("review_classifier.yaml")


def compile_pipeline(output: Path = DEFAULT_OUTPUT) -> Path:
    compiler.Compiler().compile(review_classifier, str(output))
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.compile", description=__doc__)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="YAML file to write")
    args = parser.parse_args(argv)
    print(compile_pipeline(args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
