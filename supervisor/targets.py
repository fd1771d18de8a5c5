"""Sidecar mode (no COMMAND): cfgsup runs beside the app, in a container of its own.

There is no app process of ours. With `--target NAME` the app is the oldest process in cfgsup's
pid namespace (a pod with shareProcessNamespace) whose name, or the base name of its argv[0], is
NAME, not counting cfgsup and what it started; it is looked up again at every action. `Sidecar`
stands in for app.App, with the same transitions the change pipeline and the core call:

    up ──TERM/INT──> done (exit 0: nothing of ours to stop)

`signal` sends --signal to the target; `restart` sends --stop-signal, then SIGKILL after
--stop-timeout if it is still there (the kubelet starts its container again); `await_restart`
waits, in probe mode, until the app's container was restarted (a process named NAME started
after the change) or, without --target, for --probe-hold. Only the loop's thread calls in here.
"""
from __future__ import annotations

import os
import signal

from .app import DONE, UP, signal_name

LOOK = 1.0  # while waiting for a restarted target: how often to look (only then)


def find(name: str, psutil=None, me: int | None = None):
    """The oldest process named `name` (or whose argv[0]'s base name is), not cfgsup itself nor
    anything it started; None if there is none. Processes that vanish meanwhile are skipped."""
    if psutil is None:
        import psutil
    me = os.getpid() if me is None else me
    try:
        ours = {me} | {p.pid for p in psutil.Process(me).children(recursive=True)}
    except psutil.Error:
        ours = {me}
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline", "create_time"]):
        info = proc.info
        if info["pid"] in ours:
            continue
        argv0 = os.path.basename((info.get("cmdline") or [""])[0] or "")
        if name in (info.get("name"), argv0) and info.get("create_time") is not None:
            found.append((info["create_time"], info["pid"], proc))
    return min(found, key=lambda item: item[:2])[2] if found else None


