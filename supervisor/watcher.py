"""File-system events -> "maybe changed" events on the loop's queue.

watchdog (tens of milliseconds to import) is imported only when inotify watching starts, after
the app is running; polling never imports it. The watchdog threads never touch process state:
they only `put` small tuples:
    ("fs", index, commit)  something under watch `index` may have changed; commit=True for a
                           kubelet `..data` swap (an atomic commit: no debounce needed)
    ("gone", index)        the watched directory itself was deleted (its inotify watch is dead)
Polling needs no thread at all: the loop calls `poll_signature` (supervisor/tree.py) on its
own timer.
"""
from __future__ import annotations

import os

def _event_filter():
    # What can mean new content. Leaving out open/close-nowrite/access keeps the app's own reads
    # of its config from waking us at all (watchdog builds the inotify mask from this list).
    from watchdog import events as e

    names = ("FileCreatedEvent", "DirCreatedEvent", "FileDeletedEvent", "DirDeletedEvent",
             "FileMovedEvent", "DirMovedEvent", "FileModifiedEvent", "FileClosedEvent",
             # watchdog 7 reports chmod (a file becoming readable) apart; before, as "modified"
             "FileAttribEvent", "DirAttribEvent")
    return [getattr(e, name) for name in names if hasattr(e, name)]


class _Handler:
    """watchdog calls `dispatch(event)` on its observer thread; we only enqueue."""

    def __init__(self, index: int, root: str, only: str | None, put):
        self.index = index
        self.root = root
        self.prefix = root.rstrip("/") + "/"
        self.only = only
        self.put = put

    def _relevant(self, path: str) -> bool:
        if not path.startswith(self.prefix):
            return False
        first = path[len(self.prefix):].partition("/")[0]
        if first.startswith(".."):
            return False  # kubelet internals: the payload being written, ..data_tmp, old dirs
        return self.only is None or first == self.only

    def dispatch(self, event) -> None:
        kind = event.event_type
        if kind == "modified" and event.is_directory:
            return  # watchdog's derived "parent modified" events add nothing
        dest = getattr(event, "dest_path", "")
        if kind == "moved" and os.path.basename(dest) == "..data":
            self.put(("fs", self.index, True))
        elif kind == "deleted" and event.src_path.rstrip("/") == self.root.rstrip("/"):
            self.put(("gone", self.index))
        elif self._relevant(event.src_path) or (dest and self._relevant(dest)):
            self.put(("fs", self.index, False))


class InotifyWatcher:
    """One watchdog inotify observer for all watches. Raises OSError when inotify is unusable."""

    def __init__(self, put, quiet_threads):
        self.put = put
        self.quiet_threads = quiet_threads  # context manager: new threads get signals blocked
        from watchdog.observers.inotify import InotifyObserver

        self.events = _event_filter()
        self.handles: dict[int, object] = {}
        # Every watchdog thread (its inotify reader starts in the constructor) must block the
        # signals we handle; else the kernel may deliver one to it while the main thread sleeps.
        with self.quiet_threads():
            try:
                # timeout=None: the dispatch thread blocks until an event, no periodic wake-up.
                self.observer = InotifyObserver(timeout=None)
                self.observer.start()
            except OSError:
                _close_stray_inotify_fds()
                raise

    def add(self, index: int, root: str, only: str | None) -> None:
        # A kubelet volume changes only by the top-level ..data swap: no need to recurse into it.
        kubelet = os.path.islink(os.path.join(root, "..data"))
        recursive = only is None and not kubelet
        with self.quiet_threads():
            self.handles[index] = self.observer.schedule(
                _Handler(index, root, only, self.put), root,
                recursive=recursive, event_filter=self.events,
            )

    def remove(self, index: int) -> None:
        handle = self.handles.pop(index, None)
        if handle is not None:
            try:
                self.observer.unschedule(handle)
            except (KeyError, OSError):
                pass  # the emitter already stopped itself (its directory was deleted)

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=2)

    def abandon(self) -> None:
        """Stop after a failed set-up, and give back the inotify fds watchdog left open."""
        self.stop()
        _close_stray_inotify_fds()


def _close_stray_inotify_fds() -> None:
    """watchdog keeps an inotify fd open when its set-up fails half way (out of fds, say). Only
    called once nothing of ours uses inotify any more, so every one left is stray. readlink needs
    no fd, which matters when fds are what ran out."""
    import resource

    limit = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 65536)
    for fd in range(3, limit):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify":
                os.close(fd)
        except OSError:
            continue


def pinned_mount(path: str) -> bool:
    """True when `path` is a bind mount of its own that pins one file (or one payload dir): how a
    Kubernetes subPath mount (or a docker single-file bind mount) appears. Such a mount keeps the
    inode it was made with; the kubelet's updates never reach it."""
    import re

    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return False

    def unescape(text):
        return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)

    for line in lines:
        fields = line.split()
        if len(fields) > 4 and unescape(fields[4]) == real:
            root = unescape(fields[3])
            if not os.path.isdir(real) or "/.." in root:
                return True
    return False
