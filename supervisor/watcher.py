"""File-system events -> what they may mean for each watch, decoded in the loop's own thread.

One inotify fd (supervisor/inotify.py) serves every watch. The loop polls it beside its wake-up
pipe, and `read()` decodes what is queued, without blocking and a bounded amount per wake-up:
no thread, no queue between threads, no periodic read. Polling needs no fd at all: the loop calls
`poll_signature` (supervisor/tree.py) on its own timer.

Each watch is armed on exactly the directories its last snapshot read (Snapshot.dirs: inotify is
per directory, and links are followed), and re-armed after every snapshot. Several watches may
share a directory (one inotify watch); each has its own role there, from the snapshot:
    tree     a directory the walk listed: every name counts but `..` internals (`..data` does:
             a nested volume's swap) and files the --include/--exclude rule leaves out
    kubelet  a volume's root: only `..data` counts; its IN_MOVED_TO is the kubelet's commit
    names    only some names count: the one of a watched file or link, in the directory holding it
A watch's "roots" are every directory but the subdirectories of a tree.

`read()` returns a set of notes, each at most once per call:
    (COMMIT, index)   a kubelet commit: hash at once
    (CHANGE, index)   something the watch reads may have changed: debounce, then hash
    (GONE, index)     a root was deleted or unmounted: hash at once (the path is missing, likely)
    (MOVED, index)    a root was renamed: the path may name another directory now; debounce
    (OVERFLOW, None)  the kernel's queue overflowed, events were lost: anything may have changed
"""
from __future__ import annotations

import errno
import os

from .digest import selected
from .inotify import (BUFFER, HEADER, IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_IGNORED, IN_ISDIR,
                      IN_MOVE_SELF, IN_MOVED_FROM, IN_MOVED_TO, IN_Q_OVERFLOW, IN_UNMOUNT, Inotify)

COMMIT, CHANGE, GONE, MOVED, OVERFLOW = "commit", "change", "gone", "moved", "overflow"
TREE, KUBELET, NAMES = "tree", "kubelet", "names"
READS = 4  # reads of BUFFER bytes per wake-up at most (about 8000 events); poll() says if more wait
_FULL = BUFFER - HEADER.size - 256  # a read shorter than this emptied the queue
_DATA, _DOTS = b"..data", b".."      # names stay bytes until a glob needs them


def roles(snap) -> dict:
    """{real directory: ((role, data), ...)} for every directory `snap` read."""
    tree: dict = {}
    for path, prefix in snap.tree:
        tree.setdefault(path, prefix)
    names: dict = {}
    for path, name in snap.names:
        names.setdefault(path, set()).add(name)
    found: dict = {}
    for path in snap.dirs:
        if path in found:
            continue
        role = []
        if path in tree:
            role.append((TREE, tree[path]))
        if path in names:
            role.append((NAMES, frozenset(os.fsencode(name) for name in names[path])))
        found[path] = tuple(role) or ((KUBELET, None),)
    return found


