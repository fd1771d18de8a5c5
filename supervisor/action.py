"""One change in flight: what it brings the app to, which names changed, and the log lines that
say so (names and digests only, never contents; every list bounded, see names.py)."""
from __future__ import annotations

import os

from . import names
from .digest import short


class Action:
    __slots__ = ("kind", "target", "changed", "started", "token", "config", "rollback")

    def __init__(self, kind, target, changed, started, token, config=None, rollback=False):
        self.kind = kind          # the --on-change mode (or "start": a staged app's first start)
        self.target = target      # one Snapshot per watch: what this action brings the app to
        self.changed = changed    # names that differ
        self.started = started
        self.token = token        # tells this action's webhook result from an older one's
        self.config = config      # the staged configuration's id (None: nothing staged)
        self.rollback = rollback  # bringing the app back to the last-known-good

    def __repr__(self) -> str:
        return f"<Action {self.kind}{' rollback' if self.rollback else ''} {short(self.config)}>"


def describe(current, applied, paths):
    """The changed names, and one log line (message, fields) per watch that changed."""
    changed, notes = [], []
    for snap, old_snap, path in zip(current, applied, paths):
        if snap.digest == old_snap.digest:
            continue
        old, new = old_snap.entries, snap.entries
        here = sorted(n for n in old.keys() | new.keys() if old.get(n) != new.get(n))
        changed.extend(here)
        notes.append((f"change in {path}: {names.text(here, '(nothing visible)')} "
                      f"{short(old_snap.digest)} -> {short(snap.digest)}",
                      dict(event="change", watch=path, old=short(old_snap.digest),
                           new=short(snap.digest), **names.field(here))))
    return changed, notes


def report(log, action, what: str, signal: str | None, result: str, detail: str, took: float) -> None:
    """The line that says an action is over: what was done, for which names, how long it took."""
    emit = log.info if result == "done" else log.error
    emit(f"{what} for {names.text(action.changed)} in {took * 1000:.1f} ms"
         + (f" ({result}: {detail})" if result != "done" else ""),
         event="action", action=action.kind, result=result, took=round(took, 4),
         detail=detail or None, rollback=action.rollback or None, signal=signal,
         **names.field(action.changed))


def command_env(action, rollout, app_pid) -> dict:
    """The environment of --validate, --reload-command and --verify: the changed names, the
    candidate and stage directories (with --stage), the app's pid."""
    env = dict(os.environ)
    if action is not None:
        env.update(names.env(action.changed))
        if action.config is not None:
            env.update(rollout.env())
    if app_pid is not None:
        env["CFGSUP_CHILD_PID"] = str(app_pid)
    return env
