"""Probation: a staged configuration, just applied, proves itself.

    waiting ──up --min-uptime, and --verify succeeded once──> passed
       └──the app exits, or --verify never succeeds within --verify-timeout──> failed

--verify first runs one second after the change was applied (an app reloading on a signal may
still answer with its old workers just after it), then again one second after each failure.
`done(ok, reason)` is called once, unless the probation is cancelled (a stop). Only the loop's
thread calls in here.
"""
from __future__ import annotations

from .commands import Command
from .reaper import describe

WAITING, PASSED, FAILED, CANCELLED = "waiting", "passed", "failed", "cancelled"
VERIFY_RETRY = 1.0


class Probation:
    def __init__(self, settings, procs, timers, fds, clock, env, done):
        self.s = settings
        self.procs = procs
        self.timers = timers
        self.fds = fds
        self.clock = clock
        self.env = env              # () -> the environment for --verify
        self.done = done
        self.state = CANCELLED
        self.started = 0.0
        self.up_long_enough = False
        self.verified = False
        self.last = ""              # why --verify failed last
        self.command: Command | None = None

    def __repr__(self) -> str:
        return f"<Probation {self.state}>"

    def begin(self) -> None:
        self.state, self.started = WAITING, self.clock()
        self.up_long_enough, self.verified, self.last = False, not self.s.verify, ""
        self.timers.set("probation-uptime", self.s.min_uptime, self._uptime)
        if self.s.verify:
            self.timers.set("probation-deadline", self.s.verify_timeout, self._deadline)
            self.timers.set("probation-verify", VERIFY_RETRY, self._verify)

    def app_exited(self, status: int) -> None:
        if self.state == WAITING:
            self._end(FAILED, f"the app {describe(status)} during probation")

    def cancel(self) -> None:
        if self.state == WAITING:
            self._end(CANCELLED, "")

    # ---- internals --------------------------------------------------------------------------
    def _uptime(self) -> None:
        self.up_long_enough = True
        self._check()

    def _verify(self) -> None:
        if self.state != WAITING:
            return
        left = self.started + self.s.verify_timeout - self.clock()
        self.command = Command(self.procs, self.timers, self.fds, "verify", self._verified)
        self.command.start(self.s.verify, self.env(), max(0.1, min(self.s.command_timeout, left)),
                           self.clock())

    def _verified(self, ok: bool, detail: str) -> None:
        self.command = None
        if self.state != WAITING:
            return
        if ok:
            self.verified = True
            self._check()
        else:
            self.last = detail
            self.timers.set("probation-verify", VERIFY_RETRY, self._verify)

    def _deadline(self) -> None:
        if not self.verified:
            self._end(FAILED, f"--verify did not succeed within {self.s.verify_timeout:g}s"
                              + (f" ({self.last})" if self.last else ""))

    def _check(self) -> None:
        if self.up_long_enough and self.verified:
            self._end(PASSED, "")

    def _end(self, state: str, reason: str) -> None:
        self.state = state
        for timer in ("probation-uptime", "probation-deadline", "probation-verify"):
            self.timers.cancel(timer)
        if self.command is not None:
            self.command.kill()
            self.command = None
        if state != CANCELLED:
            self.done(state == PASSED, reason)
