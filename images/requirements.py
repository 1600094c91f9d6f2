"""Requirements of an image: the core dependencies plus the image's group, at the lock's versions.

``python requirements.py pyproject.toml constraints.txt --group train --torch cuda``

Each image installs only what its stage imports: the project's core ``dependencies`` and its own
optional-dependency group (``spark``, ``train`` or ``serve``), each pinned by the lock
(constraints.txt). The train and serve images take PyPI's Linux torch wheel (CUDA libraries
as dependencies); the spark image the CPU build of the same release (PyTorch's CPU index).
Dev-only packages of the lock are never installed: they are constraints, not requirements.

``--sizes`` prints, for each image, the packages its requirement set pulls in (resolved through
the installed distributions' metadata, markers and extras) and their installed size on this
machine; ``make image-sizes`` records it in ``images/sizes.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

TORCH = {"cpu": "torch=={version}+cpu", "cuda": "torch=={version}"}
GROUPS = {"spark": "cpu", "train": "cuda", "serve": "cuda"}  # image -> torch variant


def _name(requirement: str) -> str:
    return re.split(r"[\s\[=<>!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def group_requirements(pyproject: str, group: str) -> list[str]:
    """The core dependencies and ``group``'s, as written in pyproject.toml (torch included)."""
    project = tomllib.loads(pyproject)["project"]
    groups = project.get("optional-dependencies", {})
    if group not in groups:
        raise SystemExit(f"pyproject.toml has no optional-dependencies group {group!r}")
    seen: dict[str, str] = {}
    for requirement in [*project["dependencies"], *groups[group]]:
        seen.setdefault(_name(requirement), requirement)
    return list(seen.values())


def image_requirements(pyproject: str, constraints: str, group: str,
                       torch: str | None = None) -> tuple[str, str]:  # fmt: skip
    """(requirements text, constraints text) for the image of ``group``."""
    torch = torch or GROUPS[group]
    pins = [line for line in constraints.splitlines() if line and not line.startswith("#")]
    torch_pin = next((p for p in pins if _name(p) == "torch"), None)
    if torch_pin is None:
        raise SystemExit("constraints.txt pins no torch")
    version = torch_pin.split("==", 1)[1].split("+", 1)[0]
    requirements = [TORCH[torch].format(version=version)]
    requirements += [d for d in group_requirements(pyproject, group) if _name(d) != "torch"]
    kept = [p for p in pins if _name(p) != "torch"]
    return "\n".join(requirements) + "\n", "\n".join(kept) + "\n"


def installed_closure(requirements: list[str]) -> dict[str, int]:
    """Every distribution ``requirements`` pull in (as installed here) -> its installed bytes."""
    from importlib import metadata

    from packaging.requirements import Requirement

    sizes: dict[str, int] = {}
    todo = [(Requirement(r), frozenset(Requirement(r).extras)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        name = req.name.lower().replace("_", "-")
        if name in sizes and not extras:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # e.g. CUDA libraries of the GPU torch wheel: not on this machine
        if name not in sizes:
            sizes[name] = sum(f.size or 0 for f in dist.files or [])
        for raw in dist.requires or []:
            dep = Requirement(raw)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if dep.marker is None or any(dep.marker.evaluate(env) for env in envs):
                todo.append((dep, frozenset(dep.extras)))
    return sizes


def image_sizes(pyproject: str) -> dict[str, dict]:
    """Per image: package count, installed MB on this machine, its ten largest packages."""
    sets = {group: group_requirements(pyproject, group) for group in GROUPS}
    # the baseline: one image with every group, what each image installed before the split
    sets["all"] = sorted({r for requirements in sets.values() for r in requirements}
                         | set(group_requirements(pyproject, "pipeline")))  # fmt: skip
    out = {}
    for group, requirements in sets.items():
        closure = installed_closure(requirements)
        largest = sorted(closure.items(), key=lambda kv: -kv[1])[:10]
        out[group] = {
            "packages": len(closure),
            "installed_mb": round(sum(closure.values()) / 2**20, 1),
            "largest_mb": {k: round(v / 2**20, 1) for k, v in largest},
            "names": sorted(closure),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the requirements; write the constraints they refer to beside ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("constraints", type=Path)
    parser.add_argument("--group", choices=sorted(GROUPS), help="the image (dependency group)")
    parser.add_argument("--torch", choices=sorted(TORCH), default=None,
                        help="torch build (default: the image's)")  # fmt: skip
    parser.add_argument("--constraints-out", type=Path, default=Path("/tmp/image-constraints.txt"))
    parser.add_argument("--sizes", action="store_true", help="print each image's installed size")
    args = parser.parse_args(argv)
    if args.sizes:
        json.dump(image_sizes(args.pyproject.read_text()), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not args.group:
        parser.error("--group is required")
    requirements, constraints = image_requirements(
        args.pyproject.read_text(), args.constraints.read_text(), args.group, args.torch
    )
    args.constraints_out.write_text(constraints)
    sys.stdout.write(f"-c {args.constraints_out}\n{requirements}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
