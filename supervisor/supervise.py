"""The core: builds the machines, hands them the loop's events, and decides when it is over.

    signals, child exits, watch events ─> loop ─> Supervisor ─> App / Changes / Watches ─> OS
                                                      └─> a published state snapshot ─> health

A TERM or INT requests the Stop (procs.Stop) once: the change pipeline is cancelled (its command
killed, a webhook result ignored), the app gets the forwarded signal and the --stop-timeout
deadline, and cfgsup exits with the app's status, whatever was in flight. The app reaching its
end (exit mode, or an exit with --on-exit exit) requests the same Stop.
"""
from __future__ import annotations

import os
import signal
import time

from . import child as child_mod
from .app import DONE, App, signal_name
from .changes import Changes
from .logs import Log
from .loop import Loop
from .procs import Processes, Stop
from .settings import Settings
from .system import System
from .watches import Watches, reason

WATCH_DELAY = 0.05     # from starting the app to setting up the watches
GIVE_UP = 5.0          # after the app is done: longest wait for killed helpers to be reaped


class Stats:
    """Counters for logs and /metrics."""

    def __init__(self):
        self.changes = 0
        self.actions: dict = {}   # (kind, result) -> count
        self.rejections = 0
        self.rollbacks = 0
        self.restarts = 0
        self.last_change = 0.0
        self.last_apply = 0.0


