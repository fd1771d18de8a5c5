"""Reaping: child-subreaper registration, the one reap-all loop, wait status -> exit code."""
from __future__ import annotations

import os

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> str | None:
    """Ask the kernel to re-parent our orphaned descendants to us. Returns an error text or None.

    Not needed as PID 1 (the kernel does it anyway).
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            return os.strerror(ctypes.get_errno())
    except (OSError, AttributeError) as exc:
        return str(exc)
    return None


def reap_all(waitpid=os.waitpid) -> list[tuple[int, int]]:
    """Collect every exited child without blocking: [(pid, wait status)]."""
    reaped = []
    while True:
        try:
            pid, status = waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == 0:
            break
        reaped.append((pid, status))
    return reaped


def exit_code(status: int) -> int:
    """Shell convention: the exit code, or 128+N when killed by signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 255


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        import signal

        signo = os.WTERMSIG(status)
        try:
            name = signal.Signals(signo).name
        except ValueError:
            name = f"signal {signo}"
        return f"killed by {name}"
    return f"exited with code {exit_code(status)}"
