"""The watched paths: what is on disk now, and how we hear that it may have changed.

Each watch is on inotify, polled, or missing (looked for every second). Events only say "maybe":
a kubelet `..data` swap is a commit and is hashed at once (every commit of one batch together);
events in a plain directory are debounced. While the change pipeline is busy nothing is hashed:
the watch is marked, and hashed once the pipeline is idle again. After hashing, `on_content`
hands the new snapshots to the core. Only the loop's thread calls in here.
"""
from __future__ import annotations

import os

from .digest import Snapshot

MISSING_POLL = 1.0     # how often a missing watched path is looked for (inotify mode)
HASH_RETRY = 1.0       # after a transient failure to hash (out of fds or memory)


def reason(exc: BaseException) -> str:
    """An error for a log line: the OS's words where there are some ("Too many open files")."""
    return getattr(exc, "strerror", None) or str(exc)


class Watch:
    __slots__ = ("path", "root", "only", "current", "mode", "dirty", "poll_key", "failing")

    def __init__(self, path: str, root: str, only: str | None, snap: Snapshot):
        self.path = path          # as the user gave it
        self.root = root          # the directory we watch
        self.only = only          # for a watched file: its name inside root
        self.current = snap       # the content now (as last hashed)
        self.mode = "pending"     # inotify | poll | missing, once watching has started
        self.dirty = False        # events arrived while the pipeline was busy
        self.poll_key = None      # last poll fingerprint
        self.failing = False      # the last hash failed for a transient reason