class Supervisor:
    def __init__(self, settings: Settings, log: Log, system=None, clock=time.monotonic,
                 events=None, health_socket=None):
        self.s = settings
        self.log = log
        self.sys = system or System()
        self.clock = clock
        self.health_socket = health_socket
        self.state: dict | None = None  # published for the health thread; replaced, never mutated
        self.loop = Loop(clock, events)
        timers = self.loop.timers
        self.stop = Stop()
        self.stats = Stats()
        self.procs = Processes(self.sys, self.stop, log)
        if settings.command:
            self.app = App(settings, self.procs, timers, log, self.stats, clock, self._app_done)
        else:  # sidecar mode: the app, if any, is a process of another container
            from .targets import Sidecar

            self.app = Sidecar(settings, self.procs, timers, self.loop, log, clock, self._app_done)
        self.rollout = None
        if settings.stage:
            from .rollout import Rollout
            from .stage import Stage

            self.rollout = Rollout([Stage(src, dest) for src, dest in settings.stage], settings.keep,
                                   self.sys.snapshot, settings.include, settings.exclude)
        self.changes = Changes(settings, self.app, self.procs, timers, self.loop, log, self.stats, clock,
                               self.sys.start_thread, self.loop.post, self.rollout)
        self.watches = Watches(settings, self.sys, timers, log, lambda: self.changes.busy,
                               self._content, self.loop)
        self.changes.on_idle = self.watches.refresh_dirty
        self.gave_up = False
        loop = self.loop
        loop.on("signal", self.on_signal)
        loop.on("reap", self.on_reap)
        loop.on("webhook", self.changes.on_webhook)

    # ---- running ----------------------------------------------------------------------------
    def prepare(self) -> int | None:
        """Everything before the loop runs: hash, start the app, serve health, plan the watches.
        Returns an exit code when there is nothing to run."""
        try:
            for stage in self.rollout.stages if self.rollout else ():
                stage.check()
                stage.lock()
            self.watches.add()  # hash before the app starts: that is the content it starts with
        except ValueError as exc:
            self.log.error(str(exc), event="usage")
            return 2
        except OSError as exc:
            self.log.error(f"cannot read the watched paths: {reason(exc)}", event="usage")
            return 2
        self.changes.start(self.watches.current())  # with --stage, maybe after a validation
        if self.app.state == DONE:
            return self.app.code
        if self.health_socket is not None:
            self.start_health()
        if self.watches:
            # The app gets the CPU for its first moments, not our set-up of the watches; and an
            # app that is already gone needs no watches. What changes meanwhile is caught by the
            # refresh once the watches are in place.
            self.loop.timers.set("start-watching", WATCH_DELAY, self.watches.start)
        if self.state is not None:
            self.loop.after_step.append(self.publish)
        return None

    def run(self) -> int:
        self.loop.install_signals(child_mod.FORWARDED | {signal.SIGCHLD})
        code = self.prepare()
        if code is not None:
            return code
        self.loop.run(self.finished)
        self.watches.close()
        self.procs.kill_leftovers()
        return self.app.code

    def finished(self) -> bool:
        """Over once the app is done and every helper we started was reaped (or we gave up)."""
        return self.app.state == DONE and (not self.procs.alive() or self.gave_up)

    # ---- events -----------------------------------------------------------------------------
    def on_signal(self, signo: int) -> None:
        target = self.s.rewritten(signo)
        name = signal_name(signo)
        if target == 0:
            self.log.debug(f"dropped {name} (--rewrite)", event="signal", signal=name)
            return
        self.app.forward(target)
        if signo in (signal.SIGTERM, signal.SIGINT) and self.stop.request(name, signo):
            self.log.info(f"received {name}, stopping (timeout {self.s.stop_timeout:g}s)",
                          event="stop", signal=name)
            self.changes.cancel()
            self.app.shutdown(target)

    def on_reap(self) -> None:
        if self.procs.reap():
            self.app.group_maybe_empty()

    def _content(self) -> None:
        self.changes.consider(self.watches.current())

    def _app_done(self) -> None:
        self.stop.request("the app is done")
        self.changes.cancel()
        if self.procs.alive():
            self.loop.timers.set("give-up", GIVE_UP, self._give_up)

    def _give_up(self) -> None:
        self.log.warning(f"helper processes still not reaped after {GIVE_UP:g}s; exiting anyway",
                         event="give-up")
        self.gave_up = True

    # ---- health -----------------------------------------------------------------------------
    def start_health(self) -> None:
        from .health import HealthServer

        self.publish()
        server = HealthServer(self.health_socket, lambda: self.state)
        self.sys.start_thread(server.serve)
        host, port = self.health_socket.getsockname()[:2]
        self.log.info(f"serving /healthz /readyz /metrics on {host}:{port}", event="health")

    def publish(self) -> None:
        """Hand the health thread a fresh, immutable view of the state."""
        st, app = self.stats, self.app
        self.state = {
            "child_up": app.pid is not None if self.s.command else True,
            "sidecar": not self.s.command,
            "watching": all(w.mode != "pending" for w in self.watches.list),
            "child_started": app.started,
            "stopping": app.why,
            "ready_delay": self.s.ready_delay,
            "unhealthy": self.changes.unhealthy,
            "changes": st.changes,
            "actions": dict(st.actions),
            "rejections": st.rejections,
            "rollbacks": st.rollbacks,
            "held": bool(self.rollout) and self.changes.held(self.watches.current()),
            "probation": self.changes.state == "probation",
            "restarts": st.restarts,
            "orphans": self.procs.orphans,
            "last_change": st.last_change,
            "last_apply": st.last_apply,
            "watches": [(w.path, a.digest, w.mode)
                        for w, a in zip(self.watches.list, self.changes.applied)],
        }


def run(settings: Settings) -> int:
    """Run the app under cfgsup until it is over; returns cfgsup's exit code."""
    from . import reaper

    log = Log(settings.log_level, settings.log_format)
    child_mod.seal_inherited_fds()
    if os.getpid() != 1:
        error = reaper.become_subreaper()
        if error:
            log.debug(f"cannot become a child subreaper ({error}); orphans go to the real init")
    health_socket = None
    if settings.health_addr:
        from .health import bind

        try:
            health_socket = bind(*settings.health_addr)
        except OSError as exc:
            log.error(f"cannot serve health on {settings.health_addr[0]}:{settings.health_addr[1]}: "
                      f"{reason(exc)}", event="usage")
            return 2
    return Supervisor(settings, log, health_socket=health_socket).run()
