"""The watched paths: what is on disk now, and how we hear that it may have changed.

Each watch is on inotify, polled, or missing (looked for every second, and still on inotify where
its snapshot read something). Events only say "maybe": a kubelet `..data` swap is a commit and is
hashed at once (every commit of one batch together); events in a plain directory are debounced.
While the change pipeline is busy nothing is hashed: the watch is marked, and hashed once the
pipeline is idle again. After hashing, `on_content` hands the new snapshots to the core, and the
watch is re-armed on the directories that snapshot read. Only the loop's thread calls in here.
"""
from __future__ import annotations

import errno
import os

from .digest import MISSING, Snapshot

MISSING_POLL = 1.0     # how often a missing watched path is looked for (inotify mode)
HASH_RETRY = 1.0       # after a transient failure to hash (out of fds or memory)
INOTIFY, POLL, GONE = "inotify", "poll", "missing"  # a watch's modes
_BROKEN = 0x8 | 0x10 | 0x20  # POLLERR | POLLHUP | POLLNVAL


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
    def __init__(self, settings, system, timers, log, busy, on_content, fds):
        self.s = settings
        self.sys = system
        self.timers = timers
        self.log = log
        self.busy = busy              # () -> bool: the change pipeline is busy
        self.on_content = on_content  # () -> None: snapshots were refreshed
        self.fds = fds                # the loop: add_fd(fd, callback) / remove_fd(fd)
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
                # A file, or a link (`key -> ..data/key`, or to a directory anywhere): the digest
                # reads through it, and says which directories to watch for it (Snapshot.dirs).
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
                self.watcher = self.sys.watcher(self.s.include, self.s.exclude)
            except Exception as exc:  # noqa: BLE001 - no inotify at all: poll instead
                self.log.warning(f"inotify unavailable ({reason(exc)}); polling every "
                                 f"{MISSING_POLL:g}s instead", event="watcher", mode="poll")
            else:
                self.fds.add_fd(self.watcher.fd, self._readable)
        for index, watch in enumerate(self.list):
            if self.watcher is None:
                self._poll_it(watch)
            else:
                self._arm(index, watch, watch.current)
        # Anything that changed between the first hash and the watches being in place. Said
        # after it: from that line on, every change is seen through the watches.
        self.refresh(range(len(self.list)))
        self.log.info("watching " + ", ".join(f"{w.path} ({w.mode})" for w in self.list),
                      event="watching")

    def close(self) -> None:
        if self.watcher is not None:
            self.fds.remove_fd(self.watcher.fd)
            self.watcher.close()
            self.watcher = None

    def _arm(self, index: int, watch: Watch, snap: Snapshot) -> bool:
        """Watch what `snap` read (or poll the watch, when inotify refuses). True when a
        directory was added since the read: read again."""
        try:
            added = self.watcher.arm(index, snap)
        except Exception as exc:  # noqa: BLE001 - the watch limit (ENOSPC), a permission, ...
            self._fallback(index, watch, exc)
            return False
        watch.mode = GONE if snap.digest == MISSING else INOTIFY
        if watch.mode == GONE:
            self._poll_soon()
        return added

    def _fallback(self, index: int, watch: Watch, exc: Exception) -> None:
        """Poll a watch inotify refused. When it ran out (the watch limit, memory) and nothing
        else is on inotify, give inotify up whole."""
        limit = getattr(exc, "errno", None) in (errno.ENOSPC, errno.ENOMEM, errno.EMFILE)
        if limit and not any(w.mode in (INOTIFY, GONE) for i, w in enumerate(self.list) if i != index):
            self._give_up(exc)
        else:
            self.log.warning(f"cannot watch {watch.path} with inotify ({reason(exc)}); polling it "
                             f"every {self._interval():g}s", event="watcher", mode="poll")
        self._poll_it(watch)

    def _give_up(self, exc: Exception) -> None:
        self.close()
        self.log.warning(f"inotify unavailable ({reason(exc)}); polling every {self._interval():g}s "
                         f"instead", event="watcher", mode="poll")
        for watch in self.list:
            if watch.mode != "pending":  # the ones not set up yet are polled as they are
                self._poll_it(watch)

    def _poll_it(self, watch: Watch) -> None:
        watch.mode = POLL
        watch.poll_key = self.sys.poll_signature(watch.root, watch.only)
        self._poll_soon()

    def _poll_soon(self) -> None:
        if "poll" not in self.timers:
            self.timers.set("poll", self._interval(), self._poll)

    def _interval(self) -> float:
        return self.s.poll if self.s.poll is not None else MISSING_POLL

    # ---- events -----------------------------------------------------------------------------
    def _readable(self, mask: int) -> None:
        """The inotify fd has events: what they mean for each watch (watcher.py)."""
        from .watcher import CHANGE, COMMIT, MOVED, OVERFLOW

        try:
            if mask & _BROKEN:  # else poll() would say so again at once, for ever
                raise OSError(errno.EBADF, "the inotify fd is broken")
            notes = self.watcher.read()
        except OSError as exc:  # never seen; but PID 1 must not end on it: poll everything
            self._give_up(exc)
            return
        for note, index in sorted(notes):  # (OVERFLOW, None) is the only one of its kind
            if note == OVERFLOW:  # events were lost: read every watch on inotify again
                self.log.debug("the inotify queue overflowed; reading every watched path again",
                               event="overflow")
                for i, watch in enumerate(self.list):
                    if watch.mode in (INOTIFY, GONE):
                        self.on_fs(i, watch.current.kubelet)
            elif self.list[index].mode not in (INOTIFY, GONE):
                continue  # polled since
            elif note == COMMIT:
                self.on_fs(index, True)
            elif note in (CHANGE, MOVED):
                self.on_fs(index, False)
            else:
                self.on_gone(index)

    def on_fs(self, index: int, commit: bool) -> None:
        if commit:  # a kubelet swap is a commit: hash at once, every commit of a batch together
            self.commits.add(index)
            self.timers.set("commits", 0.0, self._commits)
        else:
            self.timers.set(("debounce", index), self.s.debounce, lambda: self.refresh((index,)))

    def _commits(self) -> None:
        commits, self.commits = self.commits, set()
        self.refresh(sorted(commits))

    def on_gone(self, index: int) -> None:
        """A root of the watch was deleted: see now what is there instead (most likely nothing)."""
        self.timers.cancel(("debounce", index))
        self.refresh((index,))

    def _poll(self) -> None:
        changed = set()
        for index, watch in enumerate(self.list):
            if watch.mode == GONE or (watch.mode == INOTIFY and _shut(watch.current)):
                changed.add(index)  # a hash of a missing path is cheap; of one back, needed
            elif watch.mode == POLL:
                key = self.sys.poll_signature(watch.root, watch.only)
                if key != watch.poll_key:
                    kubelet_swap = isinstance(key, tuple) and key[:1] == ("kubelet",)
                    watch.poll_key = key
                    if kubelet_swap:
                        changed.add(index)
                    else:
                        self.on_fs(index, False)
        if changed:
            self.refresh(sorted(changed))
        if any(w.mode in (POLL, GONE) or (w.mode == INOTIFY and _shut(w.current)) for w in self.list):
            self.timers.set("poll", self._interval(), self._poll)

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
            self._rearm(index, watch, snap)
            if snap.digest == watch.current.digest:
                if snap.digest != MISSING:
                    self.log.debug(f"{watch.path}: event without content change", event="no-change",
                                   watch=watch.path)
                continue
            self._warn_unreadable(watch, watch.current.unreadable, snap)
            watch.current = snap
        if not self.busy():
            self.on_content()

    def _rearm(self, index: int, watch: Watch, snap: Snapshot) -> None:
        """After a hash on inotify: watch what it read, say when the path went or came back."""
        was = watch.mode
        if self.watcher is None or was not in (INOTIFY, GONE):
            return
        if _shut(snap) and was == INOTIFY:
            # The directory itself cannot be read now. Its watch stays and sees a chmod back; a
            # directory above it may be what was closed, so it is also looked at every second.
            self._poll_soon()
            return
        if self._arm(index, watch, snap) and watch.mode == INOTIFY:
            self.on_fs(index, False)  # a directory new since the read: read it again
        if watch.mode == GONE and was != GONE:
            why = (": its ..data names a directory that is not there" if snap.kubelet
                   else " was deleted or moved away")
            self.log.warning(f"{watch.path}{why}; waiting for it to come back", event="watcher",
                             watch=watch.path)
        elif watch.mode == INOTIFY and was == GONE:
            self.log.info(f"{watch.path} is back", event="watcher", watch=watch.path)

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


def _shut(snap: Snapshot) -> bool:
    """The watched directory itself could not be opened (the digest's "unreadable directory")."""
    return snap.unreadable == (".",)
