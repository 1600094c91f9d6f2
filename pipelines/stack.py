"""The embedded local stack: a real S3 API server (moto) and a real MLflow tracking server.

Both run as child processes on 127.0.0.1 on free ports, are health-checked before use, keep
their state and logs under the state directory (``.local/`` by default) and are reused while
they are alive. Other long-lived processes (the local predictor and its capture sink,
``components/deploy/local.py``) register themselves here so that ``stack-down`` stops them too.
Credentials are throwaway values understood only by moto. Development only: no image or
component on a cluster imports this.

``python -m pipelines.stack {up,down,status,env}``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict

from components.common.errors import StackError
from components.common.localstate import (
    LOCAL_CREDENTIALS,
    ProcessRegistry,
    StackInfo,
)
from components.common.logs import configure_logging
from components.common.processes import (
    Service,
    free_port,
    spawn,
    stop_process,
    wait_healthy,
)
from components.common.settings import Settings

logger = logging.getLogger(__name__)


class LocalStack(ProcessRegistry):
    """Start, reuse, inspect and stop the local S3 and MLflow servers."""

    def status(self) -> StackInfo | None:
        """The running stack if both servers answer, else None."""
        info = self.read()
        if info and all(info.services[n].healthy() for n in ("s3", "mlflow") if n in info.services):
            return info if {"s3", "mlflow"} <= info.services.keys() else None
        return None

    def up(self, timeout: float = 180.0) -> StackInfo:
        """Return the running stack, starting (or restarting) it if needed."""
        running = self.status()
        if running:
            logger.info("reusing the running local stack (%s)", self.state_file)
            return running
        if self.read():
            logger.info("stale stack state found; stopping its leftovers first")
            self.down()
        info = StackInfo(state_dir=str(self.state_dir))
        try:
            self._start_s3(info, timeout)
            self._create_buckets(info)
            self._start_mlflow(info, timeout)
        except BaseException:
            # A failed or interrupted start leaves nothing behind.
            for service in info.services.values():
                stop_process(service.pid)
            self.state_file.unlink(missing_ok=True)
            raise
        return info

    def down(self) -> list[str]:
        """Stop every registered process (predictors, the capture sink, MLflow, then S3)."""
        info = self.read()
        if not info:
            return []
        stopped = []
        # predictors first (their payload loggers hand the sink what they hold), then the sink
        # (it writes its last batch to S3), then MLflow, then S3
        rank = {"s3": 3, "mlflow": 2, "capture-sink": 1}
        order = sorted(info.services, key=lambda n: rank.get(n, 0))
        for name in order:
            stop_process(info.services[name].pid)
            stopped.append(name)
        self.state_file.unlink(missing_ok=True)
        return stopped

    def _base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(LOCAL_CREDENTIALS)
        env["AWS_DEFAULT_REGION"] = self.settings.aws_region
        return env

    def _start_s3(self, info: StackInfo, timeout: float) -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = self.state_dir / "logs" / "s3.log"
        # moto's server, with every bucket mirrored under the state directory (kept across
        # restarts: MLflow's database there points at model files in it)
        argv = [sys.executable, "-m", "pipelines.s3server", "-H", "127.0.0.1", "-p", str(port),
                "--data-dir", str(self.state_dir / "s3"),
                "--region", self.settings.aws_region]  # fmt: skip
        pid = spawn("s3 (moto server)", argv, log, self._base_env())
        service = Service("s3", pid, url, f"{url}/moto-api/", str(log))
        info.services["s3"] = service
        self._write(info)
        wait_healthy(service, timeout)

    def _create_buckets(self, info: StackInfo) -> None:
        from components.common.storage import S3Storage, make_client

        settings = Settings(**{**asdict(self.settings), "s3_endpoint_url": info.s3_endpoint})
        with _temporary_env(LOCAL_CREDENTIALS):
            storage = S3Storage(settings, client=make_client(settings))
            for bucket in (settings.data_bucket, settings.mlflow_artifact_bucket):
                storage.ensure_bucket(bucket)

    def _start_mlflow(self, info: StackInfo, timeout: float) -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = self.state_dir / "logs" / "mlflow.log"
        db = self.state_dir / "mlflow" / "mlflow.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        env = self._base_env()
        env["MLFLOW_S3_ENDPOINT_URL"] = info.s3_endpoint
        # MLflow 3's job runner (Huey consumer processes for server-side jobs) is used by
        # nothing here: off, the idle server holds a fraction of the memory (README,
        # benchmarks/stack_memory.py). An exported value still wins.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        argv = [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{db}",
            "--artifacts-destination", f"s3://{self.settings.mlflow_artifact_bucket}/",
            "--workers", "1",
        ]  # fmt: skip
        pid = spawn("mlflow server", argv, log, env)
        service = Service("mlflow", pid, url, f"{url}/health", str(log))
        info.services["mlflow"] = service
        self._write(info)
        wait_healthy(service, timeout)


@contextlib.contextmanager
def _temporary_env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---- the command line --------------------------------------------------------------------
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
