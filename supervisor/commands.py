"""A helper command in flight (`--validate`, `--reload-command`), as the loop sees it.

It is started through Processes (so never after a stop), killed with its whole group at
--command-timeout or at a stop, and reaped like any other child. Its output pipe is polled by the
loop and drained into a bounded tail (actions.Helper). `done(ok, detail)` is called once when it
is over, unless it was killed for a stop: then nobody waits for its result.
"""
from __future__ import annotations

import signal

from .child import SpawnError
from .procs import Refused
from .reaper import describe


class Command:
    def __init__(self, procs, timers, fds, purpose: str, done):
        self.procs = procs
        self.timers = timers
        self.fds = fds              # the loop: add_fd / remove_fd
        self.polled = -1            # the output fd while the loop polls it
        self.purpose = purpose
        self.done = done
        self.helper = None
        self.timeout = 0.0
        self.timed_out = False

    def __repr__(self) -> str:
        return f"<Command {self.purpose} pid={self.helper.pid if self.helper else None}>"

    def start(self, command: str, env: dict, timeout: float, now: float) -> bool:
        """False if it could not start (then `done` was told why, unless a stop refused it)."""
        try:
            self.helper = self.procs.start_helper(self.purpose, command, env, timeout, now, self._exited)
        except Refused:
            self.done = None
            return False
        except (SpawnError, ValueError, OSError) as exc:
            self._finish(False, str(exc))
            return False
        self.timeout = timeout
        self.timers.set(("command", self.helper.pid), timeout, self._expired)
        if getattr(self.helper, "fd", -1) >= 0:
            self.polled = self.helper.fd
            self.fds.add_fd(self.polled, self._readable)
        return True

    def _readable(self, _mask) -> None:
        if not self.helper.drain():  # the output ended: a closed pipe would wake the loop for good
            self._unpoll()

    def _unpoll(self) -> None:
        if self.polled >= 0:
            self.fds.remove_fd(self.polled)
            self.polled = -1

    def kill(self) -> None:
        """For a stop: its whole group dies now, and its result no longer matters."""
        self.done = None
        if self.helper is not None and self.helper.pid in self.procs.owners:
            self.timers.cancel(("command", self.helper.pid))
            self.procs.sys.send(self.helper.pid, signal.SIGKILL, True)

    def _expired(self) -> None:
        self.timed_out = True
        self.procs.sys.send(self.helper.pid, signal.SIGKILL, True)

    def _exited(self, status: int) -> None:
        import os

        self.timers.cancel(("command", self.helper.pid))
        self._unpoll()
        ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        detail = f"timed out after {self.timeout:g}s" if self.timed_out else describe(status)
        tail = self.helper.tail()
        if not ok and tail:
            detail += f"; output: {tail}"
        self._finish(ok, detail)

    def _finish(self, ok: bool, detail: str) -> None:
        done, self.done = self.done, None
        if done is not None:
            done(ok, detail)
