"""The change pipeline, one explicit state at a time.

    idle ──new content──> validating ──passed──> applying ──done / failed──> idle
                              └──rejected──> idle
    any state ──stop──> stopped  (final: a running command is killed, a webhook result ignored)

It decides on digests only. Content that arrives while it is busy is not even hashed: the watches
mark it, and once the pipeline is idle again it is folded into one follow-up on the newest
content. So after any burst the app ends up on the final content, and the number of actions
never exceeds the number of distinct contents. Only the loop's thread calls in here.
"""
from __future__ import annotations

import os
import time

from . import names
from .app import signal_name
from .commands import Command
from .digest import MISSING, short

IDLE, VALIDATING, APPLYING, STOPPED = "idle", "validating", "applying", "stopped"
INSTANT = ("signal", "probe", "none")  # modes that are done as soon as they are applied
DONE_WHAT = {"restart": "restarted the app", "exec": "ran the reload command",
             "http": "called the webhook(s)", "exit": "stopped the app to exit",
             "probe": "failing /healthz", "none": "did nothing (--on-change none)"}


class Action:
    __slots__ = ("kind", "target", "changed", "started", "token")

    def __init__(self, kind, target, changed, started, token):
        self.kind = kind          # the --on-change mode
        self.target = target      # one Snapshot per watch: what this action brings the app to
        self.changed = changed    # names that differ
        self.started = started
        self.token = token        # tells this action's webhook result from an older one's


