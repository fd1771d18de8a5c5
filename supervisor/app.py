"""The app's lifecycle, one explicit state at a time.

    new ──start──> up ──exits──> backoff (--on-exit restart) ──timer──> up
                    │       ├──> done
                    │       └──> held (on probation: the change pipeline decides what runs next)
                    └─stop(why)─> stopping(why) ──its group is gone──> up (why=restart) | done

`why` is restart (a change), change-exit (exit mode) or shutdown (TERM/INT). The Stop is consulted
by every transition: once it is requested nothing is started again, a stop for a restart or for
exit mode becomes the final one, and the app's own status decides cfgsup's exit code. Only the
loop's thread calls in here.
"""
from __future__ import annotations

import errno
import os
import signal

from . import names
from .child import SpawnError
from .procs import Refused
from .reaper import describe, exit_code

NEW, UP, STOPPING, BACKOFF, HELD, DONE = "new", "up", "stopping", "backoff", "held", "done"
DOWN = (NEW, BACKOFF, HELD)  # no app, and nothing to stop
GROUP_POLL = 0.05      # while stopping: how often to look whether the app's group is empty
BACKOFF_START = 0.5    # --on-exit restart: first delay, doubled up to --restart-backoff
BACKOFF_RESET = 10.0   # ... and reset once the app stayed up this long


