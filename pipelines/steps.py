"""Running a pipeline through kfp.local with live progress, and reading back its outputs.

Shared by ``pipelines.run`` (the training pipeline) and ``pipelines.score_local`` (batch
scoring): each imports this, neither the other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class StepLog:
    """Status and wall time of each pipeline task, read from kfp.local's log records.

    ``on_change(name, step)`` is called when a task starts, is a cache hit or finishes.
    """

    steps: dict[str, dict] = field(default_factory=dict)
    on_change: Callable[[str, dict], None] | None = None

    def handle(self, message: str) -> None:
        message = _ANSI.sub("", message)
        if m := re.match(r"Executing task '([^']+)'", message):
            self.steps[m.group(1)] = {"status": "RUNNING", "start": time.perf_counter()}
        elif m := re.match(r"Task '?([^' ]+)'? cache hit", message):
            self.steps[m.group(1)] = {"status": "CACHED", "seconds": 0.0}
        elif m := re.match(r"Task '([^']+)' finished with status (\w+)", message):
            step = self.steps.setdefault(m.group(1), {"start": time.perf_counter()})
            step["status"] = m.group(2)
            step["seconds"] = round(time.perf_counter() - step.pop("start"), 1)
        else:
            return
        if self.on_change:
            self.on_change(m.group(1), self.steps[m.group(1)])

    @property
    def running(self) -> str | None:
        return next((n for n, s in self.steps.items() if s["status"] == "RUNNING"), None)


class StepFiles:
    """A stdout/stderr stand-in that writes what a running pipeline prints into one file per step.

    kfp.local prints each task's subprocess output (Spark's JVM notices, torchrun, the executor
    JSON) with ``print`` and logs through ``sys.stdout``; with this in their place, all of it
    lands in ``<directory>/<task>.log`` (``pipeline.log`` outside any task) and the terminal
    keeps only the progress lines.
    """

    encoding = "utf-8"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.paths: dict[str, Path] = {}
        self._file = self._open("pipeline")

    def _open(self, name: str) -> Any:
        path = self.paths[name] = self.directory / f"{name}.log"
        return path.open("a", encoding="utf-8", buffering=1)

    def switch(self, name: str) -> None:
        self._file.close()
        self._file = self._open(name)

    def write(self, text: str) -> int:
        return self._file.write(_ANSI.sub("", text))

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def tail(self, name: str, lines: int = 25) -> list[str]:
        path = self.paths.get(name)
        if not path or not path.is_file():
            return []
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]

    @contextlib.contextmanager
    def capture(self) -> Iterator[StepFiles]:
        """Send sys.stdout, sys.stderr and the root logger's stream handlers here."""
        saved = sys.stdout, sys.stderr
        # every logger's stream handlers on the terminal (kfp.local keeps some of its own), and
        # any left on a closed stream (an earlier run's files), which would only raise
        handlers = [h for h in _stream_handlers()
                    if h.stream in saved or getattr(h.stream, "closed", False)]  # fmt: skip
        sys.stdout = sys.stderr = self  # type: ignore[assignment]
        streams = [_swap(h, self) for h in handlers]
        try:
            yield self
        finally:
            sys.stdout, sys.stderr = saved
            for handler, stream in zip(handlers, streams, strict=True):
                _swap(handler, saved[1] if getattr(stream, "closed", False) else stream)
            for handler in _stream_handlers():  # made while the run printed here
                if handler.stream is self:
                    _swap(handler, saved[1])
            self.close()


def _swap(handler: logging.StreamHandler, stream: Any) -> Any:
    """Point ``handler`` at ``stream``; unlike setStream, never flushes a closed old stream."""
    with handler.lock:
        old, handler.stream = handler.stream, stream
    return old


def _stream_handlers() -> list[logging.StreamHandler]:
    names = list(logging.Logger.manager.loggerDict)
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in names)]
    return [
        h
        for lg in loggers
        for h in getattr(lg, "handlers", [])
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


class StepProgress:
    """One live line per pipeline step (rich): spinner and elapsed time, then status and seconds."""

    def __init__(self, console: Any) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            redirect_stdout=False,  # StepFiles takes them while the pipeline runs
            redirect_stderr=False,
        )
        self.tasks: dict[str, Any] = {}

    def __call__(self, name: str, step: dict) -> None:
        status = step["status"]
        if not self.progress.console.is_terminal:  # a log or a pipe: one line per finished step
            if status != "RUNNING":
                mark = "✓" if status in ("SUCCESS", "CACHED") else "✗"
                seconds = step.get("seconds", 0.0)
                self.progress.console.print(f"{mark} {name:<22} {status.lower():<8} {seconds:.1f}s")
            return
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(f"{name:<22} running", total=1)
        task = self.tasks[name]
        if status == "RUNNING":
            return
        colour = {"SUCCESS": "green", "CACHED": "cyan"}.get(status, "red")
        self.progress.update(task, description=f"{name:<22} [{colour}]{status.lower()}[/]",
                             completed=1 if status in ("SUCCESS", "CACHED") else 0)  # fmt: skip
        self.progress.stop_task(task)

    def __enter__(self) -> StepProgress:
        if self.progress.console.is_terminal:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress.console.is_terminal:
            self.progress.stop()


