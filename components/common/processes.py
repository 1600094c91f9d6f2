"""Long-lived child processes: start, wait until healthy, stop the whole process group.

The local stack, the local predictor and its capture sink, the test harness and the benchmarks
use these.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from components.common.errors import StackError

logger = logging.getLogger(__name__)


@dataclass
class Service:
    """One process of the stack: how to find it, reach it and check its health."""

    name: str
    pid: int
    url: str
    health_url: str
    log: str

    def healthy(self, timeout: float = 2.0) -> bool:
        return process_alive(self.pid) and http_ok(self.health_url, timeout)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_healthy(
    service: Service, timeout: float, is_ready: Callable[[str], bool] = http_ok
) -> None:
    """Block until ``is_ready(health_url)`` holds, or raise naming the log file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(service.pid):
            raise StackError(f"{service.name} exited during start-up; see {service.log}")
        if is_ready(service.health_url):
            return
        time.sleep(0.3)
    raise StackError(f"{service.name} was not healthy within {timeout:.0f}s; see {service.log}")


def stop_process(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``pid``, then SIGKILL what is left after ``grace``."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not process_alive(pid) and not group_alive(pid):
                return
            time.sleep(0.1)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def group_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str]) -> int:
    """Start ``argv`` in its own session (so its whole process group can be stopped)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 (our own argv)
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    logger.info("started %s (pid %d), log %s", name, proc.pid, log)
    return proc.pid