class Sidecar:
    def __init__(self, settings, procs, timers, fds, log, clock, on_done, psutil=None):
        self.s = settings
        self.timers = timers
        self.fds = fds
        self.log = log
        self.clock = clock
        self.on_done = on_done
        self.psutil = psutil          # the module, or a fake in unit tests (imported when needed)
        self.state = "new"
        self.code: int | None = None
        self.started = 0.0
        self.why: str | None = None   # published for /readyz; a sidecar is never "stopping"
        self.stopping = None          # (pid, create time, done) of a target being restarted
        self.waiting = None           # (since wall time, done) in probe mode

    def __repr__(self) -> str:
        return f"<Sidecar {self.state} target={self.s.target}>"

    @property
    def pid(self) -> int | None:
        """The target's pid now, for CFGSUP_CHILD_PID."""
        proc = self._find() if self.s.target else None
        return proc.pid if proc is not None else None

    # ---- what the core asks ----------------------------------------------------------------
    def start(self) -> None:
        if self.state == "new":
            self.state, self.started = UP, self.clock()

    def forward(self, signo: int) -> None:
        """Signals to a sidecar are its own; they are not the app's."""

    def shutdown(self, _target: int) -> None:
        self._done(0)

    def group_maybe_empty(self) -> None:
        pass

    def hold_exits(self, _hook) -> None:
        pass  # no probation in sidecar mode: --stage needs a COMMAND

    def release(self) -> None:
        pass

    def abandon(self, code: int) -> None:
        self._done(code)

    # ---- what a change does -----------------------------------------------------------------
    def signal(self, signo: int) -> str | None:
        """None when sent; else why not (logged and counted by the pipeline)."""
        proc = self._find()
        if proc is None:
            return f"no process named {self.s.target} to send {signal_name(signo)} to"
        return self._send(proc, signo, self.s.group)

    def restart(self, changed, done) -> bool | str:
        """Stop the target (its container is started again by the kubelet); done(True) once it
        is gone. A string says why it cannot be done."""
        proc = self._find()
        if proc is None:
            return f"no process named {self.s.target} to restart"
        problem = self._send(proc, self.s.stop_signal, self.s.group)
        if problem:
            return problem
        self.log.info(f"stopping {self.s.target} (pid {proc.pid}) with {signal_name(self.s.stop_signal)}; "
                      f"its container is restarted by the kubelet", event="stop", target_pid=proc.pid)
        self.stopping = (proc, done)
        self.timers.set("target-kill", self.s.stop_timeout, self._deadline)
        self._watch_exit(proc)
        return True

    def exit_for_change(self, _done) -> bool:
        return False  # refused at start: exiting would restart only cfgsup's own container

    def await_restart(self, done) -> None:
        """Probe mode: done(True) once the app's container was restarted, or --probe-hold
        passed (without --target)."""
        if self.s.target:
            # The process that runs now: "restarted" is any other one of that name later. (Start
            # times are no use here: the kernel's boot time has a one-second resolution.)
            self.waiting = (self._identity(self._find()), done)
            self.timers.set("target-look", LOOK, self._look)
        else:
            self.waiting = (None, done)
            self.timers.set("target-look", self.s.probe_hold, self._waited)

    def cancel(self) -> None:
        for timer in ("target-kill", "target-gone", "target-look"):
            self.timers.cancel(timer)
        self.stopping = self.waiting = None

    # ---- internals --------------------------------------------------------------------------
    def _find(self):
        try:
            return find(self.s.target, self.psutil)
        except Exception as exc:  # noqa: BLE001 - /proc unreadable: the action fails, cfgsup runs on
            self.log.warning(f"cannot look for {self.s.target}: {exc}", event="target")
            return None

    def _send(self, proc, signo: int, group: bool) -> str | None:
        try:
            if group:
                os.killpg(os.getpgid(proc.pid), signo)
            else:
                os.kill(proc.pid, signo)
        except ProcessLookupError:
            return f"{self.s.target} (pid {proc.pid}) is gone"
        except PermissionError:
            return (f"not permitted to signal {self.s.target} (pid {proc.pid}): cfgsup needs the "
                    f"same uid or CAP_KILL")
        return None

    @staticmethod
    def _identity(proc):
        try:
            return None if proc is None else (proc.pid, proc.create_time())
        except Exception:  # noqa: BLE001 - vanished meanwhile
            return None

    def _watch_exit(self, proc) -> None:
        """A pidfd says when a process that is not our child exits; without one, look often."""
        try:
            fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self.timers.set("target-gone", 0.05, self._gone_yet)
            return
        self.stopping = (*self.stopping, fd)
        self.fds.add_fd(fd, lambda _mask: self._gone())

    def _gone_yet(self) -> None:
        if self.stopping is not None:
            if self.stopping[0].is_running():
                self.timers.set("target-gone", 0.05, self._gone_yet)
            else:
                self._gone()

    def _deadline(self) -> None:
        if self.stopping is not None:
            proc = self.stopping[0]
            self.log.warning(f"{self.s.target} (pid {proc.pid}) did not stop within "
                             f"{self.s.stop_timeout:g}s: SIGKILL", event="kill", target_pid=proc.pid)
            self._send(proc, signal.SIGKILL, self.s.group)

    def _gone(self) -> None:
        stopping, self.stopping = self.stopping, None
        if stopping is None:
            return
        if len(stopping) > 2:
            self.fds.remove_fd(stopping[2])
            os.close(stopping[2])
        self.timers.cancel("target-kill")
        self.timers.cancel("target-gone")
        stopping[1](True)

    def _look(self) -> None:
        if self.waiting is None:
            return
        before, done = self.waiting
        now = self._identity(self._find())
        if now is not None and now != before:
            self.waiting = None
            done(True)
        else:
            self.timers.set("target-look", LOOK, self._look)

    def _waited(self) -> None:
        if self.waiting is not None:
            done, self.waiting = self.waiting[1], None
            done(True)

    def _done(self, code: int) -> None:
        if self.state != DONE:
            self.cancel()
            self.state, self.code = DONE, code
            self.on_done()
