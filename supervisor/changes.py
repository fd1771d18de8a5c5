"""The change pipeline, one explicit state at a time.

    idle ──new content──> splay ──> validating ──passed──> applying ──done──> probation ──> idle
                                        └──rejected──> idle        (staged)      └─failed─> applying
                                                             (DEST cannot be written: rolling back)
    any state ──stop──> stopped  (final: a running command is killed, a webhook result ignored)

It decides on digests only. Content that arrives while it is busy is not even hashed: the watches
mark it, and once the pipeline is idle again it is folded into one follow-up on the newest
content. So after any burst the app ends up on the final content, and the number of actions
never exceeds the number of distinct contents. With --stage, the content is copied into DEST as
a candidate, validated there, published only once it passed, and proven on probation
(rollout.py, probation.py). Only the loop's thread calls in here.
"""
from __future__ import annotations

import time

from .commands import Command
from .action import Action, command_env, describe, report
from .digest import MISSING
from .modes import Modes
from .probation import Probation
from .staging import (APPLYING, EX_CONFIG, IDLE, PROBATION, SPLAY, STOPPED, VALIDATING,
                      Staging)

LATER = ("exit", "probe")  # modes whose probation is run by the next container start


class Changes(Staging):
    def __init__(self, settings, app, procs, timers, fds, log, stats, clock, start_thread, post,
                 rollout=None):
        self.s = settings
        self.app = app
        self.stop = procs.stop
        self.timers = timers
        self.log = log
        self.stats = stats
        self.clock = clock
        self.rollout = rollout        # None without --stage
        self.staged = [i for i, w in enumerate(settings.watches) if w in settings.stage_sources]
        self.state = IDLE
        self.applied: list = []       # one Snapshot per watch: what the app has been brought to
        self.rejected: tuple | None = None
        self.action: Action | None = None
        self.command: Command | None = None
        self.splayed = False          # the splay for the change being considered is over
        self.save_warned = None       # the state-save failure last told
        self.tokens = 0
        self.on_idle = lambda: None   # set by the core: re-hash what changed meanwhile
        self.modes = Modes(settings, app, procs, timers, fds, clock, start_thread, post, self._env,
                           self._applied)
        self.probation = Probation(settings, procs, timers, fds, clock, self._env, self._proven)
        self.procs, self.fds = procs, fds

    def __repr__(self) -> str:
        return f"<Changes {self.state}>"

    @property
    def busy(self) -> bool:
        return self.state != IDLE

    @property
    def unhealthy(self) -> str | None:
        return self.modes.unhealthy

    def held(self, current: list) -> bool:
        """The app runs on something else than the watched content, which is known bad."""
        return self.state == IDLE and [c.digest for c in current] != [a.digest for a in self.applied]

    def config(self, snaps) -> str | None:
        if self.rollout is None:
            return None
        from .rollout import config_id  # imported by the core already, with --stage

        return config_id(snaps[i].digest for i in self.staged)

    # ---- transitions -----------------------------------------------------------------------
    def start(self, current: list) -> None:
        """The first start. With --stage, the app starts on what DEST holds once it is known
        good, or validated (then on probation); content known bad is held back."""
        self.applied = list(current)
        if self.rollout is None:
            self.app.start()
        else:
            self._start_staged(current)

    def _begin(self, action: Action, state: str) -> None:
        self.tokens += 1
        action.token = self.tokens
        self.action, self.state = action, state

    def consider(self, current: list) -> None:
        """The watches hashed `current`; act if it differs from what the app has."""
        if self.state != IDLE or self.stop:
            return
        # A splay is over for this one look only: content that went back meanwhile needs none,
        # and the next real change gets its own.
        splayed, self.splayed = self.splayed, False
        if any(c.digest == MISSING and a.digest != MISSING for c, a in zip(current, self.applied)):
            return  # a watched path vanished: keep the app as it is until it is back
        target = tuple(c.digest for c in current)
        if target == tuple(a.digest for a in self.applied) or target == self.rejected:
            return
        cid = self.config(current)
        if cid is not None and cid != self.config(self.applied) and self.rollout.is_bad(cid):
            return  # failed validation or probation before: only different content is tried
        if self.s.splay and not splayed:
            self.state = SPLAY  # replicas updated together do not all restart at once
            import random

            delay = random.uniform(0, self.s.splay)
            self.log.info(f"waiting {delay:.1f}s (--splay) before acting on a change", event="splay",
                          delay=round(delay, 3))
            self.timers.set("splay", delay, self._splay_over)
            return
        self.stats.changes += 1
        self.stats.last_change = time.time()
        action = Action(self.s.on_change, list(current), [], self.clock(), 0)
        if (cid is None or cid == self.config(self.applied)) and not self.s.validate \
                and self.s.on_change in ("signal", "none") and self.s.command:
            # The signal first: the app is waiting for it; which names changed, and the log
            # lines that say so, are not.
            self._begin(action, APPLYING)
            self.modes.apply(action)
            action.changed, notes = describe(current, self.applied, self.s.watches)
            self._log(notes)
            self._finish("done")
            return
        action.changed, notes = describe(current, self.applied, self.s.watches)
        if cid is not None and cid != self.config(self.applied):
            self._log(notes)
            self._begin(action, VALIDATING)
            self._stage_candidate()
        elif not self.s.validate and self.modes.instant(action.kind):
            self._begin(action, APPLYING)
            self.modes.apply(action)
            self._log(notes)
            self._finish("done")
        else:
            self._log(notes)
            self._begin(action, VALIDATING)
            self._validate()

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
        self.timers.cancel("splay")
        self.timers.cancel("rollback-retry")
        self.probation.cancel()
        self.modes.cancel()
        self.app.hold_exits(None)
        self.state, self.action = STOPPED, None

    def on_webhook(self, token: int, ok: bool, detail: str) -> None:
        if self.state == APPLYING and self.action is not None and self.action.token == token:
            self._finish("done" if ok else "failed", detail)

    # ---- the steps --------------------------------------------------------------------------
    def _splay_over(self) -> None:
        if self.state == SPLAY:
            self.state, self.splayed = IDLE, True
            self.on_idle()  # hash what changed during the splay; consider() acts on the newest

    def _validate(self) -> None:
        if not self.s.validate:
            self._validated(True, "")
            return
        self.command = Command(self.procs, self.timers, self.fds, "validate", self._validated)
        self.command.start(self.s.validate, self._env(), self.s.command_timeout, self.clock())

    def _validated(self, ok: bool, detail: str) -> None:
        self.command = None
        if self.state != VALIDATING:
            return
        if not ok:
            self._finish("rejected", detail)
            return
        self.log.debug("validation passed", event="validated")
        if self.action.config is not None:
            try:
                self.rollout.publish("candidate")  # now, and only now, the app can see it
            except self.rollout.Error as exc:
                self._abort(f"cannot publish: {exc.strerror}")
                return
        self.state = APPLYING
        action = self.action
        self.modes.apply(action)
        if self.modes.instant(action.kind) and self.action is action:
            self._finish("done")

    def _applied(self, ok: bool, detail: str = "") -> None:
        if self.state == APPLYING:
            self._finish("done" if ok else "failed", detail)

    def _finish(self, result: str, detail: str = "") -> None:
        action = self.action
        if self.state in (IDLE, STOPPED) or action is None:
            return
        took = self.clock() - action.started
        self._count(action.kind, result)
        if result == "rejected":
            self.stats.rejections += 1
            self.rejected = tuple(s.digest for s in action.target)
            if action.config is not None:
                self.rollout.mark_bad(action.config)  # gone from DEST, never tried again
                self._saved()
            self.log.error(f"validation rejected the change, nothing applied: {detail}",
                           event="rejected", took=round(took, 4))
            if action.kind == "start":
                self.state, self.action = IDLE, None
                if self.rollout.good:
                    self._start_on_good("it failed validation")
                else:
                    self.log.error("the configuration fails validation and no earlier one is known "
                                   f"good: exiting with {EX_CONFIG} (EX_CONFIG)", event="config-error")
                    self.app.abandon(EX_CONFIG)
                    return
                self.on_idle()
                return
        else:
            self.applied = list(action.target)
            self.rejected = None
            if result == "done":
                self.stats.last_apply = time.time()
            report(self.log, action, self.modes.what(action), self.modes.signal_field(action),
                   result, detail, took)
        if (result == "done" and action.config is not None and not action.rollback
                and action.kind not in LATER):
            self.state = PROBATION
            self.app.hold_exits(self.probation.app_exited)
            self.probation.begin()
            return
        self.state, self.action = IDLE, None
        # Whatever arrived meanwhile is folded into one follow-up on the newest content.
        self.on_idle()

    # ---- pieces -----------------------------------------------------------------------------
    def _count(self, kind: str, result: str) -> None:
        self.stats.actions[(kind, result)] = self.stats.actions.get((kind, result), 0) + 1

    def _log(self, notes) -> None:
        for message, fields in notes:
            self.log.info(message, **fields)

    def _env(self) -> dict:
        return command_env(self.action, self.rollout, self.app.pid)
