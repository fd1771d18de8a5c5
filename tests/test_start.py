"""The entry point blocks signals before anything slow: as PID 1, a TERM during start-up must be
handled once the loop is ready, not dropped by the kernel (which would leave the container
running until the runtime's SIGKILL)."""
from __future__ import annotations

import signal
import sys

import pytest

from conftest import APP, Running
from test_pid1 import UNSHARE, needs_pidns

# cfgsup's entry point with a slow start-up: between the entry point's first line and the command
# line (where imports take their time in real life) it waits until the test has sent its TERM and
# says so by creating the file named in GO, so the signal surely lands in that window.
SLOW_START = """
import os, sys, time
import supervisor.cli as cli
real = cli.parse
def slow(argv):
    print("starting", flush=True)
    deadline = time.monotonic() + 20
    while not os.path.exists(os.environ["GO"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return real(argv)
cli.parse = slow
from supervisor.start import main
sys.exit(main(sys.argv[1:]))
"""


@needs_pidns
def test_term_during_start_up_of_pid1_is_kept_and_handled(tmp_path):
    go = tmp_path / "go"
    running = Running([*UNSHARE, sys.executable, "-c", SLOW_START, "--", *APP], env={"GO": str(go)})
    try:
        running.wait_line(r"^starting$")
        # unshare's child is PID 1 of the new namespace: signal it from here (a parent namespace)
        # the way a runtime does.
        import psutil

        pid1 = psutil.Process(running.pid).children()[0].pid
        psutil.Process(pid1).send_signal(signal.SIGTERM)
        go.touch()
        running.wait_line(r"received SIGTERM, stopping")
        # the app gets it too, maybe before its own handler is set (then it dies of it)
        assert running.wait(timeout=15) in (0, 128 + signal.SIGTERM)
    finally:
        running.kill_all()


def test_the_mask_is_empty_again_in_the_app(run_cfgsup):
    running = run_cfgsup("--", "sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status")
    assert running.wait() == 0
    assert "SigBlk:\t0000000000000000" in running.text()
