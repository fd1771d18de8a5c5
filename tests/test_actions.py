"""Helper commands and webhooks, with real processes and real local servers."""
from __future__ import annotations

import os
import select
import shlex
import signal
import sys
import time

import psutil
import pytest

from conftest import wait_until
from supervisor.actions import TAIL_BYTES, Helper
from supervisor.child import SpawnError


def _rss() -> int:
    return psutil.Process().memory_info().rss


def drive(helper: Helper, timeout: float = 60.0):
    """Run a helper as the loop does: poll its fd, drain on POLLIN/POLLHUP, stop polling at the
    end of its output, reap it; then (status, tail, peak RSS while it ran)."""
    poller = select.poll()
    poller.register(helper.fd, select.POLLIN)
    polled, peak = True, _rss()
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert time.monotonic() < deadline, f"helper {helper.argv} still running after {timeout}s"
            for _fd, _events in poller.poll(50):
                if not helper.drain() and polled:
                    poller.unregister(helper.fd)
                    polled = False
            peak = max(peak, _rss())
            pid, status = os.waitpid(helper.pid, os.WNOHANG)
            if pid:
                return status, helper.tail(), peak
    finally:
        helper.close()


def helper(command, timeout=60.0) -> Helper:
    return Helper("validate", command, dict(os.environ), timeout, time.monotonic())


def test_500_mb_of_output_keeps_memory_bounded_and_the_last_line():
    before = _rss()
    h = helper(shlex.join(["sh", "-c", "yes filler-line | head -c 500000004; echo LAST LINE"]))
    status, tail, peak = drive(h)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert h.total == 500_000_004 + len("LAST LINE\n")  # all of it went through the pipe
    assert tail.endswith("filler-line | LAST LINE")
    assert peak - before < 16 * 1024 * 1024, f"RSS grew by {(peak - before) >> 20} MiB"


DAEMON = """
import os, signal, sys, time
signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # so that it sees EPIPE, and tells us
chunk, written, end = b"daemon output\\n" * 4096, 0, time.monotonic() + 60
while time.monotonic() < end:
    try:
        written += os.write(1, chunk)
    except BrokenPipeError:
        with open(sys.argv[1], "w") as fh:
            fh.write(str(written))
        sys.exit(0)
"""


def test_a_daemon_left_behind_cannot_grow_memory(tmp_path):
    """A reload command that starts a daemon writing to its stdout forever: once the command is
    reaped the pipe is closed, and the daemon's next write fails instead of growing memory."""
    script, marker = tmp_path / "daemon.py", tmp_path / "epipe"
    script.write_text(DAEMON)
    daemon = shlex.join([sys.executable, str(script), str(marker)])
    h = helper(shlex.join(["sh", "-c", f"{daemon} & echo helper done"]))
    try:
        status, tail, _peak = drive(h)
        assert os.WEXITSTATUS(status) == 0 and "helper done" in tail
        assert h.fd == -1  # closed once reaped
        written = int(wait_until(lambda: marker.exists() and marker.read_text(), timeout=10,
                                 what="the daemon's EPIPE"))
        assert written >= 0
    finally:
        try:
            os.killpg(h.pid, signal.SIGKILL)  # the daemon is in the helper's process group
        except ProcessLookupError:
            pass


def test_a_daemon_writing_while_the_helper_runs_is_drained_into_the_tail_only():
    h = helper(shlex.join(["sh", "-c", "yes flood | head -c 20000004 & wait; echo end"]))
    status, tail, _peak = drive(h)
    assert os.WEXITSTATUS(status) == 0 and tail.endswith("flood | end")
    assert len(h._tail) <= TAIL_BYTES and h.total > 20_000_000


def test_the_tail_is_the_last_lines():
    h = helper(shlex.join(["sh", "-c", "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo line $i; done"]))
    _status, tail, _peak = drive(h)
    assert tail == " | ".join(f"line {i}" for i in range(1993, 2001))


def test_a_cut_first_line_is_dropped_and_one_long_line_is_kept():
    cut = helper(shlex.join(["sh", "-c", "head -c 10000 /dev/zero | tr '\\0' x; echo; echo end"]))
    assert drive(cut)[1] == "end"
    long = helper(shlex.join(["sh", "-c", "head -c 10000 /dev/zero | tr '\\0' y"]))
    assert drive(long)[1] == "y" * 2048


def test_non_utf8_and_control_characters_never_reach_the_log_line_raw():
    h = helper(shlex.join(["printf", "ok\\n\\377\\376bad \\033[31mred\\r\\nlast\\0x\\n"]))
    _status, tail, _peak = drive(h)
    assert tail == "ok | \ufffd\ufffdbad \ufffd[31mred | last\ufffdx"


def test_a_helper_that_cannot_start_leaves_no_fd_behind():
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(SpawnError):
        helper("no-such-helper-xyz")
    assert len(os.listdir("/proc/self/fd")) == before


def test_the_read_end_is_non_blocking_and_close_on_exec_and_drain_after_close_is_false():
    h = helper("true")
    try:
        assert not os.get_blocking(h.fd) and not os.get_inheritable(h.fd)
    finally:
        drive(h)
    assert h.drain() is False and h.tail() == ""