class Watches:
    def __init__(self, settings, system, timers, log, busy, on_content, post):
        self.s = settings
        self.sys = system
        self.timers = timers
        self.log = log
        self.busy = busy              # () -> bool: the change pipeline is busy
        self.on_content = on_content  # () -> None: snapshots were refreshed
        self.post = post
        self.list: list[Watch] = []
        self.watcher = None
        self.commits: set = set()     # kubelet commits seen in this batch

    def __bool__(self) -> bool:
        return bool(self.list)

    def current(self) -> list:
        return [w.current for w in self.list]

    # ---- set-up -----------------------------------------------------------------------------
    def add(self) -> None:
        """Hash every watched path, before the app starts: that is the content it starts with.
        Raises OSError when they cannot be read at all (out of fds at start)."""
        for path in self.s.watches:
            root, only = os.path.abspath(path), None
            if os.path.islink(path) or (os.path.exists(path) and not os.path.isdir(path)):
                # A file, or a kubelet link (`key -> ..data/key`, maybe a directory): watch the
                # directory holding it, where the ..data swap happens; a watch on the file or
                # link itself would see nothing (or die) at the first update.
                root, only = os.path.dirname(root), os.path.basename(root)
            snap = self.sys.snapshot(root, only, self.s.include, self.s.exclude)
            self.list.append(Watch(path, root, only, snap))
            self._warn_unreadable(self.list[-1], ())
            if self.sys.pinned_mount(path):
                self.log.warning(
                    f"{path} is a mount of its own (a Kubernetes subPath mount or a single-file bind "
                    f"mount): such mounts never receive ConfigMap/Secret updates. Mount the whole "
                    f"volume as a directory and watch that directory instead.",
                    event="subpath", watch=path)

    def start(self) -> None:
        """Put the watches in place (a timer, shortly after the app started)."""
        if self.s.poll is None:
            try:
                self.watcher = self.sys.watcher(self.post)
            except Exception as exc:  # noqa: BLE001 - whatever breaks in watchdog, poll instead
                self.log.warning(f"inotify unavailable ({reason(exc)}); polling every "
                                 f"{MISSING_POLL:g}s instead", event="watcher", mode="poll")
        for index, watch in enumerate(self.list):
            self._attach(index, watch)
        self.log.info("watching " + ", ".join(f"{w.path} ({w.mode})" for w in self.list),
                      event="watching")
        # Anything that changed between the first hash and the watches being in place.
        self.refresh(range(len(self.list)))

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    def _attach(self, index: int, watch: Watch) -> None:
        """Put a watch on inotify if we can; else it is polled (or looked for, while missing)."""
        if self.watcher is None:
            self._poll_it(watch)
        elif not self.sys.isdir(watch.root):
            watch.mode = "missing"
        else:
            try:
                self.watcher.add(index, watch.root, watch.only)
                watch.mode = "inotify"
            except Exception as exc:  # noqa: BLE001 - the watch limit (ENOSPC), or anything else
                if not any(w.mode == "inotify" for w in self.list):
                    # Nothing is on inotify yet: give it up whole (and whatever it half made).
                    self.watcher.abandon()
                    self.watcher = None
                    self.log.warning(f"inotify unavailable ({reason(exc)}); polling every "
                                     f"{self._interval():g}s instead", event="watcher", mode="poll")
                else:
                    self.log.warning(f"cannot watch {watch.path} with inotify ({reason(exc)}); "
                                     f"polling it every {self._interval():g}s", event="watcher",
                                     mode="poll")
                self._poll_it(watch)
        if watch.mode != "inotify" and "poll" not in self.timers:
            self.timers.set("poll", self._interval(), self._poll)

    def _poll_it(self, watch: Watch) -> None:
        watch.mode = "poll"
        watch.poll_key = self.sys.poll_signature(watch.root, watch.only)

    def _interval(self) -> float:
        return self.s.poll if self.s.poll is not None else MISSING_POLL

    # ---- events -----------------------------------------------------------------------------
    def on_fs(self, index: int, commit: bool) -> None:
        if commit:  # a kubelet swap is a commit: hash at once, every commit of a batch together
            self.commits.add(index)
            self.timers.set("commits", 0.0, self._commits)
        else:
            self.timers.set(("debounce", index), self.s.debounce, lambda: self.refresh((index,)))

    def _commits(self) -> None:
        commits, self.commits = self.commits, set()
        self.refresh(commits)

    def on_gone(self, index: int) -> None:
        watch = self.list[index]
        if self.watcher is not None:
            self.watcher.remove(index)
        watch.mode = "missing"
        self.log.warning(f"{watch.path} was deleted; waiting for it to come back", event="watcher",
                         watch=watch.path)
        if "poll" not in self.timers:
            self.timers.set("poll", self._interval(), self._poll)
        self.refresh((index,))

    def _poll(self) -> None:
        changed = set()
        for index, watch in enumerate(self.list):
            if watch.mode == "missing":
                if self.sys.isdir(watch.root):
                    self._attach(index, watch)
                    changed.add(index)
            elif watch.mode == "poll":
                key = self.sys.poll_signature(watch.root, watch.only)
                if key != watch.poll_key:
                    kubelet_swap = isinstance(key, tuple) and key[:1] == ("kubelet",)
                    watch.poll_key = key
                    if kubelet_swap:
                        changed.add(index)
                    else:
                        self.on_fs(index, False)
        if any(w.mode != "inotify" for w in self.list):
            self.timers.set("poll", self._interval(), self._poll)
        if changed:
            self.refresh(changed)

    # ---- hashing ----------------------------------------------------------------------------
    def refresh(self, indices) -> None:
        """Re-hash the given watches (later, if the pipeline is busy), then report."""
        for index in indices:
            watch = self.list[index]
            if self.busy():
                watch.dirty = True  # hashed once the running action is over
                continue
            try:
                snap = self.sys.snapshot(watch.root, watch.only, self.s.include, self.s.exclude)
            except OSError as exc:  # out of fds or memory: keep what we know, look again soon
                if not watch.failing:
                    self.log.warning(f"cannot hash {watch.path} now ({reason(exc)}); "
                                     f"retrying every {HASH_RETRY:g}s", event="hash-failed",
                                     watch=watch.path)
                watch.failing = True
                self.timers.set(("debounce", index), HASH_RETRY, lambda i=index: self.refresh((i,)))
                continue
            if watch.failing:
                watch.failing = False
                self.log.info(f"{watch.path} can be hashed again", event="hash-ok", watch=watch.path)
            if snap.digest == watch.current.digest:
                self.log.debug(f"{watch.path}: event without content change", event="no-change",
                               watch=watch.path)
                continue
            self._warn_unreadable(watch, watch.current.unreadable, snap)
            watch.current = snap
        if not self.busy():
            self.on_content()

    def refresh_dirty(self) -> None:
        """The pipeline is idle again: hash what changed meanwhile (and report in any case)."""
        dirty = [i for i, w in enumerate(self.list) if w.dirty]
        for index in dirty:
            self.list[index].dirty = False
        self.refresh(dirty)

    def _warn_unreadable(self, watch: Watch, before, snap: Snapshot | None = None) -> None:
        snap = snap or watch.current
        fresh = [name for name in snap.unreadable if name not in before]
        if fresh:
            self.log.warning(f"{watch.path}: cannot read {', '.join(fresh)} (counted as unreadable "
                             f"until it can be read)", event="unreadable", watch=watch.path, names=fresh)
