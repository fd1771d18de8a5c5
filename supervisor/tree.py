"""Walking a watched tree: the one walk the digest and polling share, so detection and hashing
never disagree about what is there.

The walk follows links as the app would, skips `..`-prefixed names (the kubelet's internals), and
lists every real directory once: a directory reached a second time (a link loop such as `x -> .`,
or two links to one directory) is cut, and so is a link to a directory above the watched one
(`up -> ..`, `root -> /`), so the walk is linear in the real tree and cannot hang PID 1.
Siblings are visited in sorted order, with a directory sorting as `name/`, which makes the order
of the yielded paths exactly the sorted order of the relative paths (no sort of the whole list
afterwards), and makes the copy that counts of a twice-linked directory the first one in that
order, whatever order the file system lists names in. It is iterative (a deep tree cannot hit
the recursion limit) and holds only the listings of the directories on the current path.

Kinds of what it yields:
    FILE        a regular file (or a link to one): the digest reads it
    UNREADABLE  cannot be stat'ed or listed (permissions, I/O error, a link loop of links)
    DANGLING    a link to nothing
    FIFO, SOCKET, CHAR, BLOCK   special files: counted by name and kind, never opened
"""
from __future__ import annotations

import errno
import os
import stat

FILE, UNREADABLE, DANGLING = "F", "U", "D"
FIFO, SOCKET, CHAR, BLOCK = "p", "s", "c", "b"
# Directories are descended into, never yielded (DIR is what kind_of_mode says of one).
DIR, _LINKED_DIR = "/", "@"
SPECIAL_NAMES = {FIFO: "a FIFO", SOCKET: "a socket", CHAR: "a character device", BLOCK: "a block device"}
# Errors that say nothing about the content, only about this moment (out of fds or memory):
# they are raised to the caller, which keeps the last result and tries again later. Any other
# error is part of what the app would see there, and is reported as UNREADABLE.
TRANSIENT = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EINTR})


def kind_of_mode(mode: int) -> str:
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISFIFO(mode):
        return FIFO
    if stat.S_ISSOCK(mode):
        return SOCKET
    if stat.S_ISCHR(mode):
        return CHAR
    return BLOCK if stat.S_ISBLK(mode) else UNREADABLE


def special_kind(path: str) -> str | None:
    """"a FIFO", "a socket", ... when `path` (links followed) is a special file; else None."""
    try:
        return SPECIAL_NAMES.get(kind_of_mode(os.stat(path).st_mode))
    except OSError:
        return None


def _entry_kind(entry: os.DirEntry) -> str:
    """The kind of an entry that is not a regular file (nor a link to one)."""
    if entry.is_dir():
        return _LINKED_DIR if entry.is_symlink() else DIR
    try:
        # A special file (d_type said so, or a link's target stat already cached), or a link
        # whose target is missing.
        return kind_of_mode(entry.stat().st_mode)
    except FileNotFoundError:
        return DANGLING


def _listing(path: str) -> tuple[list[str], dict[str, str]]:
    """The entries of one directory: their sort keys, sorted (the name, with a `/` appended for a
    directory), and the kind of each key that is not a FILE (most are files: a 1000-key ConfigMap
    sorts plain strings and needs no dict at all). Raises OSError when it cannot be listed."""
    keys, kinds = [], {}
    append = keys.append
    with os.scandir(path) as it:
        for entry in it:
            name = entry.name
            if name.startswith(".."):
                continue  # kubelet internals: ..data, ..data_tmp, ..2026_11_26_...
            try:
                if entry.is_file():  # the common case first: no system call for a plain entry
                    append(name)
                    continue
                kind = _entry_kind(entry)
            except OSError as exc:
                if exc.errno in TRANSIENT:
                    raise
                kind = UNREADABLE
            if kind is DIR or kind is _LINKED_DIR:
                name += "/"
            append(name)
            kinds[name] = kind
    keys.sort()
    return keys, kinds


def real_path(fd: int, path: str) -> str:
    """The real path of `path`, open as `fd`: one readlink of /proc/self/fd (os.path.realpath
    costs an lstat per component, which is most of the cost of digesting a small volume)."""
    try:
        found = os.readlink(f"/proc/self/fd/{fd}")
        if found.startswith("/") and not found.endswith(" (deleted)"):
            return found
    except OSError:
        pass  # no /proc
    return os.path.realpath(path)


def _cut(real: str) -> set:
    """(dev, ino) of the directory at `real` and of every directory above it: reaching one again
    is a loop (`x -> .`, `up -> ..`, `top -> /` all lead back to the watched directory)."""
    found = set()
    path = real
    while True:
        try:
            st = os.stat(path)
            found.add((st.st_dev, st.st_ino))
        except OSError:
            pass
        if path == "/" or not path:
            return found
        path = os.path.dirname(path)


