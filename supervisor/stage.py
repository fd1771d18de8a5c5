"""One stage directory (`--stage SRC:DEST`): cfgsup publishes SRC's content into DEST itself,
with the kubelet's own layout, so apps and tools see what a ConfigMap volume looks like:

    DEST/..2026_12_02_10_00_00.123456789/   one payload dir per generation (a copy of SRC)
    DEST/..data -> ..2026_12_02_...          the published generation, swapped by a rename
    DEST/key -> ..data/key                   the visible names
    DEST/..cfgsup-state                      cfgsup's own state (JSON), never part of a digest

A candidate generation is written next to the published one and is invisible to the app until
`publish()` swaps `..data` to it. Only the loop's thread calls in here; the state file is written
whole and renamed, so a crash leaves the old one or the new one.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import time

from . import tree

STATE = "..cfgsup-state"
LOCK = "..cfgsup-lock"
DATA = "..data"
_COPY = 1 << 20  # bytes per read while copying a file
_FIRST = 1 << 16  # as the digest reads: one read of this much, then up to the file's size


def is_gen(name) -> bool:
    """A generation's name as cfgsup makes them: `..YYYY_MM_DD_HH_MM_SS.NNNNNNNNN`, nothing else.
    What the state file or DEST says is checked against it, so `../../etc` is never removed."""
    return (isinstance(name, str) and len(name) == 31 and name.startswith("..") and name[21] == "."
            and name[2:21].replace("_", "").isdigit() and name[22:].isdigit())


class StageError(OSError):
    """Writing DEST failed (no space, read-only, ...): the trigger failed, not the content."""


def _gen_name() -> str:
    """Like the kubelet's payload dirs; the nanoseconds make the names sort by age."""
    now = time.time_ns()
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(now // 10**9))
    return f"..{stamp}.{now % 10**9:09d}"


class Stage:
    def __init__(self, src: str, dest: str):
        self.src = src
        self.dest = dest
        self.owners = os.geteuid() == 0  # only then can owners be kept (CAP_CHOWN)

    def __repr__(self) -> str:
        return f"<Stage {self.src} -> {self.dest}>"

    # ---- start -----------------------------------------------------------------------------
    def check(self) -> None:
        """At start: DEST is cfgsup's (empty, missing, or staged before). Raises ValueError."""
        src, dest = os.path.realpath(self.src), os.path.realpath(self.dest)
        if dest == src or dest.startswith(src + "/") or src.startswith(dest + "/"):
            raise ValueError(f"--stage {self.src}:{self.dest}: SRC and DEST must not contain each other")
        if not os.path.lexists(self.dest):
            try:
                os.makedirs(self.dest, 0o755)
            except OSError as exc:
                raise ValueError(f"--stage: cannot create {self.dest}: {exc.strerror}") from None
            return
        if not os.path.isdir(self.dest):
            raise ValueError(f"--stage: {self.dest} is not a directory")
        try:
            names = os.listdir(self.dest)
        except OSError as exc:
            raise ValueError(f"--stage: cannot list {self.dest}: {exc.strerror}") from None
        foreign = [n for n in names if not self._ours(n)]
        if foreign:
            raise ValueError(f"--stage: {self.dest} is not empty and was not staged by cfgsup "
                             f"({foreign[0]!r} is not cfgsup's; stage into an empty directory, "
                             f"e.g. an emptyDir)")
        if not os.access(self.dest, os.W_OK | os.X_OK):
            raise ValueError(f"--stage: {self.dest} is not writable for uid {os.geteuid()}")

    def _ours(self, name: str) -> bool:
        """What cfgsup makes in DEST: generations, ..data and its temporary links, its state and
        lock files, and visible links `key -> ..data/key`. (A cfgsup killed before its first
        state was written leaves only such things: the next one takes over.)"""
        if is_gen(name) or name in (DATA, LOCK) or name.startswith(("..data_tmp.", STATE)):
            return True
        try:
            return os.readlink(self.path(name)) == os.path.join(DATA, name)
        except OSError:
            return False

    def lock(self) -> None:
        """Hold DEST for this process (an flock the kernel drops when it dies): a second cfgsup
        on the same DEST would overwrite the state and prune the generations of the first.
        Raises ValueError when another one holds it."""
        import fcntl

        try:
            fd = os.open(os.path.join(self.dest, LOCK),
                         os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(f"--stage: {self.dest} is staged by another cfgsup already") from None
        except OSError as exc:
            raise ValueError(f"--stage: cannot lock {self.dest}: {exc.strerror}") from None
        self.lock_fd = fd  # kept open for the life of the process

    def load(self) -> dict:
        """The state kept in DEST, or {} when there is none, or it cannot be read or makes no
        sense (never followed through a link: DEST is writable by the pod's other users)."""
        try:
            fd = os.open(os.path.join(self.dest, STATE), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as fh:
                data = fh.read(1 << 20)  # a state is a few KiB; anything bigger is not ours
            state = json.loads(data)
        except (OSError, ValueError, RecursionError):
            return {}
        return state if isinstance(state, dict) and state.get("version") == 1 else {}

    def save(self, state: dict) -> None:
        """Write the state whole, then rename it over the old one. The temporary file gets a
        name of its own and is made new (O_EXCL, O_NOFOLLOW): a link planted in DEST is never
        written through."""
        state = dict(state, version=1)
        tmp = os.path.join(self.dest, f"{STATE}.{os.getpid()}.{time.time_ns()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                _write_all(fd, json.dumps(state, sort_keys=True).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, os.path.join(self.dest, STATE))
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise StageError(exc.errno, f"cannot write {STATE} in {self.dest}: {exc.strerror}") from None

    # ---- generations -----------------------------------------------------------------------
    def path(self, gen: str) -> str:
        return os.path.join(self.dest, gen)

    def published(self) -> str | None:
        try:
            target = os.readlink(os.path.join(self.dest, DATA))
        except OSError:
            return None
        return target if is_gen(target) and os.path.isdir(self.path(target)) else None

    def generations(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.dest) if is_gen(n))
        except OSError:
            return []

    def copy(self) -> str:
        """A new candidate generation holding SRC's content now; returns its name. A kubelet SRC
        is read through one resolution of its ..data, and read again if it was swapped
        meanwhile. Raises StageError when DEST cannot be written; an unreadable SRC file is
        an OSError of its own (ValueError), the content as the app would see it is incomplete."""
        for _ in range(8):
            try:
                base = os.path.join(self.src, os.readlink(os.path.join(self.src, DATA)))
                kubelet = True
            except OSError:
                base, kubelet = self.src, False
            gen = _gen_name()
            try:
                self._copy_tree(base, self.path(gen))
            except FileNotFoundError:
                self.remove(gen)
                if kubelet:
                    continue  # swapped under us: read the new payload
                raise
            except BaseException:
                self.remove(gen)
                raise
            if not kubelet or os.path.join(self.src, os.readlink(os.path.join(self.src, DATA))) == base:
                return gen
            self.remove(gen)
        raise StageError(errno.EAGAIN, f"{self.src} kept changing while it was copied")

    def _copy_tree(self, base: str, target: str) -> None:
        try:
            os.mkdir(target, 0o755)
        except OSError as exc:
            raise StageError(exc.errno, f"cannot write {self.dest}: {exc.strerror}") from None
        self._same_owner(base, target)
        dirs = []
        for rel, kind in tree.walk(base, dirs=dirs):
            self._not_into_dest(dirs)
            if kind == tree.UNREADABLE:
                raise ValueError(f"cannot read {os.path.join(self.src, rel)}")
            if kind != tree.FILE:
                continue  # dangling links and special files: nothing the app could read
            src_path, dst_path = os.path.join(base, rel), os.path.join(target, rel)
            parent = os.path.dirname(rel)
            if parent and not os.path.isdir(os.path.join(target, parent)):
                self._make_dirs(base, target, parent)
            self._copy_file(src_path, dst_path)
        self._not_into_dest(dirs)

    def _not_into_dest(self, dirs: list) -> None:
        """A link from SRC into DEST would make every publish change SRC, for ever."""
        inside = os.path.realpath(self.dest) + "/"
        while dirs:
            real = dirs.pop()  # each directory the walk entered, checked once
            if (real + "/").startswith(inside):
                raise ValueError(f"{self.src} links into {self.dest} ({real})")

    def _make_dirs(self, base: str, target: str, rel: str) -> None:
        parts = rel.split("/")
        for depth in range(1, len(parts) + 1):
            sub = "/".join(parts[:depth])
            dst = os.path.join(target, sub)
            if not os.path.isdir(dst):
                try:
                    os.mkdir(dst, stat.S_IMODE(os.stat(os.path.join(base, sub)).st_mode) | 0o700)
                except OSError as exc:
                    raise StageError(exc.errno, f"cannot write {self.dest}: {exc.strerror}") from None
                self._same_owner(os.path.join(base, sub), dst)

    def _copy_file(self, src_path: str, dst_path: str) -> None:
        fd = os.open(src_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO never blocks
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return  # replaced by something else meanwhile
            try:
                out = os.open(dst_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StageError(exc.errno, f"cannot write {self.dest}: {exc.strerror}") from None
            try:
                # What the digest reads, no more: one read, and if that was full, up to the size
                # the file has now (a file that keeps growing, or /proc's, cannot hold the loop).
                chunk, left = os.read(fd, _FIRST), 0
                if len(chunk) == _FIRST:
                    left = st.st_size - _FIRST
                while chunk:
                    try:
                        _write_all(out, chunk)
                    except OSError as exc:
                        raise StageError(exc.errno, f"cannot write {self.dest}: {exc.strerror}") from None
                    chunk = os.read(fd, min(_COPY, left)) if left > 0 else b""
                    left -= len(chunk)
                if self.owners:
                    os.fchown(out, st.st_uid, st.st_gid)
                os.fchmod(out, stat.S_IMODE(st.st_mode))  # after chown, which clears setuid bits
            finally:
                os.close(out)
        except PermissionError:
            raise ValueError(f"cannot read {src_path}") from None
        finally:
            os.close(fd)

    def _same_owner(self, src_path: str, dst_path: str) -> None:
        if self.owners:
            st = os.stat(src_path)
            try:
                os.chown(dst_path, st.st_uid, st.st_gid)
            except OSError:
                pass

    def publish(self, gen: str) -> None:
        """Make `gen` what the app sees: swap ..data to it (atomic), then the visible links. The
        links are put right even when ..data names `gen` already: a cfgsup killed between the
        swap and the links left them as they were."""
        data = os.path.join(self.dest, DATA)
        tmp = os.path.join(self.dest, f"..data_tmp.{os.getpid()}.{time.time_ns()}")
        try:
            if self.published() != gen:
                os.symlink(gen, tmp)  # a name of our own: nothing planted in DEST is in the way
                os.rename(tmp, data)
            wanted = {n for n in os.listdir(self.path(gen)) if not n.startswith("..")}
            for name in os.listdir(self.dest):
                if not name.startswith("..") and name not in wanted and os.path.islink(self.path(name)):
                    os.unlink(self.path(name))
            for name in sorted(wanted):
                link = self.path(name)
                if not os.path.islink(link):
                    os.symlink(os.path.join(DATA, name), link)
            dir_fd = os.open(self.dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StageError(exc.errno, f"cannot publish into {self.dest}: {exc.strerror}") from None

    def remove(self, gen: str | None) -> None:
        if not is_gen(gen):
            return
        import shutil

        shutil.rmtree(self.path(gen), ignore_errors=True)

    def prune(self, keep: set, newest: int) -> None:
        """Remove generations but those in `keep`, the published one and the `newest` others."""
        keep = set(keep) | {self.published()}
        others = [g for g in self.generations() if g not in keep]
        for gen in others[:max(0, len(others) - newest)]:
            self.remove(gen)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
