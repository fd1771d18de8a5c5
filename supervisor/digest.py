"""The content digest of a watched path: a pure function of what the app would read there.

Sorted relative paths, each framed with its length and followed by the length-framed bytes, fed
to xxh3 (one 64-bit digest per top-level name, one 128-bit digest over those). A kubelet volume (ConfigMap, Secret, projected, downwardAPI) is read through one
resolution of `..data`, so one digest never mixes two payloads; `..`-prefixed entries are the
kubelet's internals and never count. A plain directory with the same visible files gives the same
digest as the kubelet directory. Unreadable files count as a marker (never their content), so
becoming readable is a change.
"""
from __future__ import annotations

import os
import struct
from fnmatch import fnmatchcase
from typing import NamedTuple

import xxhash

MISSING = "missing"
_RETRIES = 8


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
    """Collect (relative path, absolute path) of the regular files below base/rel, following links."""
    path = os.path.join(base, rel) if rel else base
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except PermissionError:
        unreadable.append(rel or ".")
        return
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.name.startswith(".."):
            continue  # kubelet internals: ..data, ..data_tmp, ..2026_11_26_...
        child = f"{rel}/{entry.name}" if rel else entry.name
        try:
            if entry.is_dir():  # follows symlinks, like the app opening a path would
                st = entry.stat()
                key = (st.st_dev, st.st_ino)
                if key not in seen:  # a link loop must not hang PID 1
                    seen.add(key)
                    _walk(base, child, files, unreadable, seen)
            elif entry.is_file():
                files.append((child, entry.path))
            elif entry.is_symlink() and not os.path.exists(entry.path):
                files.append((child, None))  # dangling link: its presence still counts
        except OSError:
            unreadable.append(child)


_CHUNK = 1 << 16


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, _CHUNK)
        if len(data) < _CHUNK:
            return data  # a short read of a regular file is its end: saves a syscall per file
        chunks = [data]
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _snapshot(base: str, only: str | None, include, exclude, kubelet: bool) -> Snapshot:
    files: list[tuple[str, str | None]] = []
    unreadable: list[str] = []
    if only is not None:
        target = os.path.join(base, only)
        if os.path.isdir(target):
            _walk(base, only, files, unreadable, set())
        elif os.path.lexists(target):
            files.append((only, target if os.path.exists(target) else None))
        else:
            return Snapshot(MISSING, {}, (), kubelet)
    else:
        _walk(base, "", files, unreadable, set())
    files.sort()
    # Each top-level name gets the digest of its framed files; the total digest is taken over
    # the sorted (name, entry digest) pairs, so every byte is hashed exactly once.
    entries: dict[str, str] = {}
    nested: dict[str, xxhash.xxh3_64] = {}
    filtered = bool(include or exclude)
    pack = _U64.pack
    for rel, path in files:
        if filtered and not _selected(rel, include, exclude):
            continue
        encoded = rel.encode("utf-8", "surrogateescape")
        try:
            data = _read(path) if path is not None else None
        except FileNotFoundError:
            if kubelet:
                raise  # the payload dir went away under us: read the new one
            continue  # a plain file removed while we walked: it is simply gone
        except OSError:
            data = None
            unreadable.append(rel)
        if data is None:
            piece = b"".join((pack(len(encoded)), encoded, b"U"))
        else:
            piece = b"".join((pack(len(encoded)), encoded, b"F", pack(len(data)), data))
        name, nested_path, _ = rel.partition("/")
        if nested_path:
            part = nested.get(name)
            if part is None:
                part = nested[name] = xxhash.xxh3_64()
            part.update(piece)
        else:
            entries[name] = xxhash.xxh3_64_hexdigest(piece)
    for name, part in nested.items():
        entries[name] = part.hexdigest()
    total = xxhash.xxh3_128()
    for name in sorted(entries):
        encoded = name.encode("utf-8", "surrogateescape")
        total.update(b"".join((pack(len(encoded)), encoded, entries[name].encode())))
    return Snapshot(total.hexdigest(), entries, tuple(sorted(set(unreadable))), kubelet)


def snapshot(root: str, only: str | None = None, include=(), exclude=()) -> Snapshot:
    """Digest of directory `root` (or only of its entry `only`, for a watched single file)."""
    for _ in range(_RETRIES):
        try:
            target = os.readlink(os.path.join(root, "..data"))
        except OSError:
            target = None
        if target is None:
            if not os.path.isdir(root):
                return Snapshot(MISSING, {}, (), False)
            return _snapshot(root, only, include, exclude, kubelet=False)
        base = os.path.join(root, target)
        try:
            # `only` names a visible link `key -> ..data/key`: read it inside the resolved payload.
            snap = _snapshot(base, only, include, exclude, kubelet=True)
        except FileNotFoundError:
            continue  # swapped mid-read: resolve ..data again
        if snap.entries or os.path.isdir(base):
            return snap
    return _snapshot(root, only, include, exclude, kubelet=False)


def short(digest: str | None) -> str:
    return "none" if digest is None else digest[:12]