class _StepWatcher:
    """Feeds every log record's message to a StepLog.

    kfp.local replaces the root logger's handlers while a task runs, so a handler would miss
    its records; the record factory sees them all.
    """

    def __init__(self, log: StepLog) -> None:
        self.log = log
        self.previous = logging.getLogRecordFactory()

    def __enter__(self) -> _StepWatcher:
        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = self.previous(*args, **kwargs)
            try:
                self.log.handle(record.getMessage())
            except (TypeError, ValueError):
                pass
            return record

        logging.setLogRecordFactory(factory)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.setLogRecordFactory(self.previous)


def parse_params(pairs: list[str], pipeline: str = "review-classifier") -> dict[str, Any]:
    """``KEY=VALUE`` overrides typed like the pipeline's own parameters."""
    from pipelines.compile import PIPELINES

    inputs = PIPELINES[pipeline].component_spec.inputs or {}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in inputs:
            raise SystemExit(
                f"--param {pair!r}: expected KEY=VALUE with KEY one of {sorted(inputs)}"
            )
        kind = inputs[key].type
        try:
            parse = {"Integer": int, "Float": float, "Boolean": _bool, "List": _json(list),
                     "Dict": _json(dict)}.get(kind, str)  # fmt: skip
            out[key] = parse(raw)
        except ValueError as e:
            raise SystemExit(f"--param {key}: {raw!r} is not a {kind}") from e
        if key in _choices() and out[key] not in _choices()[key]:
            raise SystemExit(f"--param {key}={raw}: expected one of {', '.join(_choices()[key])}")
    return out


def _choices() -> dict[str, tuple[str, ...]]:
    """Parameters with a fixed set of values, checked before a run rather than at its end."""
    from components.serve.variants import AUTO, VARIANTS

    return {"serving_variant": (AUTO, *VARIANTS)}


def _json(kind: type) -> Any:
    def parse(raw: str) -> Any:
        value = json.loads(raw)  # json.JSONDecodeError is a ValueError
        if not isinstance(value, kind):
            raise ValueError(raw)
        return value

    return parse


def _bool(raw: str) -> bool:
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ValueError(raw)


def run_with_progress(
    pipeline: Callable, params: dict, state_dir: Path, console: Any, caching: bool = True
) -> tuple[StepLog, StepFiles, str | None]:
    """Run a pipeline with kfp.local, showing one live line per step on ``console``.

    Each step's output goes to ``<state_dir>/logs/run-<time>/<step>.log``. Returns the steps,
    the files and the error message (None when the run succeeded).
    """
    from kfp import local

    files = StepFiles(state_dir / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}")
    console.print(f"[bold]Step logs[/] {files.directory}")
    with StepProgress(console) as progress:

        def on_change(name: str, step: dict) -> None:
            if step["status"] == "RUNNING":
                files.switch(name)  # before kfp.local prints the task's first line
            progress(name, step)

        steps = StepLog(on_change=on_change)
        with files.capture():
            local.init(runner=local.SubprocessRunner(use_venv=False),
                       pipeline_root=str(state_dir / "kfp"), enable_caching=caching,
                       raise_on_error=True)  # fmt: skip
            try:
                with _StepWatcher(steps):
                    pipeline(**params)
                return steps, files, None
            except RuntimeError as e:
                return steps, files, _ANSI.sub("", str(e))


def print_step_log(console: Any, files: StepFiles, step: str) -> None:
    """The last lines of a failed step's log and where the whole log is."""
    tail = files.tail(step)
    if tail:
        console.print(f"[bold]Last lines of {step}'s log[/]", style="red")
        console.print("\n".join(tail), markup=False, highlight=False)
    console.print(f"[bold]Log of {step}[/] {files.paths.get(step, files.directory)}")


def latest_output(root: Path, task: str, output: str, since: float | None = None) -> Path | None:
    """The newest kfp.local output of ``task`` (root/<run>/<task>/<output>).

    With ``since``, only outputs written by this invocation count, so a step that did not
    run this time never shows an earlier run's figures.
    """
    found = [
        p for p in root.glob(f"*/{task}/{output}") if since is None or p.stat().st_mtime >= since
    ]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None
