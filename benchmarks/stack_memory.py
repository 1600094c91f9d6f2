"""Memory of the embedded local stack, MLflow 3's job runner off (ours) against on (its default).

Starts the local stack (moto S3 server and MLflow tracking server, ``pipelines.stack``) in a
scratch state directory, waits until it is idle, and sums the proportional set size (PSS:
shared pages counted once) of each service's process tree, a few samples apart. Then the same
with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true`` (MLflow's default: a Huey consumer per job
queue). Writes results/stack_memory.json and a PNG. About a minute.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import psutil  # noqa: E402

from benchmarks.common import RESULTS, _pss, median, write_result  # noqa: E402


def tree_pss_mb(pid: int) -> tuple[float, int]:
    """PSS of a process and its descendants in MB, and how many processes that is."""
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    total = 0
    for proc in procs:
        try:
            total += _pss(proc)
        except psutil.NoSuchProcess:
            continue
    return total / 1e6, len(procs)


def measure(job_runner: bool, settle_s: float, samples: int) -> dict:
    """Start the stack with the job runner on or off; per-service PSS once it is idle."""
    from components.common.settings import Settings
    from pipelines.stack import LocalStack

    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "true" if job_runner else "false"
    state = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    stack = LocalStack(state, Settings.from_env({}, dotenv=None))
    try:
        info = stack.up()
        time.sleep(settle_s)  # workers and consumers start after the health check answers
        per: dict[str, list[float]] = {name: [] for name in info.services}
        counts: dict[str, int] = {}
        for _ in range(samples):
            for name, service in info.services.items():
                mb, n = tree_pss_mb(service.pid)
                per[name].append(mb)
                counts[name] = n
            time.sleep(1.0)
        services = {name: {"pss_mb": round(median(v), 1), "processes": counts[name]}
                    for name, v in per.items()}  # fmt: skip
        return {"services": services,
                "total_mb": round(sum(s["pss_mb"] for s in services.values()), 1)}  # fmt: skip
    finally:
        stack.down()
        os.environ.pop("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", None)


def plot(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = [r["case"] for r in rows]
    ax.barh(names, [r["baseline_value"] for r in rows], color="tab:gray", label="job runner on")
    ax.barh(names, [r["ours"] for r in rows], color="tab:blue", label="job runner off (ours)")
    ax.set_xlabel("PSS, MB (idle)")
    ax.legend(fontsize=8)
    ax.set_title("Local stack memory: MLflow 3 job runner off vs on")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stack_memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--settle", type=float, default=15.0, help="seconds idle before measuring")
    p.add_argument("--samples", type=int, default=5, help="PSS samples, one a second")
    args = p.parse_args(argv)
    off = measure(False, args.settle, args.samples)
    on = measure(True, args.settle, args.samples)
    rows = [{"case": name, "ours": off["services"][name]["pss_mb"],
             "baseline": "MLflow job runner on (MLflow 3 default)",
             "baseline_value": on["services"][name]["pss_mb"],
             "ratio": round(off["services"][name]["pss_mb"]
                            / max(on["services"][name]["pss_mb"], 1e-9), 3)}
            for name in off["services"]]  # fmt: skip
    rows.append({"case": "whole stack", "ours": off["total_mb"],
                 "baseline": "MLflow job runner on (MLflow 3 default)",
                 "baseline_value": on["total_mb"],
                 "ratio": round(off["total_mb"] / max(on["total_mb"], 1e-9), 3)})  # fmt: skip
    payload = {"unit": "MB (PSS)", "higher_is_better": False, "rows": rows,
               "off": off, "on": on,
               "notes": "idle stack after start-up; PSS summed over each service's process "
                        "tree; medians of samples one second apart"}  # fmt: skip
    path = write_result("stack_memory", payload)
    plot(rows, RESULTS / "stack_memory.png")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
