"""Shared fixtures: run cfgsup for real, read its output line by line with deadlines, and kill
every process it started on teardown."""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
APP = [sys.executable, os.path.join(HERE, "app.py")]
# The cfgsup under test: this checkout's code, or any build of it (CFGSUP_TEST_COMMAND, e.g. the
# bundle: tests/test_bundle.py runs the real-process tests again that way).
CFGSUP = shlex.split(os.environ.get("CFGSUP_TEST_COMMAND", "")) or [sys.executable, "-m", "supervisor"]
sys.path.insert(0, HERE)


def wait_until(condition, timeout=10.0, interval=0.01, what="condition"):
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Running:
    """A cfgsup process with its stdout and stderr collected into lines as they come."""

    def __init__(self, args, env=None, stdin=subprocess.DEVNULL, **popen):
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=full_env, start_new_session=True, **popen,
        )
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.readers = [threading.Thread(target=self._read, args=(s,), daemon=True)
                        for s in (self.proc.stdout, self.proc.stderr)]
        for reader in self.readers:
            reader.start()

    def _read(self, stream):
        for raw in iter(stream.readline, b""):
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()

    def wait_line(self, pattern, timeout=10.0, start=0):
        """The first line (from index `start`) matching regex `pattern`; fails after timeout."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines[start:]:
                    match = regex.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line matching {pattern!r} within {timeout}s; got:\n"
                                         + "\n".join(self.lines))
                self.cond.wait(left)

    def count(self, pattern) -> int:
        regex = re.compile(pattern)
        with self.cond:
            return sum(1 for line in self.lines if regex.search(line))

    def mark(self) -> int:
        with self.cond:
            return len(self.lines)

    def text(self) -> str:
        with self.cond:
            return "\n".join(self.lines)

    def signal(self, signo):
        self.proc.send_signal(signo)

    def wait(self, timeout=15.0) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=5)
        return code

    def descendants(self):
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill_all(self):
        doomed = self.descendants()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for proc in doomed:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def run_cfgsup():
    """run_cfgsup(*args, env=...) starts `cfgsup ARGS`; everything it started dies on teardown."""
    started: list[Running] = []

    def start(*args, env=None, prefix=(), **popen):
        running = Running([*prefix, *CFGSUP, *args], env=env, **popen)
        started.append(running)
        return running

    yield start
    for running in started:
        running.kill_all()


# Session fixtures for the bundle and real containers (tests/containers.py).
from containers import built, bundle_dir, podman, podman_world  # noqa: E402,F401