class InotifyWatcher:
    """Raises OSError when inotify cannot be set up (the instance or fd limit: EMFILE)."""

    def __init__(self, include=(), exclude=()):
        self.inotify = Inotify()
        self.fd = self.inotify.fd
        self.include, self.exclude = tuple(include), tuple(exclude)
        self.users: dict = {}     # wd -> {(index, path): roles}
        self.armed: dict = {}     # index -> {path: wd}
        self.walked: dict = {}    # index -> relative prefixes of the directories its walk listed
        self.read_as: dict = {}   # index -> what its armed snapshot read (to skip an unchanged one)

    def arm(self, index: int, snap) -> bool:
        """Watch exactly the directories `snap` read for watch `index`: add new ones, drop gone
        ones. True when one was added: what is in it may have moved between the read and now, so
        read again. Raises OSError when a directory cannot be watched (ENOSPC: the watch limit;
        EACCES); the watch then has none left."""
        seen = (snap.dirs, snap.tree, snap.names)
        if self.read_as.get(index) == seen:
            return False  # the same directories, for the same reasons: nothing to do
        wanted = roles(snap)
        old = self.armed.get(index, {})
        new: dict = {}
        added = False
        try:
            for path, role in wanted.items():
                wd = old.get(path)
                if wd is None:
                    try:
                        wd = self.inotify.add(path)
                    except OSError as exc:
                        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                            raise
                        added = True  # gone since the read: the next read sees what replaced it
                        continue
                    added = True
                new[path] = wd
                self.users.setdefault(wd, {})[(index, path)] = role
        except OSError:
            self.armed[index] = {**old, **new}
            self.disarm(index)
            raise
        for path, wd in old.items():
            if path not in new:
                self._drop(index, path, wd)
        self.armed[index] = new
        self.walked[index] = frozenset(prefix for _path, prefix in snap.tree)
        self.read_as[index] = seen
        return added

    def disarm(self, index: int) -> None:
        for path, wd in self.armed.pop(index, {}).items():
            self._drop(index, path, wd)
        self.walked.pop(index, None)
        self.read_as.pop(index, None)

    def _drop(self, index: int, path: str, wd: int) -> None:
        users = self.users.get(wd)
        if users is None:
            return
        users.pop((index, path), None)
        if not users:  # no watch uses this directory any more
            del self.users[wd]
            self.inotify.remove(wd)

    def read(self) -> set:
        notes: set = set()
        unpack, size, users_of = HEADER.unpack_from, HEADER.size, self.users.get
        for _ in range(READS):
            data = self.inotify.read()
            end, offset = len(data), 0
            while offset < end:  # struct inotify_event: wd, mask, cookie, len, then the name
                wd, mask, _cookie, length = unpack(data, offset)
                offset += size + length
                users = users_of(wd)
                if users is None:  # a watch we removed (its last events), or an overflow
                    if mask & IN_Q_OVERFLOW:
                        notes.add((OVERFLOW, None))
                    continue
                if mask & IN_IGNORED:  # the kernel dropped it (its directory deleted, unmounted)
                    self._ignored(wd, users, notes)
                    continue
                name = data[offset - length:offset].rstrip(b"\0") if length else b""
                for (index, path), role in users.items():
                    note = self._meaning(index, path, role, mask, name)
                    if note is not None:
                        notes.add((note, index))
            if end < _FULL:
                break
        return notes

    def _ignored(self, wd: int, users: dict, notes: set) -> None:
        del self.users[wd]
        for (index, path), role in users.items():
            if self.armed.get(index, {}).get(path) == wd:
                del self.armed[index][path]
                self.read_as.pop(index, None)  # the same snapshot must add it again
            notes.add((GONE if _is_root(role) else CHANGE, index))

    def _meaning(self, index: int, path: str, role, mask: int, name: bytes) -> str | None:
        if mask & (IN_DELETE_SELF | IN_UNMOUNT | IN_MOVE_SELF):
            if not _is_root(role):
                return CHANGE  # a subdirectory: its parent's listing tells the rest
            return MOVED if mask & IN_MOVE_SELF else GONE
        if not name:
            return CHANGE  # the directory's own attributes: it may have become (un)readable
        for kind, data in role:
            if kind is KUBELET:
                if name == _DATA:
                    return COMMIT if mask & IN_MOVED_TO else CHANGE
            elif kind is NAMES:
                if name in data:
                    return CHANGE
            elif name == _DATA or (not name.startswith(_DOTS)
                                   and self._counts(index, path, data, mask, name)):
                return CHANGE
        return None

    def _counts(self, index: int, path: str, prefix: str, mask: int, raw: bytes) -> bool:
        """Whether a name in a tree directory is one the digest reads (--include/--exclude)."""
        if not (self.include or self.exclude) or mask & IN_ISDIR:
            return True
        name = os.fsdecode(raw)
        rel = prefix + name
        if selected(rel, self.include, self.exclude):
            return True
        # A name left out as a file may still be a link to a directory, which is walked.
        if mask & (IN_CREATE | IN_MOVED_TO):
            return os.path.isdir(os.path.join(path, name))
        if mask & (IN_DELETE | IN_MOVED_FROM):
            return rel + "/" in self.walked.get(index, ())
        return False  # written, closed or chmod'ed: a file the digest never reads

    def close(self) -> None:
        self.inotify.close()
        self.users.clear()
        self.armed.clear()
        self.read_as.clear()


def _is_root(role) -> bool:
    return any(kind is not TREE or data == "" for kind, data in role)


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
