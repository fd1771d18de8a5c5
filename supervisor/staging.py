"""The part of the change pipeline that only `--stage` uses: the staged first start, the
candidate, the end of probation and the rollback. Changes (changes.py) inherits it; the states
and the transitions they start from are the pipeline's own.
"""
from __future__ import annotations

from .action import Action
from .app import UP
from .digest import short

# The pipeline's states (changes.py's diagram).
IDLE, SPLAY, VALIDATING, APPLYING, PROBATION, ROLLING_BACK, STOPPED = (
    "idle", "splay", "validating", "applying", "probation", "rolling back", "stopped")
STAGE_RETRY = 5.0  # after DEST could not be written (full, read-only): try the change again
EX_CONFIG = 78     # sysexits.h: a configuration that can never run (the first one, rejected)
EX_TEMPFAIL = 75   # ... and one that cannot be published now (DEST full at start)


class Staging:
    def _start_staged(self, current: list) -> None:
        """The app starts on what DEST holds once it is known good, or validated (then on
        probation); content known bad is held back."""
        rollout = self.rollout
        rollout.load()
        rollout.prune_strays()
        cid = self.config(current)
        try:
            plan = rollout.plan(cid)
            if plan == "held":
                self._start_on_good("it failed validation or probation before")
        except rollout.Error as exc:  # the last-known-good cannot be published: run nothing
            self.log.error(f"cannot publish the last-known-good: {exc.strerror}; exiting with "
                           f"{EX_TEMPFAIL} (EX_TEMPFAIL)", event="stage-failed")
            self.app.abandon(EX_TEMPFAIL)
            return
        self._saved()
        if plan == "good":
            self.app.start()
        elif plan == "probation":
            # Published, not proven yet: exit or probe mode restarted us for it (or we were
            # killed on probation). It passed validation; it gets its probation now.
            self.app.start()
            if self.app.state == UP:
                self._begin(Action("start", list(current), [], self.clock(), 0, cid), APPLYING)
                self._finish("done")
        elif plan == "new":
            self._begin(Action("start", list(current), [], self.clock(), 0), VALIDATING)
            self._stage_candidate()

    def _start_on_good(self, why: str) -> None:
        self.log.warning(f"the watched configuration is held back ({why}): starting on the "
                         f"last-known-good {short(self.rollout.good)}", event="held",
                         good=short(self.rollout.good))
        self._on_good(self.applied, self.rollout.publish_good())
        self.app.start()

    def _on_good(self, snaps: list, good: list) -> None:
        for index, snap in zip(self.staged, good):
            snaps[index] = snap

    def _stage_candidate(self) -> None:
        """Copy SRC into DEST as a candidate the app cannot see yet; then validate it. It is
        named by SRC's digests, what the watches compare with."""
        cid = self.config(self.action.target)
        try:
            self.rollout.stage_candidate(cid, [self.action.target[i].digest for i in self.staged])
        except self.rollout.Error as exc:  # DEST is full or read-only: the trigger failed, not the content
            self._abort(f"cannot stage: {exc.strerror}")
            return
        except (ValueError, OSError) as exc:  # SRC cannot be copied whole: not something to run
            self.action.config = cid
            self._finish("rejected", str(exc))
            return
        self.action.config = cid
        self._validate()

    def _abort(self, detail: str) -> None:
        """Staging failed for a reason that is not the content: nothing changed for the app;
        the same content is tried again a little later."""
        action = self.action
        self._count(action.kind, "failed")
        self.log.error(f"{detail}; the app is left as it is, trying again in {STAGE_RETRY:g}s",
                       event="stage-failed", detail=detail)
        self.rollout.discard_candidate()
        if action.kind == "start":  # nothing that passed validation is published: never run it
            self.app.abandon(EX_TEMPFAIL)
        self.state, self.action = IDLE, None
        self.timers.set("stage-retry", STAGE_RETRY, self.on_idle)

    def _proven(self, ok: bool, reason: str) -> None:
        """The end of probation."""
        action = self.action
        self.app.hold_exits(None)
        if ok:
            self.rollout.accept()
            self._saved()
            self.log.info(f"configuration {short(action.config)} passed probation; it is the "
                          f"last-known-good now", event="proven", config=short(action.config))
        elif self.rollout.good is None:
            self.log.error(f"configuration {short(action.config)} failed probation ({reason}), and "
                           f"there is nothing to roll back to", event="probation-failed",
                           config=short(action.config), reason=reason)
            self.app.release()
        else:
            self._roll_back(action, reason)
            return
        self.state, self.action = IDLE, None
        self.on_idle()

    def _roll_back(self, failed: Action, reason: str, again: bool = False) -> None:
        if not again:
            self.stats.rollbacks += 1
        try:
            self.rollout.roll_back()
        except self.rollout.Error as exc:
            # DEST still shows the failed candidate: bring nothing back onto it (an app that
            # exited stays down), and try again until the last-known-good is there.
            if not again:
                self.log.error(f"cannot publish the last-known-good to roll back {short(failed.config)}: "
                               f"{exc.strerror}; trying again every {STAGE_RETRY:g}s", event="rollback-failed")
            self.state, self.action = ROLLING_BACK, failed
            self.timers.set("rollback-retry", STAGE_RETRY, lambda: self._roll_back(failed, reason, True))
            return
        self._saved()
        good = self.rollout.good
        self.log.error(f"rolled back {short(failed.config)} -> {short(good)}: {reason}",
                       event="rollback", bad=short(failed.config), good=short(good), reason=reason)
        target = list(failed.target)
        self._on_good(target, self.rollout.snapshots("good"))
        action = Action(self.s.on_change, target, failed.changed, self.clock(), 0, good, rollback=True)
        self._begin(action, APPLYING)
        self.modes.apply(action)  # starting an app that is down finishes in here
        if self.modes.instant(action.kind) and self.action is action:
            self._finish("done")

    def _saved(self) -> None:
        """A state that could not be written is said once; it is kept in memory meanwhile."""
        problem = self.rollout.save_error if self.rollout else None
        if problem and problem != self.save_warned:
            self.log.warning(f"cannot write cfgsup's state in the stage: {problem}; it is kept in "
                             f"memory and written at the next change", event="state-unsaved")
        self.save_warned = problem
