"""What every section shares: the run's context, the kubelet writer, process start/stop, lines
from pipes with deadlines, and the formatting of cells (the /proc readings are in procfs.py).

A section is a function `section(run) -> list[Section]`; it records the figures the targets are
judged on in `run.figures` (nested dicts, see targets.py), so the Targets table is computed from
the numbers of the same run.
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAMS = os.path.join(ROOT, "benchmarks", "programs")
sys.path.insert(0, os.path.join(ROOT, "tests"))
from kubelet import KubeletVolume  # noqa: E402


class Volume(KubeletVolume):
    """The kubelet's writer, reading back only the names: every swap here writes new content,
    and reading 100 MB back twice per swap to compare would dominate the run."""

    def current(self):
        data = os.path.join(self.path, "..data")
        if not os.path.islink(data):
            return {}
        base = os.path.join(self.path, os.readlink(data))
        found = {}
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                found[os.path.relpath(os.path.join(dirpath, name), base)] = None
        return found


MISSING = "missing (not installed)"


class Missing(Exception):
    """A peer that is not installed: its row says so, the run goes on."""


@dataclass
class Section:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


@dataclass
class Run:
    env: object                 # cleanenv.Env: the venv's python, cfgsup, versions
    n: dict                     # counts for this run (smoke or full)
    tmp: str                    # scratch space, removed at the end
    smoke: bool
    figures: dict = field(default_factory=dict)
    args: object = None         # the parsed command line (bundle path, images, ...)
    _specs: list = None

    def specs(self) -> list:
        """The many-key and large-file volumes (payloads.py), drawn once for all sections."""
        if self._specs is None:
            from payloads import volume_specs

            self._specs = volume_specs(self.smoke)
        return self._specs

    def scratch(self, name: str) -> str:
        path = os.path.join(self.tmp, name)
        os.makedirs(path, exist_ok=True)
        return path


def peer(name: str) -> str | None:
    """A peer from the system (Debian packages), or None: reported as missing, never a crash."""
    return shutil.which(name)


# ---- processes ------------------------------------------------------------------------------
_STARTED: list[subprocess.Popen] = []


def start(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, **kw) -> subprocess.Popen:
    """Every process in a session of its own, so stop() takes its whole group; all of them are
    stopped at the end of the run whatever happens (stop_all)."""
    proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=kw.pop("stdin", subprocess.DEVNULL),
                            start_new_session=True, **kw)
    _STARTED.append(proc)
    return proc


def stop(proc: subprocess.Popen | None) -> None:
    """TERM to its group, KILL after 10 s; then KILL whatever it had started, wherever those went
    (an app in a process group of its own outlives a supervisor that was killed)."""
    if proc is None:
        return
    from procfs import descendants

    left = descendants(proc.pid) if proc.poll() is None else []
    for signo in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, signo)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
    try:  # what the group left behind (the app of a supervisor that exited first)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


def stop_all() -> None:
    while _STARTED:
        stop(_STARTED.pop())


def run_bounded(argv, timeout: float) -> subprocess.CompletedProcess:
    """subprocess.run with its whole group killed on timeout (and the stdout text kept)."""
    proc = start(argv, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise TimeoutError(f"{os.path.basename(argv[0])} took longer than {timeout:g} s") from None
    except BaseException:  # Ctrl-C, TERM: what it started goes too (pip re-executes itself)
        stop(proc)
        raise
    finally:
        if proc in _STARTED:
            _STARTED.remove(proc)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def wait_for(condition, timeout: float, what: str, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout:g} s")
        time.sleep(interval)


def log_has(path: str, text: str) -> bool:
    try:
        with open(path, errors="replace") as fh:
            return text in fh.read()
    except OSError:
        return False


class Lines:
    """Read lines from a pipe with a deadline (no blind sleeps)."""

    def __init__(self, stream):
        self.stream = stream
        self.buffer = b""

    def next(self, timeout=10.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no line in time")
            ready, _, _ = select.select([self.stream], [], [], left)
            if ready:
                chunk = os.read(self.stream.fileno(), 65536)
                if not chunk:
                    raise EOFError("stream closed")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode(errors="replace")

    def drain(self) -> int:
        """Consume the lines that are already there, without waiting; returns how many."""
        count = 0
        while True:
            ready, _, _ = select.select([self.stream], [], [], 0)
            if not ready:
                break
            chunk = os.read(self.stream.fileno(), 65536)
            if not chunk:
                break
            self.buffer += chunk
        while b"\n" in self.buffer:
            self.buffer = self.buffer.partition(b"\n")[2]
            count += 1
        return count

    def until(self, text, timeout=10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(0.01, deadline - time.monotonic()))
            if text in line:
                return line


# ---- numbers and cells ----------------------------------------------------------------------
def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def median(values):
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def ms(seconds) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1000:.3f} ms" if seconds < 0.001 else f"{seconds * 1000:.2f} ms"


def mib(kib) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def ratio(value, base) -> str:
    return f"{value / base:.2f}x" if value is not None and base else "n/a"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def failed(exc: BaseException) -> str:
    """One line for a row that could not be measured."""
    if isinstance(exc, Missing):
        return MISSING
    if isinstance(exc, subprocess.CalledProcessError) and exc.stderr:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        tail = err.strip().splitlines()[-1:] or [""]
        return f"failed: exit {exc.returncode}: {tail[0][:160]}"
    text = str(exc).strip().splitlines()
    return f"failed: {type(exc).__name__}: {text[0][:160] if text else ''}".rstrip(": ")