def signal_name(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


class App:
    def __init__(self, settings, procs, timers, log, stats, clock, on_done):
        self.s = settings
        self.procs = procs
        self.stop = procs.stop
        self.send = procs.sys.send
        self.group_alive = procs.sys.group_alive
        self.timers = timers
        self.log = log
        self.stats = stats
        self.clock = clock
        self.on_done = on_done      # called once, when the state becomes done
        self.state = NEW
        self.pid: int | None = None
        self.pgid = 0               # group of the app last started; it may outlive the app
        self.started = 0.0
        self.status: int | None = None  # wait status of the last exit
        self.why: str | None = None     # while stopping: restart | change-exit | shutdown
        self.stop_signo = 0             # what this stop sent; what is left of the group gets it too
        self.group_signalled = False    # the whole group already got stop_signo
        self.backoff = 0.0
        self.code: int | None = None    # once done: cfgsup's exit code
        self.changed: tuple = ()        # a restart for a change: its names, until the app is up
        self.restarted = None           # ... and the change pipeline's callback(ok)
        self.exit_hook = None           # while on probation: an exit goes to the pipeline

    def __repr__(self) -> str:
        return f"<App {self.state}{'(' + self.why + ')' if self.why else ''} pid={self.pid}>"

    # ---- transitions asked for by the core and the change pipeline --------------------------
    def start(self) -> None:
        """The first start."""
        if self.state == NEW:
            self._spawn(first=True)

    def abandon(self, code: int) -> None:
        """Never started, and never will be (its configuration can never run: EX_CONFIG)."""
        if self.state == NEW:
            self._done(code)

    def hold_exits(self, hook) -> None:
        """On probation: if the app exits, it stays down (held) and hook(status) decides."""
        self.exit_hook = hook

    def release(self) -> None:
        """Probation is over. A held app gets what --on-exit says after all."""
        self.exit_hook = None
        if self.state == HELD:
            self._after_exit(self.clock() - self.started)

    def forward(self, signo: int) -> None:
        """A signal cfgsup received, for the app (-g: its group, even once the app is gone)."""
        if self.pid is not None:
            self.log.debug(f"forwarding {signal_name(signo)} to {self.pid}", event="signal",
                           signal=signal_name(signo), app_pid=self.pid)
            self.send(self.pid, signo, self.s.group)
        elif self.state == STOPPING and self.s.group:
            self.send(self.pgid, signo, True)

    def shutdown(self, target: int) -> None:
        """The Stop was requested with TERM/INT, forwarded to the app as `target`."""
        if self.state in DOWN:  # nothing to stop
            self.timers.cancel("respawn")
            self._done(self._final(128 + self.stop.signo))
        elif self.state == UP:
            self._enter_stopping("shutdown", target, self.s.group)
            self.timers.set("kill", self.s.stop_timeout, self._deadline)
        elif self.state == STOPPING:
            # A stop for a restart or for exit mode becomes the final one; the deadline only
            # ever gets earlier.
            same = self.group_signalled and self.stop_signo == target  # the group had it already
            self.why, self.stop_signo = "shutdown", target
            self.group_signalled = self.s.group or same
            due = min(self.timers.when("kill") or float("inf"), self.clock() + self.s.stop_timeout)
            self.timers.set_at("kill", due, self._deadline)
            if self.pid is None:
                self._signal_rest()

    def restart(self, changed, done) -> bool:
        """Restart for a change; done(True) once the new app is up."""
        if self.stop or self.state not in (UP, BACKOFF, HELD):
            return False
        self.changed, self.restarted = tuple(changed), done
        if self.state == UP:
            self._stop("restart")
        else:  # down, waiting to be started again: start it now, on the new content
            self.timers.cancel("respawn")
            self._spawn()
        return True

    def exit_for_change(self, done) -> bool:
        """Exit mode: stop the app, then cfgsup exits with --change-exit-code."""
        if self.stop or self.state not in (UP, BACKOFF, HELD):
            return False
        self.restarted = done
        if self.state == UP:
            self._stop("change-exit")
        else:
            self.timers.cancel("respawn")
            self._change_exit()
        return True

    def signal(self, signo: int) -> bool:
        """Signal mode: the app keeps running and reloads."""
        if self.stop or self.state != UP:
            return False
        self.send(self.pid, signo, self.s.group)
        return True

    def group_maybe_empty(self) -> None:
        """An orphan was reaped: the group we wait for may just have emptied."""
        if "group" in self.timers:
            self._group_check()

    # ---- internals --------------------------------------------------------------------------
    def _spawn(self, first: bool = False) -> None:
        env = dict(os.environ)
        if self.changed:
            env.update(names.env(self.changed))
        try:
            try:
                pid = self.procs.spawn_app(list(self.s.command), env, self.pgid, self._exited)
            except SpawnError as exc:
                if exc.errno != errno.E2BIG or "CFGSUP_CHANGED" not in env:
                    raise
                self.log.warning("the environment is too large with CFGSUP_CHANGED: starting the "
                                 "app without it", event="spawn-retry")
                env.pop("CFGSUP_CHANGED", None)
                env.pop("CFGSUP_CHANGED_TRUNCATED", None)
                pid = self.procs.spawn_app(list(self.s.command), env, self.pgid, self._exited)
        except Refused:  # only ever after a TERM/INT: nothing to stop, nothing started
            self._done(self._final(128 + self.stop.signo))
            return
        except SpawnError as exc:
            if exc.transient and not first:  # out of processes or memory: try again, backing off
                self.backoff = self._next_backoff(0.0)
                self.log.warning(f"{exc}; retrying in {self.backoff:g}s", event="spawn-failed",
                                 command=self.s.command[0])
                self.state = BACKOFF
                self.timers.set("respawn", self.backoff, self._respawn)
                return
            self.log.error(str(exc), event="spawn-failed", command=self.s.command[0])
            self._done(exc.code)
            return
        self.state, self.pid, self.pgid, self.started = UP, pid, pid, self.clock()
        if not first:
            self.stats.restarts += 1
        self.log.debug(f"started {self.s.command[0]} as pid {pid}", event="start", app_pid=pid)
        done, self.restarted, self.changed = self.restarted, None, ()
        if done is not None:
            done(True)

    def _respawn(self) -> None:
        if self.state == BACKOFF and not self.stop:
            self._spawn()

    def _enter_stopping(self, why: str, signo: int, whole_group: bool) -> None:
        self.state, self.why, self.stop_signo = STOPPING, why, signo
        self.group_signalled = whole_group

    def _stop(self, why: str) -> None:
        """Stop the app's whole group: stop signal now, SIGKILL at the deadline."""
        self.log.info(f"stopping pid {self.pid} with {signal_name(self.s.stop_signal)} ({why})",
                      event="stop", reason=why, app_pid=self.pid)
        self._enter_stopping(why, self.s.stop_signal, True)
        self.send(self.pid, self.s.stop_signal, True)
        self.timers.set("kill", self.s.stop_timeout, self._deadline)

    def _exited(self, status: int) -> None:
        pid, self.pid, self.status = self.pid, None, status
        uptime = self.clock() - self.started
        self.log.info(f"pid {pid} {describe(status)}", event="exit", app_pid=pid, code=exit_code(status))
        if self.state == STOPPING:
            if self.group_alive(self.pgid):
                self._signal_rest()
                self.timers.set("group", GROUP_POLL, self._group_check)
            else:
                self._after_stop()
        elif self.exit_hook is not None and not self.stop:
            self.state = HELD
            self.exit_hook(status)
        else:
            self._after_exit(uptime)

    def _after_exit(self, uptime: float) -> None:
        """The app exited by itself: --on-exit decides."""
        if self.s.on_exit == "restart" and not self.stop:
            self.state = BACKOFF
            self.backoff = self._next_backoff(uptime)
            self.log.info(f"restarting in {self.backoff:g}s (--on-exit restart)", event="backoff",
                          delay=self.backoff)
            self.timers.set("respawn", self.backoff, self._respawn)
        else:
            self._done(self._final(exit_code(self.status)))

    def _signal_rest(self) -> None:
        """The app is gone but its group lives on: what is left gets the stop signal at once
        (a grandchild that exits cleanly on TERM should not have to wait for SIGKILL)."""
        if not self.group_signalled and self.stop_signo:
            self.group_signalled = True
            self.send(self.pgid, self.stop_signo, True)

    def _group_check(self) -> None:
        if self.group_alive(self.pgid) and "kill" in self.timers:
            self.timers.set("group", GROUP_POLL, self._group_check)
        else:
            self.timers.cancel("kill")
            self._after_stop()

    def _deadline(self) -> None:
        pgid = self.pid if self.pid is not None else self.pgid
        self.log.warning(f"pid {pgid} did not stop within {self.s.stop_timeout:g}s: SIGKILL to its group",
                         event="kill", app_pid=pgid)
        self.send(pgid, signal.SIGKILL, True)
        if self.pid is None:
            self._after_stop()

    def _after_stop(self) -> None:
        if self.state != STOPPING:
            return
        self.timers.cancel("group")
        self.timers.cancel("kill")
        why, self.why = self.why, None
        if why == "restart" and not self.stop:
            self._spawn()
        elif why == "change-exit" and not self.stop:
            self._change_exit()
        else:
            code = exit_code(self.status) if self.status is not None else 128 + self.stop.signo
            self._done(self._final(code))

    def _change_exit(self) -> None:
        # The Stop first: the pipeline, told its action is done, must not act on what arrived
        # meanwhile (the app is gone, and cfgsup is about to exit).
        self.stop.request("exit mode")
        done, self.restarted = self.restarted, None
        if done is not None:
            done(True)
        self._done(self.s.change_exit_code)

    def _done(self, code: int) -> None:
        if self.state == DONE:
            return
        self.state, self.code, self.why = DONE, code, None
        for timer in ("respawn", "kill", "group"):
            self.timers.cancel(timer)
        self.on_done()

    def _final(self, code: int) -> int:
        return 0 if code in self.s.expect_exit else code

    def _next_backoff(self, uptime: float) -> float:
        """0.5 s, doubling up to --restart-backoff; back to the start once the app stayed up."""
        if uptime >= BACKOFF_RESET or not self.backoff:
            return min(BACKOFF_START, self.s.restart_backoff)
        return min(self.backoff * 2, self.s.restart_backoff)
