"""``make batch-score`` on the embedded default: the batch-score pipeline through kfp.local.

Brings up (or reuses) the local stack, runs the pipeline's score step against the local S3 and
MLflow registry, and prints what was scored, what was quarantined, the throughput and where the
predictions are.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from components.common.settings import Settings


def run_local_score(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from pipelines.batch_score import batch_score
    from pipelines.stack import LocalStack
    from pipelines.steps import latest_output, parse_params, print_step_log, run_with_progress

    console = Console(file=sys.stdout, soft_wrap=True)  # stdout is the step logs' while running
    if not args.input:
        console.print("[red]batch-score needs --input[/]: an s3:// prefix (or local directory) "
                      "of review TSV/TSV.gz or Parquet files")  # fmt: skip
        return 2
    started = time.time()
    stack = LocalStack(settings=settings)
    with console.status("starting the local stack (S3 server, MLflow server)"):
        info = stack.up()
    os.environ.update(info.client_env(settings))
    settings = Settings.from_env()
    output = args.output or (
        f"s3://{settings.data_bucket}/scored/{time.strftime('%Y%m%d-%H%M%S')}/"
    )
    params: dict[str, Any] = {
        "input_uri": args.input, "output_uri": output, "spark_master": "local[2]",
        "model": f"models:/{settings.registered_model_name}@champion",
        **parse_params(args.param, "batch-score"),
    }  # fmt: skip
    root = stack.state_dir / "kfp"
    steps, files, error = run_with_progress(batch_score, params, stack.state_dir, console,
                                            caching=False)  # fmt: skip
    summary_path = latest_output(root, "score", "summary", since=started)
    if error or summary_path is None:
        console.print(f"[bold red]Batch scoring failed[/]: {error or 'no summary written'}")
        print_step_log(console, files, next(iter(steps.steps), "score"))
        console.print(f"Outputs under {root}")
        return 1
    return print_summary(console, json.loads(summary_path.read_text()))


def print_summary(console: Any, s: dict) -> int:
    model = s["model"]
    name = f"{model['name']} v{model['version']}" if model["name"] else model["uri"]
    rejected = {k: v for k, v in s["rejected"].items() if v}
    console.print(f"[bold]Model[/] {name} (files {model['uri']})")
    console.print(f"[bold]Rows[/] read {s['rows_read']:,}, scored {s['rows_scored']:,}, "
                  f"quarantined {s['rows_rejected']:,} {rejected or ''}")  # fmt: skip
    console.print(f"[bold]Throughput[/] {s['rows_per_s']:,.0f} rows/s "
                  f"({s['rows_scored']:,} rows in {s['seconds']:.1f}s, all in)")  # fmt: skip
    print(f"Predictions: {s['output'].rstrip('/')}/predictions/")
    print(f"Quarantined rows: {s['output'].rstrip('/')}/rejects/")
    return 0
