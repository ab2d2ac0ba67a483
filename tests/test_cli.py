"""The stage CLIs' exit (mpm.cli.run_stage): at once after success, without the interpreter's
teardown, unless something still needs it (a child process, a profiler)."""

import subprocess
import sys

import pytest

from conftest import REPO

STAGE = """
import atexit, multiprocessing, sys, time
from mpm.cli import run_stage

atexit.register(lambda: print("teardown ran", flush=True))

def body(params, args):
    print("body ran", flush=True)
    if args.child:
        multiprocessing.Process(target=time.sleep, args=(0.2,)).start()

run_stage("demo", "a demo stage", body,
          lambda parser: parser.add_argument("--child", action="store_true"))
"""


@pytest.mark.parametrize("how, teardown", [((), False), (("--child",), True),
                                           (("profiled",), True)])  # fmt: skip
def test_a_finished_stage_skips_the_teardown_unless_something_needs_it(tmp_path, how, teardown):
    script = tmp_path / "demo.py"
    script.write_text(STAGE)
    profiler = ["-m", "cProfile"] if how == ("profiled",) else []
    args = [a for a in how if a.startswith("--")]
    proc = subprocess.run([sys.executable, *profiler, str(script), "--params",
                           str(REPO / "params.yaml"), *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "body ran" in proc.stdout
    assert ("teardown ran" in proc.stdout) == teardown
    if profiler:
        assert "function calls" in proc.stdout  # cProfile's report, printed at exit


def test_a_stage_terminated_by_sigterm_under_lightning_fails(tmp_path):
    # Lightning turns SIGTERM into SystemExit() (status 0): the stage must exit 143 instead.
    script = tmp_path / "demo.py"
    script.write_text("""
from lightning.pytorch.utilities.exceptions import SIGTERMException
from mpm.cli import run_stage

def body(params, args):
    raise SIGTERMException

run_stage("demo", "a demo stage", body)
""")
    proc = subprocess.run([sys.executable, str(script), "--params", str(REPO / "params.yaml")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 143
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: demo: terminated (SIGTERM); its checkpoints are kept for a resume")