def walk(base: str, start: str = "", dirs: list | None = None, real: str | None = None,
         prefixes: list | None = None):
    """Yield (relative path, kind) for everything below directory base/start, in sorted order of
    the relative paths. A directory that cannot be listed is yielded as UNREADABLE; one that
    vanished while walking is skipped. When `dirs` is a list, the real path of every directory
    listed is appended to it (what an inotify watcher must watch), and when `prefixes` is one
    too, in step with it the relative path under which that directory's names are yielded
    ("" for base, "sub/" for a subdirectory or a link to one); `real` is base/start's real path
    when the caller knows it. Raises OSError only for a TRANSIENT error, or
    FileNotFoundError/NotADirectoryError when base/start itself is gone."""
    top = os.path.join(base, start) if start else base
    try:
        listing = _listing(top)
    except (FileNotFoundError, NotADirectoryError):
        raise
    except OSError as exc:
        if exc.errno in TRANSIENT:
            raise
        yield (start or ".", UNREADABLE)
        return
    if real is None and dirs is not None:
        real = os.path.realpath(top)
    if dirs is not None:
        dirs.append(real)
        if prefixes is not None:
            prefixes.append(start + "/" if start else "")
    top_real = real
    seen = None  # looked up at the first subdirectory: a flat directory never needs it
    # One frame per directory on the current path: its relative prefix, real path, the kinds of
    # its non-files, and the iterator over its keys (left where it was while a subdirectory is
    # walked).
    keys, kinds = listing
    stack = [(start + "/" if start else "", real or "", kinds, iter(keys))]
    del listing, keys
    while stack:
        prefix, real, kinds, it = stack[-1]
        for key in it:
            kind = kinds.get(key, FILE) if kinds else FILE
            if kind is not DIR and kind is not _LINKED_DIR:
                yield (prefix + key if prefix else key, kind)
                continue
            name = key[:-1]
            rel = prefix + name
            path = os.path.join(base, rel)
            try:
                st = os.stat(path)
                ident = (st.st_dev, st.st_ino)
                if seen is None:
                    seen = _cut(top_real or os.path.realpath(top))
                if ident in seen:
                    continue  # a loop, or a second link to a directory already counted
                seen.add(ident)
                keys, child_kinds = _listing(path)
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed (or replaced) while we walked: it is simply gone
            except OSError as exc:
                if exc.errno in TRANSIENT:
                    raise
                yield (rel, UNREADABLE)  # permission denied, I/O error: part of what the app sees
                continue
            child_real = ""
            if dirs is not None:
                child_real = os.path.realpath(path) if kind is _LINKED_DIR else os.path.join(real, name)
                dirs.append(child_real)
                if prefixes is not None:
                    prefixes.append(rel + "/")
            stack.append((rel + "/", child_real, child_kinds, iter(keys)))
            del keys
            break  # walk the subdirectory first; this listing resumes after it
        else:
            stack.pop()


def resolve(root: str, only: str | None) -> tuple[str, str | None, str | None]:
    """Where a watch is read: (root, only, holder). A watched link to a directory outside a
    kubelet volume (`--watch /app/config` with `/app/config -> /etc/config`, maybe a volume) is
    read as that directory itself, with names relative to it; `holder` is then the real
    directory holding the link, where the link itself can be replaced."""
    if only is not None and not os.path.islink(os.path.join(root, "..data")):
        path = os.path.join(root, only)
        if os.path.isdir(path):
            return path, None, os.path.realpath(root)
    return root, only, None


def poll_signature(root: str, only: str | None):
    """A cheap fingerprint that moves whenever content may have moved, over exactly what the
    digest reads: for a kubelet volume the `..data` target; else the stat of every entry of the
    same walk, folded into one 128-bit hash (a poll holds 16 bytes, not a copy of every name).
    Never reads file contents and never raises: None while the path is missing."""
    import struct

    import xxhash

    root, only, _holder = resolve(root, only)
    try:
        return ("kubelet", os.readlink(os.path.join(root, "..data")))
    except OSError:
        pass
    if not os.path.isdir(root):
        return None
    pack = struct.Struct("<Q").pack
    stats = struct.Struct("<4Q2q").pack  # mtimes before 1970 are negative
    signature = xxhash.xxh3_128()
    try:
        if only is None:
            items = walk(root)
        else:
            items = [(only, FILE)] if os.path.lexists(os.path.join(root, only)) else []
        for rel, kind in items:
            encoded = rel.encode("utf-8", "surrogateescape")
            signature.update(b"".join((pack(len(encoded)), encoded, kind.encode())))
            if kind is FILE or kind in SPECIAL_NAMES:
                try:
                    st = os.stat(os.path.join(root, rel))
                except OSError:
                    signature.update(b"-")
                    continue
                signature.update(stats(st.st_dev, st.st_ino, st.st_size, st.st_mode,
                                       st.st_mtime_ns, st.st_ctime_ns))
    except (FileNotFoundError, NotADirectoryError):
        return None  # deleted while we looked
    except OSError as exc:  # TRANSIENT (out of fds): a signature of its own; the hash retries
        return ("failed", exc.errno)
    return ("plain", signature.hexdigest())
