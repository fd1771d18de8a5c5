"""The content digest of a watched path: a pure function of what the app would read there.

Every file's bytes are hashed once, in fixed-size chunks, into its own xxh3-128. Each path then
gives one small record: its length-framed relative path, a kind byte, and for a regular file that
content digest. The total is the xxh3-128 of all records in sorted path order; each top-level name
gets the xxh3-64 of its own records (to tell which names changed) without a second pass over any
content. Memory while hashing stays at one chunk whatever the file sizes.

A kubelet volume (ConfigMap, Secret, projected, downwardAPI) is read through one resolution of
`..data`, so one digest never mixes two payloads; `..`-prefixed entries are the kubelet's
internals and never count. A plain directory with the same visible files gives the same digest as
the kubelet directory. An unreadable file counts as a marker (never its content), so becoming
readable is a change; a FIFO, socket or device counts by name and kind and is never read.
"""
from __future__ import annotations

import os
import struct
from collections import namedtuple

import xxhash

from .tree import DANGLING, DIR, FILE, TRANSIENT, UNREADABLE, kind_of_mode, real_path, resolve, walk

__all__ = ["MISSING", "TRANSIENT", "Snapshot", "snapshot", "short"]

MISSING = "missing"
_RETRIES = 8
# One read of FIRST bytes is all a small file costs (open, read, close); a larger file goes on in
# chunks of CHUNK bytes into one buffer (100 MB measured 1.0x the read+hash floor with 1 MiB
# chunks against 1.5x with 64 KiB ones; the buffer lives only while that file is read).
FIRST = 1 << 16
CHUNK = 1 << 20
_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY  # never block, never a tty
_MARK = {kind: kind.encode() for kind in (FILE, UNREADABLE, DANGLING, "p", "s", "c", "b")}


# digest: 32 hex digits, or MISSING; entries: top-level name -> digest of that file or subtree;
# unreadable: relative paths that could not be read; kubelet: read through a `..data` link;
# dirs: the real directories this snapshot read, what an inotify watcher must watch to see every
# change to it (links followed; for a kubelet volume its root, where `..data` swaps). Of those,
# tree: the ones the walk listed, each with the relative path its names have here ("" for the
# watched directory, "sub/" for a subdirectory or a link to one), as (dir, prefix) pairs; and
# names: the ones where a single name counts, as (dir, name) pairs: the directory holding a
# watched file or link, and the one where a linked watched file really lives. Any other is a
# kubelet volume's root, where only `..data` counts.
# (A namedtuple, not typing.NamedTuple: PID 1 need not import typing.)
Snapshot = namedtuple("Snapshot", "digest entries unreadable kubelet dirs tree names",
                      defaults=((), (), ()))


class _Seen:
    """What one read looked at, gathered for its Snapshot (see dirs, tree and names there)."""
    __slots__ = ("dirs", "tree", "names")

    def __init__(self, dirs=(), tree=(), names=()):
        self.dirs, self.tree, self.names = list(dirs), list(tree), list(names)

    def copy(self) -> "_Seen":
        return _Seen(self.dirs, self.tree, self.names)

    def named(self, directory: str, name: str) -> None:
        if directory not in self.dirs:
            self.dirs.append(directory)
        self.names.append((directory, name))

    def snap(self, digest, entries, unreadable, kubelet) -> Snapshot:
        return Snapshot(digest, entries, unreadable, kubelet, tuple(self.dirs), tuple(self.tree),
                        tuple(self.names))


_U64 = struct.Struct("<Q")  # length frames


