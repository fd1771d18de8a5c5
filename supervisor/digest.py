"""The content digest of a watched path: a pure function of what the app would read there.

Sorted relative paths, each framed with its length and followed by the length-framed bytes, fed
to xxh3-128 (plus one xxh3-64 per top-level name, to tell which names changed). A kubelet volume (ConfigMap, Secret, projected, downwardAPI) is read through one
resolution of `..data`, so one digest never mixes two payloads; `..`-prefixed entries are the
kubelet's internals and never count. A plain directory with the same visible files gives the same
digest as the kubelet directory. Unreadable files count as a marker (never their content), so
becoming readable is a change.
"""
from __future__ import annotations

import errno
import os
import struct
from fnmatch import fnmatchcase
from typing import NamedTuple

import xxhash

MISSING = "missing"
_RETRIES = 8
# Errors that say nothing about the content, only about this moment (out of fds or memory):
# they are raised to the caller, which keeps the last digest and tries again later. Any other
# error reading a file marks it unreadable, which is part of the content.
TRANSIENT = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EINTR})


class Snapshot(NamedTuple):
    digest: str                   # 32 hex digits, or MISSING
    entries: dict[str, str]       # top-level name -> digest of that file or subtree
    unreadable: tuple[str, ...]   # relative paths that could not be read
    kubelet: bool                 # read through a `..data` link


_U64 = struct.Struct("<Q")  # length frames


def _selected(rel: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    base = rel.rpartition("/")[2]

    def hit(patterns):
        return any(fnmatchcase(rel, p) or ("/" not in p and fnmatchcase(base, p)) for p in patterns)

    if include and not hit(include):
        return False
    return not (exclude and hit(exclude))


def _walk(base: str, rel: str, files: list, unreadable: list, seen: set) -> None:
    """Collect (relative path, exists) for the files below base/rel, following links; a dangling
    link is listed with exists=False (its presence still counts)."""
    path = os.path.join(base, rel) if rel else base
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        if exc.errno in TRANSIENT:
            raise
        unreadable.append(rel or ".")  # permission denied, I/O error: part of what the app sees
        return
    prefix = rel + "/" if rel else ""
    for entry in entries:
        name = entry.name
        if name.startswith(".."):
            continue  # kubelet internals: ..data, ..data_tmp, ..2026_11_26_...
        child = prefix + name
        try:
            if entry.is_file():  # the common case first; both follow links, as the app would
                files.append((child, True))
            elif entry.is_dir():
                st = entry.stat()
                key = (st.st_dev, st.st_ino)
                if key not in seen:  # a link loop must not hang PID 1
                    seen.add(key)
                    _walk(base, child, files, unreadable, seen)
            elif entry.is_symlink() and not os.path.exists(entry.path):
                files.append((child, False))
        except OSError as exc:
            if exc.errno in TRANSIENT:
                raise
            unreadable.append(child)


_CHUNK = 1 << 16


def _read_rest(fd: int) -> bytes:
    """What follows the first chunk of a large file (a short first read was the whole file)."""
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _snapshot(base: str, only: str | None, include, exclude, kubelet: bool) -> Snapshot:
    files: list[tuple[str, bool]] = []
    unreadable: list[str] = []
    if only is not None:
        target = os.path.join(base, only)
        if os.path.isdir(target):
            _walk(base, only, files, unreadable, set())
        elif os.path.lexists(target):
            files.append((only, os.path.exists(target)))
        else:
            return Snapshot(MISSING, {}, (), kubelet)
    else:
        _walk(base, "", files, unreadable, set())
    files.sort()
    # The total digest is taken over every framed file in sorted order; each top-level name also
    # gets the digest of its own framed files, to tell which names changed.
    total = xxhash.xxh3_128()
    entries: dict[str, str] = {}
    nested: dict[str, xxhash.xxh3_64] = {}
    filtered = bool(include or exclude)
    pack = _U64.pack
    os_open, os_read, os_close, flags = os.open, os.read, os.close, os.O_RDONLY | os.O_CLOEXEC
    # O_PATH: only a handle for the relative opens below, needs no read permission of its own.
    dir_fd = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for rel, exists in files:
            if filtered and not _selected(rel, include, exclude):
                continue
            encoded = rel.encode("utf-8", "surrogateescape")
            try:
                if exists:
                    # _read, inlined: this loop runs once per file of a 1000-key ConfigMap
                    fd = os_open(rel, flags, dir_fd=dir_fd)
                    try:
                        data = os_read(fd, _CHUNK)
                        if len(data) == _CHUNK:
                            data += _read_rest(fd)
                    finally:
                        os_close(fd)
                else:
                    data = None
            except FileNotFoundError:
                if kubelet:
                    raise  # the payload dir went away under us: read the new one
                continue  # a plain file removed while we walked: it is simply gone
            except OSError as exc:
                if exc.errno in TRANSIENT:
                    raise
                data = None
                unreadable.append(rel)
            if data is None:
                piece = b"".join((pack(len(encoded)), encoded, b"U"))
            else:
                piece = b"".join((pack(len(encoded)), encoded, b"F", pack(len(data)), data))
            total.update(piece)
            if "/" not in rel:
                entries[rel] = xxhash.xxh3_64_hexdigest(piece)
            else:
                name = rel.partition("/")[0]
                part = nested.get(name)
                if part is None:
                    part = nested[name] = xxhash.xxh3_64()
                part.update(piece)
    finally:
        os.close(dir_fd)
    for name, part in nested.items():
        entries[name] = part.hexdigest()
    return Snapshot(total.hexdigest(), entries, tuple(sorted(set(unreadable))), kubelet)


def snapshot(root: str, only: str | None = None, include=(), exclude=()) -> Snapshot:
    """Digest of directory `root` (or only of its entry `only`, for a watched single file).
    Raises OSError only for a TRANSIENT error."""
    try:
        return _resolve_and_read(root, only, include, exclude)
    except OSError as exc:
        if exc.errno in TRANSIENT:
            raise
        # The directory itself cannot be opened (permissions on the way to it, say): that is
        # what the app sees too, so it is a content of its own, and its end is a change.
        return Snapshot(xxhash.xxh3_128_hexdigest(b"unreadable directory"), {}, (".",), False)


def _resolve_and_read(root: str, only: str | None, include, exclude) -> Snapshot:
    for _ in range(_RETRIES):
        try:
            target = os.readlink(os.path.join(root, "..data"))
        except OSError:
            target = None
        if target is None:
            try:
                return _snapshot(root, only, include, exclude, kubelet=False)
            except (FileNotFoundError, NotADirectoryError):
                return Snapshot(MISSING, {}, (), False)  # no such directory (any more)
        base = os.path.join(root, target)
        try:
            # `only` names a visible link `key -> ..data/key`: read it inside the resolved payload.
            snap = _snapshot(base, only, include, exclude, kubelet=True)
        except FileNotFoundError:
            continue  # swapped mid-read: resolve ..data again
        # The kubelet removes a payload dir only after swapping ..data away from it. So if ..data
        # still names the dir we read, nothing was removed under us and the read is one
        # consistent payload; otherwise whatever went missing meanwhile may be in the snapshot
        # (a subtree skipped, a name "unreadable"): read the new payload instead.
        try:
            if os.readlink(os.path.join(root, "..data")) == target:
                return snap
        except OSError:
            pass
    try:  # swapped under us every time: read through the visible links instead
        return _snapshot(root, only, include, exclude, kubelet=False)
    except (FileNotFoundError, NotADirectoryError):
        return Snapshot(MISSING, {}, (), False)


def short(digest: str | None) -> str:
    return "none" if digest is None else digest[:12]
