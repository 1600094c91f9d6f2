"""What a container runtime reads from an image, taken from the project's Dockerfiles.

The harness has no images, so ``images/<name>.Dockerfile`` is read as the runtime would read the
built image's config: the final stage's ``ENV`` (with ``$VAR``/``${VAR}`` expanded in order),
``USER`` (``uid[:gid]``), ``WORKDIR`` and exec-form ``ENTRYPOINT``/``CMD`` (moby's image config:
``Env``, ``User``, ``WorkingDir``, ``Entrypoint``, ``Cmd``). The image's ``/opt/venv`` is this
machine's virtual environment, mounted there by :mod:`tests.cluster.pods`.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The base image's own config (python:3.11-slim-bookworm): its PATH, no user, WORKDIR "/".
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Image:
    """The parts of an image's config a kubelet uses to start a container."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    user: tuple[int, int] | None = None  # None: root, as the image declares no USER
    workdir: str = "/"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    if current:
        lines.append(current)
    return lines


def _expand(value: str, env: dict[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)


def parse_dockerfile(text: str, name: str) -> Image:
    """The config of the image the Dockerfile's last stage builds."""
    stages: list[list[str]] = []
    for line in _logical_lines(text):
        word = line.split(None, 1)[0].upper()
        if word == "FROM":
            stages.append([])
        elif stages:
            stages[-1].append(line)
    if not stages:
        raise ValueError(f"{name}: no FROM instruction")
    env, user, workdir = dict(BASE_ENV), None, "/"
    entrypoint: list[str] = []
    cmd: list[str] = []
    for line in stages[-1]:
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "ENV":
            parts = shlex.split(rest)
            if parts and "=" not in parts[0]:  # legacy `ENV KEY value`
                env[parts[0]] = _expand(" ".join(parts[1:]), env)
            else:
                updates = {}
                for part in parts:
                    key, _, value = part.partition("=")
                    updates[key] = _expand(value, env)  # one instruction sees the old values
                env.update(updates)
        elif word == "USER":
            uid, _, gid = _expand(rest, env).partition(":")
            user = (int(uid), int(gid or uid))
        elif word == "WORKDIR":
            workdir = str(Path(workdir) / _expand(rest, env))
        elif word in ("ENTRYPOINT", "CMD"):
            value = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
            if word == "ENTRYPOINT":
                entrypoint, cmd = value, []  # a new ENTRYPOINT resets CMD
            else:
                cmd = value
    return Image(name, env, user, workdir, entrypoint, cmd)


@functools.cache
def project_image(name: str) -> Image:
    """The image ``images/<name>.Dockerfile`` builds."""
    path = ROOT / "images" / f"{name}.Dockerfile"
    if not path.exists():
        raise KeyError(name)
    return parse_dockerfile(path.read_text(), name)
