"""The README's install-and-run command, run whole and as written, in a copy of this checkout:
it makes `.venv`, installs cfgsup into it and runs the demo. It runs under a terminal of its own
(a pty, so Ctrl-C is a real Ctrl-C) and in a private mount namespace whose /tmp is a fresh
tmpfs, so its /tmp/demo is its own. The README says what to see: it prints `running`; then, from
another terminal, `echo v2 > /tmp/demo/app.conf` makes it log the change and print `reloaded`;
writing the same content again does nothing; Ctrl-C stops it with exit code 130.
"""
from __future__ import annotations

import ctypes
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time

import psutil
import pytest

import images
import readme
from conftest import wait_until

LACKS = ([] if os.geteuid() == 0 else ["root"]) + [t for t in ("setsid", "unshare", "nsenter") if not shutil.which(t)]
pytestmark = pytest.mark.skipif(bool(LACKS) and not os.environ.get("CI"),
                                reason=f"the README demo needs {', '.join(LACKS)}")
IN_CLOSE_NOWRITE = 0x10
INSTALL_TIMEOUT = 300.0  # a venv and `pip install .` of cfgsup and its dependencies


class Terminal:
    """A command on a pty of its own (its controlling terminal), output collected as lines."""

    def __init__(self, args, cwd):
        self.master, slave = pty.openpty()
        # setsid --ctty: a new session whose controlling terminal is the pty, as a login has.
        self.proc = subprocess.Popen(["setsid", "--ctty", *args], stdin=slave, stdout=slave,
                                     stderr=slave, cwd=cwd, close_fds=True)
        os.close(slave)
        self.lines: list[str] = []
        self.ended = False  # the pty's other end is closed: the command has exited
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        pending = b""
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every holder of the pty's other end is gone
                chunk = b""
            if not chunk:
                break
            pending += chunk
            *done, pending = pending.split(b"\n")
            with self.cond:
                self.lines += [line.decode("utf-8", "replace").rstrip("\r") for line in done]
                self.cond.notify_all()
        with self.cond:
            if pending:
                self.lines.append(pending.decode("utf-8", "replace"))
            self.ended = True
            self.cond.notify_all()

    def wait_line(self, pattern, timeout=10.0, start=0) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines[start:]:
                    if (match := regex.search(line)):
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or self.ended:
                    raise AssertionError(f"no line matching {pattern!r} "
                                         + ("before the command ended" if self.ended else f"within {timeout}s")
                                         + "; got:\n" + "\n".join(self.lines[-60:]))
                self.cond.wait(left)

    def count(self, pattern) -> int:
        with self.cond:
            return sum(1 for line in self.lines if re.search(pattern, line))

    def mark(self) -> int:
        with self.cond:
            return len(self.lines)

    def type(self, data: bytes):
        os.write(self.master, data)

    def kill(self):
        try:
            doomed = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            doomed = []
        for pid in [self.proc.pid, *(p.pid for p in doomed)]:
            try:
                os.killpg(pid, signal.SIGKILL)  # the session's group, and the app's own
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.kill()
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        self.reader.join(timeout=5)
        os.close(self.master)


def closed_after_reading(path: str, name: str, timeout: float):
    """Watch `path` (a directory) now; the returned wait() blocks until some process closed
    `name` in it after only reading it, which here only cfgsup's hashing does."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    assert libc.inotify_add_watch(fd, path.encode(), IN_CLOSE_NOWRITE) >= 0, os.strerror(ctypes.get_errno())

    def wait():
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([fd], [], [], left)[0]:
                    continue
                data = os.read(fd, 65536)
                while data:
                    _wd, _mask, _cookie, size = struct.unpack_from("iIII", data)
                    if data[16:16 + size].rstrip(b"\0") == name.encode():
                        return
                    data = data[16 + size:]
            raise AssertionError(f"{name} was never read within {timeout}s")
        finally:
            os.close(fd)

    return wait


@pytest.fixture
def checkout():
    # Not under /tmp: the demo's namespace puts a tmpfs over /tmp, hiding anything there.
    work = tempfile.mkdtemp(prefix="cfgsup-readme-demo-", dir="/var/tmp")
    try:
        yield images.context(os.path.join(work, "cfgsup"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_install_and_run_demo(checkout):
    assert not LACKS, f"CI must provide {', '.join(LACKS)}"
    command = readme.command("setup")
    # The "other terminal": a shell in the demo's mount namespace, running what the README says.
    write = readme.prose_code(r"^echo \S+ > /tmp/demo/")
    assert write.endswith("/tmp/demo/app.conf"), write
    private_tmp = 'mount -t tmpfs -o mode=1777 readme-demo /tmp && exec sh -c "$1"'
    demo = Terminal(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", private_tmp,
                     "sh", command], cwd=checkout)
    try:
        demo.wait_line(r"^running$", timeout=INSTALL_TIMEOUT)
        cfgsup = next(p for p in psutil.Process(demo.proc.pid).children(recursive=True)
                      if p.cmdline()[1:2] == [".venv/bin/cfgsup"])  # its venv's python runs it
        demo.wait_line(r"INFO watching /tmp/demo \(inotify\)")

        def other_terminal(line):
            subprocess.run(["nsenter", f"--target={cfgsup.pid}", "--mount", "--", "sh", "-c", line],
                           check=True, timeout=10)

        mark = demo.mark()
        other_terminal(write)
        demo.wait_line(r"INFO change in /tmp/demo: app\.conf [0-9a-f]+ -> [0-9a-f]+$", start=mark)
        demo.wait_line(r"INFO sent SIGHUP for app\.conf", start=mark)
        demo.wait_line(r"^reloaded$", start=mark)
        # The same content again: cfgsup reads it (the settle time, then the digest) and does
        # nothing. A new file after that is the barrier: cfgsup handles one change at a time,
        # so once it has acted on the new file, it has decided on the rewrite before.
        read = closed_after_reading(f"/proc/{cfgsup.pid}/root/tmp/demo", "app.conf", timeout=10)
        other_terminal(write)
        read()
        other_terminal(write.replace("app.conf", "other.conf"))
        demo.wait_line(r"INFO sent SIGHUP for other\.conf")
        demo.type(b"\x03")  # Ctrl-C
        assert demo.proc.wait(timeout=20) == 130
        demo.reader.join(timeout=5)
        assert demo.count(r"INFO sent SIGHUP") == 2, "\n".join(demo.lines[-30:])
        assert "Traceback" not in "\n".join(demo.lines)
    finally:
        demo.kill()
