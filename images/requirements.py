"""Requirements of an image: the project's dependencies at the lock's versions, torch per variant.

``python requirements.py pyproject.toml constraints.txt --torch cuda > requirements.txt``

The lock (constraints.txt) pins the CPU build ``torch==2.13.0+cpu`` that this machine's tests
use; the train and serve images need the CUDA build of the same release (PyPI's Linux wheel)
and the spark image the CPU build (PyTorch's CPU index). Everything else keeps the lock's pin.
Dev-only packages of the lock are never installed: they are constraints, not requirements.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

TORCH = {"cpu": "torch=={version}+cpu", "cuda": "torch=={version}"}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[=<>!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def image_requirements(pyproject: str, constraints: str, torch: str) -> tuple[str, str]:
    """(requirements text, constraints text) for an image with the ``torch`` variant."""
    deps = tomllib.loads(pyproject)["project"]["dependencies"]
    pins = [line for line in constraints.splitlines() if line and not line.startswith("#")]
    torch_pin = next((p for p in pins if _name(p) == "torch"), None)
    if torch_pin is None:
        raise SystemExit("constraints.txt pins no torch")
    version = torch_pin.split("==", 1)[1].split("+", 1)[0]
    requirements = [TORCH[torch].format(version=version)]
    requirements += [d for d in deps if _name(d) != "torch"]
    kept = [p for p in pins if _name(p) != "torch"]
    return "\n".join(requirements) + "\n", "\n".join(kept) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the requirements; write the constraints they refer to beside ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("constraints", type=Path)
    parser.add_argument("--torch", choices=sorted(TORCH), required=True)
    parser.add_argument("--constraints-out", type=Path, default=Path("/tmp/image-constraints.txt"))
    args = parser.parse_args(argv)
    requirements, constraints = image_requirements(
        args.pyproject.read_text(), args.constraints.read_text(), args.torch
    )
    args.constraints_out.write_text(constraints)
    sys.stdout.write(f"-c {args.constraints_out}\n{requirements}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
