"""How a change reaches the app: one `--on-change` mode each.

`apply(action)` brings the app to the action's content the way the mode says, and `done(ok,
detail)` is called when that is over; the instant modes (signal, probe, none) are finished by the
caller as soon as `apply` returns. Two actions are not changes of their own: `start` (the first
start of a staged app, once its configuration passed validation) and a rollback, which starts an
app that exited on probation again, on the last-known-good. Only the loop's thread calls in here.
"""
from __future__ import annotations

from . import names
from .app import DOWN, UP, signal_name
from .commands import Command

INSTANT = ("signal", "probe", "none")
WHAT = {"restart": "restarted the app", "exec": "ran the reload command",
        "http": "called the webhook(s)", "exit": "stopped the app to exit", "start": "started the app",
        "probe": "failing /healthz", "none": "did nothing (--on-change none)"}


class Modes:
    def __init__(self, settings, app, procs, timers, fds, clock, start_thread, post, env, done):
        self.s = settings
        self.app = app
        self.procs = procs
        self.timers = timers
        self.fds = fds
        self.clock = clock
        self.start_thread = start_thread
        self.post = post
        self.env = env                 # () -> the environment for a reload command
        self.done = done               # (ok, detail) once a non-instant mode is over
        self.unhealthy: str | None = None  # probe mode: why /healthz fails
        self.command: Command | None = None

    def what(self, action) -> str:
        if action.kind == "signal":
            what = f"sent {signal_name(self.s.reload_signal)}"
        elif not self.s.command and action.kind == "restart":  # sidecar mode
            what = f"stopped {self.s.target} for the kubelet to restart its container"
        elif not self.s.command and action.kind == "probe":
            what = "saw the app's container restarted" if self.s.target else "held /healthz at 503"
        else:
            what = WHAT[action.kind]
        return ("rollback: " + what) if action.rollback else what

    def signal_field(self, action) -> str | None:
        return signal_name(self.s.reload_signal) if action.kind == "signal" else None

    def cancel(self) -> None:
        if hasattr(self.app, "cancel"):  # sidecar mode: a restart or a probe being waited for
            self.app.cancel()
        if self.command is not None:
            self.command.kill()
            self.command = None

    def apply(self, action) -> None:
        kind, app = action.kind, self.app
        if kind == "start":
            app.start()
            self.done(app.state == UP, "" if app.state == UP else "the app did not start")
        elif action.rollback and app.state in DOWN and kind != "exit":
            # The app exited on probation: start it again, now on the last-known-good.
            self._started(app.restart(action.changed, self._app_done), "the app cannot be started")
        elif kind == "restart":
            self._started(app.restart(action.changed, self._app_done), "the app is not running")
        elif kind == "exit":
            self._started(app.exit_for_change(self._app_done), "the app is not running")
        elif kind == "signal":
            problem = app.signal(self.s.reload_signal)  # an app that is down reads it at start
            if isinstance(problem, str):  # sidecar mode: no target to signal
                self.done(False, problem)
        elif kind == "exec":
            self.command = Command(self.procs, self.timers, self.fds, "reload", self._reloaded)
            self.command.start(self.s.reload_command, self.env(), self.s.command_timeout, self.clock())
        elif kind == "http":
            self._call_webhooks(action)
        elif kind == "probe":
            self.unhealthy = (f"configuration changed ({names.text(action.changed, 'content')}); "
                              f"waiting for the kubelet to restart the container")
            if not self.instant(kind):  # a sidecar: healthy again once the app was restarted
                app.await_restart(self._restarted)

    def instant(self, kind: str) -> bool:
        """Done as soon as applied. Probe mode waits for the restart in sidecar mode."""
        return kind in INSTANT and not (kind == "probe" and not self.s.command)

    def _started(self, result, otherwise: str) -> None:
        if result is not True:
            self.done(False, result if isinstance(result, str) else otherwise)

    def _restarted(self, _ok: bool) -> None:
        self.unhealthy = None
        self.done(True, "")

    def _app_done(self, ok: bool) -> None:
        self.done(ok, "")

    def _reloaded(self, ok: bool, detail: str) -> None:
        self.command = None
        self.done(ok, detail)

    def _call_webhooks(self, action) -> None:
        from .actions import post_webhooks

        token = action.token
        try:
            self.start_thread(
                post_webhooks, self.s.webhooks, self.s.webhook_method, self.s.webhook_retries,
                self.s.webhook_timeout, action.changed,
                lambda ok, detail: self.post(("webhook", token, ok, detail)),
            )
        except RuntimeError as exc:  # no thread to be had: count it, keep the app
            self.post(("webhook", token, False, f"cannot start a thread: {exc}"))