class Changes:
    def __init__(self, settings, app, procs, timers, fds, log, stats, clock, start_thread, post):
        self.s = settings
        self.app = app
        self.procs = procs
        self.stop = procs.stop
        self.timers = timers
        self.fds = fds                # the loop: a command's output is polled there
        self.log = log
        self.stats = stats
        self.clock = clock
        self.start_thread = start_thread
        self.post = post
        self.state = IDLE
        self.applied: list = []       # one Snapshot per watch: what the app has been brought to
        self.rejected: tuple | None = None
        self.unhealthy: str | None = None  # probe mode: why /healthz fails
        self.action: Action | None = None
        self.command: Command | None = None
        self.tokens = 0
        self.on_idle = lambda: None   # set by the core: re-hash what changed meanwhile

    def __repr__(self) -> str:
        return f"<Changes {self.state}>"

    @property
    def busy(self) -> bool:
        return self.state != IDLE

    # ---- transitions -----------------------------------------------------------------------
    def consider(self, current: list) -> None:
        """The watches hashed `current`; act if it differs from what the app has."""
        if self.state != IDLE or self.stop:
            return
        if any(c.digest == MISSING and a.digest != MISSING for c, a in zip(current, self.applied)):
            return  # a watched path vanished: keep the app as it is until it is back
        target = tuple(c.digest for c in current)
        if target == tuple(a.digest for a in self.applied) or target == self.rejected:
            return
        changed, notes = [], []
        for snap, old_snap, path in zip(current, self.applied, self.s.watches):
            if snap.digest == old_snap.digest:
                continue
            old, new = old_snap.entries, snap.entries
            changed_here = sorted(n for n in old.keys() | new.keys() if old.get(n) != new.get(n))
            changed.extend(changed_here)
            notes.append((f"change in {path}: {names.text(changed_here, '(nothing visible)')} "
                          f"{short(old_snap.digest)} -> {short(snap.digest)}",
                          dict(event="change", watch=path, old=short(old_snap.digest),
                               new=short(snap.digest), **names.field(changed_here))))
        self.stats.changes += 1
        self.stats.last_change = time.time()
        self.tokens += 1
        self.action = Action(self.s.on_change, list(current), changed, self.clock(), self.tokens)
        if not self.s.validate and self.action.kind in INSTANT:
            self.state = APPLYING
            self._apply()  # the signal first: the app is waiting for it, the log lines are not
            self._log_notes(notes)
            self._finish("done")
            return
        self._log_notes(notes)
        if self.s.validate:
            self.state = VALIDATING
            self._run("validate", self.s.validate, self._validated)
        else:
            self.state = APPLYING
            self._apply()

    def cancel(self) -> None:
        """The stop: nothing is applied any more. Called once, by the core."""
        if self.state == STOPPED:
            return
        if self.state != IDLE:
            self.log.info(f"stop requested: the change in flight is dropped ({self.state})",
                          event="dropped", state=self.state)
        if self.command is not None:
            self.command.kill()
            self.command = None
        self.state, self.action = STOPPED, None

    def on_webhook(self, token: int, ok: bool, detail: str) -> None:
        if self.state == APPLYING and self.action is not None and self.action.token == token:
            self._finish("done" if ok else "failed", detail)

    # ---- internals --------------------------------------------------------------------------
    def _log_notes(self, notes) -> None:
        for message, fields in notes:
            self.log.info(message, **fields)

    def _env(self) -> dict:
        env = dict(os.environ)
        env.update(names.env(self.action.changed))
        if self.app.pid is not None:
            env["CFGSUP_CHILD_PID"] = str(self.app.pid)
        return env

    def _run(self, purpose: str, command: str, done) -> None:
        self.command = Command(self.procs, self.timers, self.fds, purpose, done)
        self.command.start(command, self._env(), self.s.command_timeout, self.clock())

    def _validated(self, ok: bool, detail: str) -> None:
        self.command = None
        if self.state != VALIDATING:
            return
        if not ok:
            self._finish("rejected", detail)
            return
        self.log.debug("validation passed", event="validated")
        self.state = APPLYING
        kind = self.action.kind
        self._apply()
        if kind in INSTANT and self.state == APPLYING:
            self._finish("done")

    def _apply(self) -> None:
        """Bring the app to the action's content the way the mode says. Instant modes are
        finished by the caller; the others finish through a callback."""
        action = self.action
        kind = action.kind
        if kind == "restart":
            if not self.app.restart(action.changed, self._app_done):
                self._finish("failed", "the app is not running")
        elif kind == "exit":
            if not self.app.exit_for_change(self._app_done):
                self._finish("failed", "the app is not running")
        elif kind == "signal":
            self.app.signal(self.s.reload_signal)  # an app that is down reads the content at start
        elif kind == "exec":
            self._run("reload", self.s.reload_command, self._reloaded)
        elif kind == "http":
            self._call_webhooks(action)
        elif kind == "probe":
            self.unhealthy = (f"configuration changed ({names.text(action.changed, 'content')}); "
                              f"waiting for the kubelet to restart the container")

    def _call_webhooks(self, action: Action) -> None:
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

    def _app_done(self, ok: bool) -> None:
        if self.state == APPLYING:
            self._finish("done" if ok else "failed")

    def _reloaded(self, ok: bool, detail: str) -> None:
        self.command = None
        if self.state == APPLYING:
            self._finish("done" if ok else "failed", detail)

    def _finish(self, result: str, detail: str = "") -> None:
        action = self.action
        if self.state in (IDLE, STOPPED) or action is None:
            return
        took = self.clock() - action.started
        key = (action.kind, result)
        self.stats.actions[key] = self.stats.actions.get(key, 0) + 1
        if result == "rejected":
            self.stats.rejections += 1
            self.rejected = tuple(s.digest for s in action.target)
            self.log.error(f"validation rejected the change, nothing applied: {detail}",
                           event="rejected", took=round(took, 4))
        else:
            self.applied = list(action.target)
            self.rejected = None
            if result == "done":
                self.stats.last_apply = time.time()
            what = (f"sent {signal_name(self.s.reload_signal)}" if action.kind == "signal"
                    else DONE_WHAT[action.kind])
            log = self.log.info if result == "done" else self.log.error
            log(f"{what} for {names.text(action.changed)} in {took * 1000:.1f} ms"
                + (f" ({result}: {detail})" if result != "done" else ""),
                event="action", action=action.kind, result=result, took=round(took, 4),
                detail=detail or None, **names.field(action.changed),
                signal=signal_name(self.s.reload_signal) if action.kind == "signal" else None)
        self.state, self.action = IDLE, None
        # Whatever arrived meanwhile is folded into one follow-up on the newest content.
        self.on_idle()