def selected(rel: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    base = rel.rpartition("/")[2]

    def hit(patterns):
        from fnmatch import fnmatchcase  # only with --include/--exclude: it imports re

        return any(fnmatchcase(rel, p) or ("/" not in p and fnmatchcase(base, p)) for p in patterns)

    if include and not hit(include):
        return False
    return not (exclude and hit(exclude))


def _large(fd: int, first: bytes):
    """(FILE, content digest) of a file whose first read was full, or (kind, None) when it is not
    a regular file after all (replaced by a FIFO or device since it was listed). Reads up to the
    size the file has now: one that keeps growing cannot hold the loop."""
    st = os.fstat(fd)
    kind = kind_of_mode(st.st_mode)
    if kind is not FILE:
        return kind, None
    content = xxhash.xxh3_128(first)
    left = st.st_size - len(first)
    if left > 0:
        size = min(CHUNK, left)
        buf = bytearray(size)  # the one buffer every chunk of this file is read into
        view = memoryview(buf)
        while left > 0:
            n = os.readv(fd, (buf,) if left >= size else (view[:left],))
            if not n:
                break  # shrunk meanwhile: its end is here
            content.update(buf if n == size else view[:n])
            left -= n
    return FILE, content.digest()


def _hash(dir_fd: int, items, include, exclude, kubelet: bool, unreadable: list):
    """(total digest, entries) over (relative path, kind) items in sorted order, files opened
    relative to dir_fd; the paths of unreadable ones are appended to `unreadable`."""
    total = xxhash.xxh3_128()
    entries: dict[str, str] = {}
    top, part = None, None  # the top-level directory being hashed and its hasher
    filtered = bool(include or exclude)
    pack, join, mark = _U64.pack, b"".join, _MARK
    os_open, os_read, os_close = os.open, os.read, os.close
    digest_of, short_digest = xxhash.xxh3_128_digest, xxhash.xxh3_64_hexdigest
    file, flags, first = FILE, _FLAGS, FIRST  # locals: this loop runs once per file
    for rel, kind in items:
        if filtered and not selected(rel, include, exclude):
            continue
        content = None
        if kind is file:
            try:
                fd = os_open(rel, flags, dir_fd=dir_fd)
                try:
                    data = os_read(fd, first)
                    if len(data) < first:  # the whole file: the common case, one read
                        content = digest_of(data)
                    else:
                        kind, content = _large(fd, data)
                except BlockingIOError:  # a FIFO since it was listed, with a writer
                    kind = kind_of_mode(os.fstat(fd).st_mode)
                    if kind is FILE:
                        kind = UNREADABLE  # a regular file that would block (procfs)
                finally:
                    os_close(fd)
            except FileNotFoundError:
                if kubelet:
                    raise  # the payload dir went away under us: read the new one
                continue  # a plain file removed while we walked: it is simply gone
            except OSError as exc:
                if exc.errno in TRANSIENT:
                    raise
                kind = UNREADABLE
        try:
            encoded = rel.encode()
        except UnicodeEncodeError:  # a name that is not UTF-8 on disk
            encoded = rel.encode("utf-8", "surrogateescape")
        if content is None:
            if kind is UNREADABLE:
                unreadable.append(rel)
            record = join((pack(len(encoded)), encoded, mark.get(kind, b"U")))
        else:
            record = join((pack(len(encoded)), encoded, b"F", content))
        total.update(record)
        slash = rel.find("/")
        if slash < 0:
            if part is not None:
                entries[top], top, part = part.hexdigest(), None, None
            entries[rel] = short_digest(record)
            continue
        name = rel[:slash]
        if name != top:  # sorted order: a subtree's records are contiguous
            if part is not None:
                entries[top] = part.hexdigest()
            top, part = name, xxhash.xxh3_64()
        part.update(record)
    if part is not None:
        entries[top] = part.hexdigest()
    return total.hexdigest(), entries


def _snapshot(base: str, only: str | None, include, exclude, kubelet: bool, seen: _Seen) -> Snapshot:
    """Read directory `base` (a payload dir when `kubelet`), or only its entry `only`. Adds to
    `seen` the real directories read. Raises FileNotFoundError when base is gone."""
    # O_PATH: a handle for the relative opens, needs no read permission of its own.
    dir_fd = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        real = real_path(dir_fd, base)
        if kubelet:  # the volume root, where ..data swaps: the payload dirs never change
            seen.dirs.append(os.path.dirname(real))
        elif only is not None:  # where the watched name can be created or replaced
            seen.named(real, only)
        unreadable: list[str] = []
        walked: list[str] = []
        prefixes: list[str] = []
        if only is None:
            items = walk(base, "", None if kubelet else walked, real, prefixes)
        else:
            try:
                kind = kind_of_mode(os.stat(only, dir_fd=dir_fd).st_mode)
            except FileNotFoundError:
                if not os.path.lexists(os.path.join(base, only)):
                    return seen.snap(MISSING, {}, (), kubelet)
                kind = DANGLING
            except OSError as exc:
                if exc.errno in TRANSIENT:
                    raise
                kind = UNREADABLE
            if kind is DIR:
                items = walk(base, only)  # `sub -> ..data/sub`: a nested item path of a volume
            else:
                items = ((only, kind),)
                if not kubelet and kind is not DANGLING:  # where a linked file really lives
                    where = os.path.realpath(os.path.join(base, only))
                    seen.named(os.path.dirname(where), os.path.basename(where))
        digest, entries = _hash(dir_fd, items, include, exclude, kubelet, unreadable)
    finally:
        os.close(dir_fd)
    seen.dirs.extend(walked)
    seen.tree.extend(zip(walked, prefixes))
    return seen.snap(digest, entries, tuple(sorted(set(unreadable))) if unreadable else (), kubelet)


def snapshot(root: str, only: str | None = None, include=(), exclude=()) -> Snapshot:
    """Digest of directory `root` (or only of its entry `only`, for a watched single file).
    Raises OSError only for a TRANSIENT error."""
    root, only, holder = resolve(root, only)
    seen = _Seen()
    if holder:  # where the watched link itself can be replaced or re-pointed
        seen.named(holder, os.path.basename(root))
    try:
        return _resolve_and_read(root, only, include, exclude, seen)
    except OSError as exc:
        if exc.errno in TRANSIENT:
            raise
        # The directory itself cannot be opened (permissions on the way to it, say): that is
        # what the app sees too, so it is a content of its own, and its end is a change.
        return seen.snap(xxhash.xxh3_128_hexdigest(b"unreadable directory"), {}, (".",), False)


def _plain(root: str, only: str | None, include, exclude, seen: _Seen) -> Snapshot:
    try:
        return _snapshot(root, only, include, exclude, False, seen.copy())
    except (FileNotFoundError, NotADirectoryError):
        return seen.snap(MISSING, {}, (), False)  # no such directory (any more)


def _resolve_and_read(root: str, only: str | None, include, exclude, seen: _Seen) -> Snapshot:
    dangling = 0
    for _ in range(_RETRIES):
        try:
            target = os.readlink(os.path.join(root, "..data"))
        except OSError:
            return _plain(root, only, include, exclude, seen)
        base = os.path.join(root, target)
        try:
            # `only` names a visible link `key -> ..data/key`: read it inside the resolved payload.
            # (A target that is not a name in root, unlike the kubelet's: watch root itself too.)
            read = seen.copy()
            if "/" in target:
                read.dirs.append(os.path.realpath(root))
            snap = _snapshot(base, only, include, exclude, True, read)
        except (FileNotFoundError, NotADirectoryError):
            # Swapped mid-read: resolve ..data again. Or ..data names no directory at all.
            dangling += not os.path.isdir(base) and _readlink(root) == target
            continue
        # The kubelet removes a payload dir only after swapping ..data away from it. So if ..data
        # still names the dir we read, nothing was removed under us and the read is one
        # consistent payload; otherwise whatever went missing meanwhile may be in the snapshot
        # (a subtree skipped, a name "unreadable"): read the new payload instead.
        if _readlink(root) == target:
            return snap
    if dangling == _RETRIES:
        # ..data names a directory that is not there, every time: the volume's content is gone,
        # as if the watched directory were deleted (not "a directory of dangling links").
        gone = seen.copy()
        gone.dirs.append(os.path.realpath(root))  # where ..data can be swapped to a real one
        return gone.snap(MISSING, {}, (), True)
    # Swapped under us every time: read through the visible links instead.
    return _plain(root, only, include, exclude, seen)


def _readlink(root: str) -> str | None:
    try:
        return os.readlink(os.path.join(root, "..data"))
    except OSError:
        return None


def short(digest: str | None) -> str:
    return "none" if digest is None else digest[:12]
