"""The embedded local stack's command line: ``python -m pipelines.stack {up,down,status,env}``.

The stack itself (a real S3 API server and a real MLflow tracking server as child processes)
is ``components.common.localstack``; its names are re-exported here for existing callers.
"""

from __future__ import annotations

import argparse
import sys

from components.common.errors import StackError
from components.common.localstack import (  # noqa: F401 - re-exported
    LocalStack,
    Service,
    StackInfo,
    free_port,
    group_alive,
    http_ok,
    process_alive,
    spawn,
    stop_process,
    wait_healthy,
)
from components.common.logs import configure_logging


def print_summary(info: StackInfo) -> None:
    print(f"S3 endpoint:   {info.s3_endpoint}")
    print(f"MLflow UI:     {info.mlflow_uri}")
    for name, service in info.services.items():
        if name not in ("s3", "mlflow"):
            print(f"{name + ':':<14} {service.url}")
    print(f"State and logs: {info.state_dir}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.stack", description=__doc__)
    parser.add_argument(
        "command", choices=["up", "down", "status", "env"], help="what to do with the stack"
    )
    parser.add_argument(
        "--state-dir", default=None, help="state directory (default LOCAL_STATE_DIR)"
    )
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for each server to be healthy"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    stack = LocalStack(args.state_dir)
    try:
        if args.command == "up":
            print_summary(stack.up(timeout=args.timeout))
        elif args.command == "down":
            stopped = stack.down()
            print(
                f"stopped: {', '.join(stopped)}" if stopped else "the local stack was not running"
            )
        elif args.command == "status":
            info = stack.status()
            if not info:
                print("the local stack is not running")
                return 1
            print_summary(info)
        else:
            info = stack.status()
            if not info:
                print("the local stack is not running; run `make stack-up`", file=sys.stderr)
                return 1
            for key, value in info.client_env(stack.settings).items():
                print(f"export {key}={value}")
    except StackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: every process this command had started was stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
