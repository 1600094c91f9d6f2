"""Shared benchmark plumbing: hardware description, process-tree measurement, result files."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "results"
# Peak dense bf16 tensor FLOP/s by GPU name (vendor data sheets), for model FLOPs utilisation.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def flops_per_sample(params_non_embedding: int, seq: int, layers: int, hidden: int) -> float:
    """Training FLOPs per sample: 6 N tokens + attention (12 x layers x hidden x seq^2)."""
    return 6 * params_non_embedding * seq + 12 * layers * hidden * seq * seq


def peak_bf16(gpu: str | None) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if gpu and k in gpu), None)


def hardware() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu,
    }


@dataclass
class Measured:
    wall_s: float
    peak_memory_mb: float
    returncode: int


def _pss(process: psutil.Process) -> int:
    """Proportional set size: pages shared between processes count once in a sum.

    Summed RSS would count a forked child's pages twice (the JVM forks helpers such as
    ``chmod`` when Hadoop writes local files; until exec, the child maps the JVM's heap).
    """
    try:
        return process.memory_full_info().pss
    except (AttributeError, psutil.AccessDenied):  # no smaps (not Linux): RSS instead
        return process.memory_info().rss


def run_measured(argv: list[str], env: dict | None = None, poll_s: float = 0.1) -> Measured:
    """Run ``argv``; wall time and the peak summed PSS of its whole process tree (JVM included)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            peak = max(peak, sum(_pss(p) for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(poll_s)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed: {proc.stderr.read().decode()[-2000:]}")
    return Measured(wall, peak / 2**20, proc.returncode)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def write_result(name: str, payload: dict, directory: Path = RESULTS) -> Path:
    """``<directory>/<name>.json`` with the date and the hardware."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "hardware": hardware(),
        **payload,
    }
    path = directory / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
