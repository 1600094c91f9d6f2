"""`make pipeline-run`'s terminal output: one line per step, each step's output in its own file."""

import io
import logging
import re
import sys

import pytest
from kfp import dsl
from rich.console import Console

from pipelines.steps import StepFiles, run_with_progress

pytestmark = pytest.mark.integration


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def chatty(n: int) -> int:
    import sys

    for i in range(n):
        print(f"chatty line {i}")  # a step's own noise (Spark, torchrun, ...)
    print("to stderr", file=sys.stderr)
    return n


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def failing(n: int):
    print("about to fail")
    raise ValueError(f"step failed on purpose with {n}")


@dsl.pipeline(name="two-steps")
def two_steps(n: int, fail: bool):
    first = chatty(n=n)
    with dsl.If(fail == True):  # noqa: E712 (a KFP condition, not Python)
        failing(n=first.output)


def test_step_files_take_prints_and_root_log_handlers(tmp_path):
    handler = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(handler)
    stdout = sys.stdout
    try:
        files = StepFiles(tmp_path)
        with files.capture():
            print("before any step")
            logging.getLogger("x").warning("a warning")
            files.switch("ingest")
            print("\x1b[1mingest output\x1b[0m")
        assert sys.stdout is stdout and handler.stream is sys.stderr
    finally:
        logging.getLogger().removeHandler(handler)
    assert "before any step" in (tmp_path / "pipeline.log").read_text()
    assert "a warning" in (tmp_path / "pipeline.log").read_text()
    assert (tmp_path / "ingest.log").read_text() == "ingest output\n"  # colour codes dropped
    assert files.tail("ingest") == ["ingest output"]


@pytest.mark.slow
def test_run_with_progress_keeps_the_terminal_short(tmp_path):
    out = io.StringIO()
    console = Console(file=out, width=100)
    steps, files, error = run_with_progress(two_steps, {"n": 500, "fail": False}, tmp_path,
                                            console)  # fmt: skip
    assert error is None, error
    assert steps.steps["chatty"]["status"] == "SUCCESS"
    shown = out.getvalue()
    assert re.search(r"✓ chatty +success +\d+\.\ds", shown) and "chatty line" not in shown
    assert len(shown.splitlines()) < 10, shown
    log = files.paths["chatty"].read_text()
    assert "chatty line 499" in log and "to stderr" in log
    # kfp.local's executor JSON and task banners are in the step's file, not on the terminal
    assert "Executing task 'chatty'" in log


@pytest.mark.slow
def test_a_failed_step_is_named_with_its_log(tmp_path):
    console = Console(file=io.StringIO(), width=100)
    steps, files, error = run_with_progress(two_steps, {"n": 3, "fail": True}, tmp_path, console)
    assert error and steps.steps["failing"]["status"] == "FAILURE"
    assert "step failed on purpose with 3" in "\n".join(files.tail("failing", 40))
    assert re.search(r"✗ failing +failure", console.file.getvalue())
