"""The digest: a pure function of visible content, kubelet-aware."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from hypothesis import given, settings, strategies as st

from kubelet import KubeletVolume
from supervisor.digest import MISSING, snapshot

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12).filter(
    lambda n: not n.startswith("..") and n != ".")
paths = st.lists(names, min_size=1, max_size=3).map("/".join)
payloads = st.dictionaries(paths, st.binary(max_size=64), min_size=1, max_size=8).filter(
    # a path cannot be both a file and a directory
    lambda d: not any(a != b and b.startswith(a + "/") for a in d for b in d))


def write_plain(root, payload, order=None):
    for rel in order or payload:
        full = os.path.join(root, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as fh:
            fh.write(payload[rel])


class Dirs:
    def __enter__(self):
        self.base = tempfile.mkdtemp(prefix="cfgsup-digest-")
        return self

    def new(self, name):
        path = os.path.join(self.base, name)
        os.makedirs(path)
        return path

    def __exit__(self, *exc):
        shutil.rmtree(self.base, ignore_errors=True)


@settings(max_examples=60, deadline=None)
@given(payloads, st.randoms())
def test_order_of_writing_does_not_matter(payload, rnd):
    order = list(payload)
    rnd.shuffle(order)
    with Dirs() as d:
        a, b = d.new("a"), d.new("b")
        write_plain(a, payload)
        write_plain(b, payload, order)
        assert snapshot(a).digest == snapshot(b).digest


@settings(max_examples=60, deadline=None)
@given(payloads)
def test_plain_and_kubelet_directories_agree(payload):
    with Dirs() as d:
        plain, kube = d.new("plain"), d.new("kube")
        write_plain(plain, payload)
        KubeletVolume(kube, payload)
        one, two = snapshot(plain), snapshot(kube)
        assert one.digest == two.digest and one.entries == two.entries
        assert two.kubelet and not one.kubelet


@settings(max_examples=60, deadline=None)
@given(payloads, st.data())
def test_any_byte_or_name_change_changes_the_digest(payload, data):
    rel = data.draw(st.sampled_from(sorted(payload)))
    mutated = dict(payload)
    if data.draw(st.booleans()):
        content = bytearray(payload[rel] or b"\0")
        index = data.draw(st.integers(0, len(content) - 1))
        content[index] ^= 1 << data.draw(st.integers(0, 7))
        mutated[rel] = bytes(content) if payload[rel] else b""  # flip a bit, or empty -> 1 byte
        if not payload[rel]:
            mutated[rel] = b"\0"
    else:
        mutated[rel + "x"] = mutated.pop(rel)
    with Dirs() as d:
        a, b = d.new("a"), d.new("b")
        write_plain(a, payload)
        write_plain(b, mutated)
        assert snapshot(a).digest != snapshot(b).digest


@settings(max_examples=40, deadline=None)
@given(payloads, st.binary(max_size=32))
def test_dotdot_internals_never_count(payload, junk):
    with Dirs() as d:
        root = d.new("v")
        volume = KubeletVolume(root, payload)
        before = snapshot(root).digest
        with open(os.path.join(root, "..stray"), "wb") as fh:
            fh.write(junk)
        os.mkdir(os.path.join(root, "..2001_01_01_00_00_00.1"))
        os.symlink(os.readlink(os.path.join(root, "..data")), os.path.join(root, "..data_tmp"))
        assert snapshot(root).digest == before
        volume.write(payload)  # unchanged payload: the kubelet writes nothing
        assert snapshot(root).digest == before


def test_touch_and_chmod_do_not_change_the_digest(tmp_path):
    write_plain(tmp_path, {"a": b"1", "sub/b": b"2"})
    before = snapshot(str(tmp_path)).digest
    os.utime(tmp_path / "a", (1, 1))
    os.chmod(tmp_path / "sub" / "b", 0o600)
    assert snapshot(str(tmp_path)).digest == before


def test_entries_name_the_changed_top_level_names(tmp_path):
    write_plain(tmp_path, {"a": b"1", "sub/b": b"2", "c": b"3"})
    before = snapshot(str(tmp_path)).entries
    (tmp_path / "sub" / "b").write_bytes(b"22")
    after = snapshot(str(tmp_path)).entries
    assert sorted(n for n in before if before[n] != after[n]) == ["sub"]


def test_single_file_and_missing(tmp_path):
    write_plain(tmp_path, {"a": b"1", "b": b"2"})
    a = snapshot(str(tmp_path), "a")
    assert list(a.entries) == ["a"]
    (tmp_path / "b").write_bytes(b"3")
    assert snapshot(str(tmp_path), "a").digest == a.digest
    assert snapshot(str(tmp_path), "nope").digest == MISSING
    assert snapshot(str(tmp_path / "gone")).digest == MISSING


def test_include_and_exclude(tmp_path):
    write_plain(tmp_path, {"a.conf": b"1", "b.txt": b"2", "sub/c.conf": b"3"})
    only_conf = snapshot(str(tmp_path), include=("*.conf",))
    assert sorted(only_conf.entries) == ["a.conf", "sub"]
    (tmp_path / "b.txt").write_bytes(b"changed")
    assert snapshot(str(tmp_path), include=("*.conf",)).digest == only_conf.digest
    assert sorted(snapshot(str(tmp_path), exclude=("sub/*",)).entries) == ["a.conf", "b.txt"]


def test_link_loop_does_not_hang(tmp_path):
    write_plain(tmp_path, {"a": b"1"})
    os.symlink(str(tmp_path), tmp_path / "loop")
    assert snapshot(str(tmp_path)).digest != MISSING


UNREADABLE = """
import os, sys
from supervisor.digest import snapshot  # imported first: /root is not readable by nobody
os.setgid(65534); os.setuid(65534)
s = snapshot(sys.argv[1])
print(s.digest, ",".join(s.unreadable))
"""


def test_unreadable_file_counts_as_a_marker_and_becoming_readable_is_a_change():
    base = tempfile.mkdtemp(prefix="cfgsup-unreadable-")
    try:
        os.chmod(base, 0o755)
        write_plain(base, {"ok": b"1", "secret": b"top secret"})
        os.chmod(os.path.join(base, "secret"), 0o600)  # root-owned: nobody cannot read it

        def as_nobody():
            out = subprocess.run([sys.executable, "-c", UNREADABLE, base], capture_output=True,
                                 text=True, timeout=30, cwd=os.path.dirname(os.path.dirname(__file__)))
            assert out.returncode == 0, out.stderr
            return out.stdout.split()

        digest, unreadable = as_nobody()
        assert unreadable == "secret"
        os.chmod(os.path.join(base, "secret"), 0o644)
        readable = as_nobody()
        assert len(readable) == 1 and readable[0] != digest
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_large_file_is_read_whole(tmp_path):
    big = os.urandom(300_000)  # several read chunks
    write_plain(tmp_path / "a", {"big.bin": big})
    KubeletVolume(tmp_path / "k", {"big.bin": big})
    flipped = big[:-1] + bytes([big[-1] ^ 1])
    write_plain(tmp_path / "b", {"big.bin": flipped})
    assert snapshot(str(tmp_path / "a")).digest == snapshot(str(tmp_path / "k")).digest
    assert snapshot(str(tmp_path / "a")).digest != snapshot(str(tmp_path / "b")).digest


def test_every_snapshot_is_one_whole_payload_while_the_kubelet_swaps():
    """Reading while the kubelet swaps and removes payload dirs must never give a mix, a
    skipped subtree or a false "unreadable": only ever one of the payloads that were there."""
    import threading

    payloads = [
        {"app.conf": b"a" * 100, "nested/deep.conf": b"x", "nested/more/z": b"1"},
        {"app.conf": b"b" * 100, "nested/deep.conf": b"y", "nested/more/z": b"2", "extra": b"e"},
    ]
    with Dirs() as d:
        expected = set()
        for n, payload in enumerate(payloads):
            plain = d.new(f"plain{n}")
            write_plain(plain, payload)
            expected.add(snapshot(plain).digest)
        volume = KubeletVolume(d.new("volume"), payloads[0])
        done = threading.Event()

        def swap():
            try:
                for n in range(400):
                    volume.write(payloads[(n + 1) % 2])
            finally:
                done.set()

        writer = threading.Thread(target=swap)
        writer.start()
        seen = []
        while not done.is_set():
            snap = snapshot(volume.path)
            assert snap.unreadable == ()
            seen.append(snap.digest)
        writer.join(timeout=30)
        assert seen and set(seen) <= expected, set(seen) - expected


# ---- streaming: chunks, memory -------------------------------------------------------------
def test_a_file_hashed_in_chunks_equals_the_same_content_read_at_once(tmp_path, monkeypatch):
    from supervisor import digest

    first = digest.FIRST
    sizes = [0, 1, 7, first - 1, first, first + 1, 2 * first, 3 * first + 5, digest.CHUNK + first + 3]
    payload = {f"f{size}": os.urandom(size) for size in sizes}
    payload["sub/big"] = os.urandom(3 * first + 1)
    write_plain(tmp_path / "plain", payload)
    volume = KubeletVolume(tmp_path / "kube", payload)

    def both():
        return [snapshot(str(tmp_path / "plain")), snapshot(volume.path)]

    normal = both()
    monkeypatch.setattr(digest, "FIRST", 7)  # every file but the smallest goes on in chunks...
    monkeypatch.setattr(digest, "CHUNK", 5)  # ... of a size that does not divide anything
    tiny = both()
    monkeypatch.setattr(digest, "FIRST", 1 << 22)  # every file in one read
    whole = both()
    for a, b, c in zip(normal, tiny, whole):
        assert a.digest == b.digest == c.digest
        assert a.entries == b.entries == c.entries
    # ... and the chunked path still sees every byte, the last ones included.
    monkeypatch.setattr(digest, "FIRST", 7)
    for rel in (f"f{first + 1}", "sub/big"):
        content = bytearray(payload[rel])
        content[-1] ^= 1
        write_plain(tmp_path / "plain", {rel: bytes(content)})
        changed = snapshot(str(tmp_path / "plain"))
        assert changed.digest != tiny[0].digest
        assert [n for n in changed.entries if changed.entries[n] != tiny[0].entries[n]] == [rel.split("/")[0]]
        write_plain(tmp_path / "plain", {rel: payload[rel]})


def test_a_file_that_keeps_growing_while_it_is_read_cannot_hold_the_loop(tmp_path, monkeypatch):
    from supervisor import digest

    monkeypatch.setattr(digest, "CHUNK", digest.FIRST)
    write_plain(tmp_path, {"log": os.urandom(3 * digest.FIRST)})
    path = str(tmp_path / "log")
    readv, reads = os.readv, []

    def growing(fd, buffers):  # a writer exactly as fast as the reader, for ever
        reads.append(1)
        assert len(reads) < 1000, "still reading"
        with open(path, "ab") as fh:
            fh.write(os.urandom(digest.FIRST))
        return readv(fd, buffers)

    monkeypatch.setattr(os, "readv", growing)
    assert snapshot(str(tmp_path)).digest != MISSING
    assert len(reads) <= 4


PEAK_RSS = """
import sys
from supervisor.digest import snapshot

def status(field):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) << 10 for line in fh if line.startswith(field + ":"))

snapshot(sys.argv[2])  # warm: every code path, a small file
# The high-water mark of this process's memory from here on: ru_maxrss would not do, as Linux
# carries it over from the parent (pytest) across fork and exec. Writing 5 resets VmHWM to VmRSS.
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
idle = status("VmRSS")
s = snapshot(sys.argv[1])
print(s.digest, status("VmHWM") - idle)
"""


def test_hashing_a_huge_file_keeps_memory_bounded(tmp_path):
    """Peak RSS while hashing a 200 MB file stays within 16 MiB of the process at rest."""
    (tmp_path / "big").mkdir()
    (tmp_path / "small").mkdir()
    with open(tmp_path / "big" / "huge.bin", "wb") as fh:
        fh.truncate(200 << 20)  # sparse: 200 MB of zeros, no disk needed
        fh.seek(100 << 20)
        fh.write(b"middle")  # not all zeros
    (tmp_path / "small" / "a").write_bytes(b"1")
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, str(tmp_path / "big"), str(tmp_path / "small")],
                         capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    digest, grew = out.stdout.split()
    assert digest != MISSING
    assert int(grew) < 16 << 20, f"peak RSS grew by {int(grew) >> 20} MiB while hashing 200 MB"


# ---- what the snapshot read: Snapshot.dirs -------------------------------------------------
def test_dirs_name_the_real_directories_read_through_links(tmp_path):
    write_plain(tmp_path / "elsewhere", {"linked.conf": b"1", "deeper/x": b"2"})
    write_plain(tmp_path / "conf", {"a.conf": b"1", "sub/b.conf": b"2"})
    os.symlink("../elsewhere", tmp_path / "conf" / "linked")
    snap = snapshot(str(tmp_path / "conf"))
    real = os.path.realpath(tmp_path)
    assert sorted(snap.dirs) == sorted(f"{real}/{d}" for d in
                                       ("conf", "conf/sub", "elsewhere", "elsewhere/deeper"))
    assert "linked" in snap.entries


def test_a_watched_link_to_a_directory_is_read_and_watched_as_that_directory(tmp_path):
    write_plain(tmp_path / "s" / "real", {"a.conf": b"1"})
    os.symlink("real", tmp_path / "s" / "link")
    via_link = snapshot(str(tmp_path / "s"), "link")  # how the loop passes `--watch s/link`
    real = os.path.realpath(tmp_path / "s")
    assert via_link.digest == snapshot(str(tmp_path / "s" / "real")).digest
    assert list(via_link.entries) == ["a.conf"]  # names relative to the watched directory
    # the target, where edits happen, and the directory holding the link, where it can be re-pointed
    assert sorted(via_link.dirs) == [real, real + "/real"]


def test_a_watched_link_to_a_kubelet_volume_reads_the_volume_and_watches_its_root(tmp_path):
    volume = KubeletVolume(tmp_path / "etc" / "config", {"app.conf": b"v1", "nested/deep": b"d"})
    (tmp_path / "app").mkdir()
    os.symlink(volume.path, tmp_path / "app" / "config")
    snap = snapshot(str(tmp_path / "app"), "config")
    assert snap.kubelet and snap.digest == snapshot(volume.path).digest
    assert os.path.realpath(volume.path) in snap.dirs  # where the ..data swap happens
    volume.write({"app.conf": b"v2", "nested/deep": b"d"})
    assert snapshot(str(tmp_path / "app"), "config").digest == snapshot(volume.path).digest != snap.digest


def test_tree_gives_each_walked_directory_the_prefix_its_names_have(tmp_path):
    """What an event in a real directory is about: `linked/x`, not `elsewhere/x`; and of two links
    to one directory, the first in sorted order (the one that counts)."""
    write_plain(tmp_path / "elsewhere", {"x": b"1", "deeper/y": b"2"})
    write_plain(tmp_path / "conf", {"a": b"1", "sub/b": b"2"})
    os.symlink("../elsewhere", tmp_path / "conf" / "linked")
    os.symlink("sub", tmp_path / "conf" / "also")  # sorts before sub: its copy counts
    snap = snapshot(str(tmp_path / "conf"))
    real = os.path.realpath(tmp_path)
    assert dict(snap.tree) == {f"{real}/conf": "", f"{real}/conf/sub": "also/",
                               f"{real}/elsewhere": "linked/", f"{real}/elsewhere/deeper": "linked/deeper/"}
    assert "also" in snap.entries and "sub" not in snap.entries
    assert snap.names == ()


def test_names_are_where_only_one_name_counts(tmp_path):
    write_plain(tmp_path / "s" / "real", {"a.conf": b"1"})
    write_plain(tmp_path / "files", {"target.conf": b"1"})
    os.symlink("real", tmp_path / "s" / "link")
    os.symlink("../files/target.conf", tmp_path / "s" / "app.conf")
    real = os.path.realpath(tmp_path)
    via_link = snapshot(str(tmp_path / "s"), "link")  # --watch s/link
    assert via_link.names == ((f"{real}/s", "link"),)  # it can be re-pointed there
    assert dict(via_link.tree) == {f"{real}/s/real": ""}
    linked_file = snapshot(str(tmp_path / "s"), "app.conf")  # --watch s/app.conf
    assert sorted(set(linked_file.names)) == [(f"{real}/files", "target.conf"), (f"{real}/s", "app.conf")]
    assert linked_file.tree == ()
    volume = KubeletVolume(tmp_path / "v", {"k": b"1"})
    assert snapshot(volume.path, "k").names == () and snapshot(volume.path).tree == ()


def test_a_kubelet_volume_is_watched_at_its_root_only(tmp_path):
    volume = KubeletVolume(tmp_path / "v", {"app.conf": b"v1", "nested/deep": b"d"})
    assert snapshot(volume.path).dirs == (os.path.realpath(volume.path),)
    assert snapshot(volume.path, "app.conf").dirs == (os.path.realpath(volume.path),)


def test_a_link_loop_is_cut_and_no_directory_repeats(tmp_path):
    write_plain(tmp_path / "d", {"a": b"1", "sub/b": b"2"})
    os.symlink(".", tmp_path / "d" / "x")
    os.symlink(".", tmp_path / "d" / "y")
    os.symlink("..", tmp_path / "d" / "sub" / "up")
    snap = snapshot(str(tmp_path / "d"))
    real = os.path.realpath(tmp_path / "d")
    assert sorted(snap.dirs) == [real, real + "/sub"]
    assert sorted(snap.entries) == ["a", "sub"]


UP = """
import sys
from supervisor.digest import snapshot
s = snapshot(sys.argv[1])
print(",".join(s.entries), len(s.dirs))
"""


def test_links_to_directories_above_the_watched_one_are_cut(tmp_path):
    """`up -> ..` and `top -> /` lead back to the watched directory: loops, not content to read
    (walking all of / would read /proc)."""
    write_plain(tmp_path / "conf", {"a": b"1"})
    write_plain(tmp_path, {"sibling/b": b"2"})
    os.symlink("..", tmp_path / "conf" / "up")
    os.symlink("/", tmp_path / "conf" / "top")
    out = subprocess.run([sys.executable, "-c", UP, str(tmp_path / "conf")], capture_output=True,
                         text=True, timeout=60, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["a", "1"]


def test_two_links_to_one_directory_count_the_same_way_whatever_the_listing_order(tmp_path, monkeypatch):
    """Each real directory counts once, under its first name in sorted order: so the digest does
    not depend on the order in which the file system lists names."""
    write_plain(tmp_path, {"target/f": b"1"})
    for name in ("a", "b", "c"):
        os.symlink("target", tmp_path / name)
    listed = snapshot(str(tmp_path))
    scandir = os.scandir

    class Reversed:  # the same entries, listed the other way round
        def __init__(self, path):
            with scandir(path) as it:
                self.entries = sorted(it, key=lambda e: e.name, reverse=True)

        def __enter__(self):
            return iter(self.entries)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(os, "scandir", Reversed)
    assert snapshot(str(tmp_path)) == listed


def remove_chain(top):
    """Remove top/d/d/d/...: shutil.rmtree (and pytest's clean-up of old tmp dirs) recurses."""
    while os.path.isdir(os.path.join(top, "d", "d")):
        os.rename(os.path.join(top, "d", "d"), os.path.join(top, "up"))
        shutil.rmtree(os.path.join(top, "d"))
        os.rename(os.path.join(top, "up"), os.path.join(top, "d"))
    shutil.rmtree(os.path.join(top, "d"), ignore_errors=True)


def test_a_tree_deeper_than_the_recursion_limit(tmp_path):
    depth = sys.getrecursionlimit() + 200
    deep = os.path.join(str(tmp_path), *["d"] * depth)
    try:
        fd = os.open(tmp_path, os.O_RDONLY)
        for _ in range(depth):  # not os.makedirs: it recurses
            os.mkdir("d", dir_fd=fd)
            fd, parent = os.open("d", os.O_RDONLY, dir_fd=fd), fd
            os.close(parent)
        os.close(fd)
        with open(os.path.join(deep, "f"), "wb") as fh:
            fh.write(b"1")
        before = snapshot(str(tmp_path))
        assert before.unreadable == () and len(before.dirs) == depth + 1
        with open(os.path.join(deep, "f"), "wb") as fh:
            fh.write(b"2")
        assert snapshot(str(tmp_path)).digest != before.digest
    finally:
        remove_chain(str(tmp_path))


# ---- special files -------------------------------------------------------------------------
SPECIALS = """
import os, socket, sys
from supervisor.digest import snapshot
root = sys.argv[1]
plain = snapshot(root).digest
os.mkfifo(os.path.join(root, "fifo"))
with_fifo = snapshot(root)
sock = socket.socket(socket.AF_UNIX)
sock.bind(os.path.join(root, "sock"))
with_sock = snapshot(root)
os.symlink("/dev/zero", os.path.join(root, "zero"))  # a device, reached the way the app would
with_zero = snapshot(root)
alone = snapshot(root, "fifo"), snapshot(root, "zero")  # a watched special file (--allow-missing)
print(len({plain, with_fifo.digest, with_sock.digest, with_zero.digest}),
      ",".join(sorted(with_zero.entries)), ",".join(with_zero.unreadable),
      alone[0].entries == {"fifo": with_zero.entries["fifo"]}, alone[1].digest != alone[0].digest)
"""


def test_special_files_count_by_kind_and_are_never_read(tmp_path):
    """A FIFO, a socket and a device in a watched directory are markers: their appearance changes
    the digest, and the read never blocks (a FIFO open would) or runs on (/dev/zero would)."""
    write_plain(tmp_path, {"a.conf": b"1"})
    out = subprocess.run([sys.executable, "-c", SPECIALS, str(tmp_path)], capture_output=True,
                         text=True, timeout=30, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "a.conf,fifo,sock,zero", "True", "True"]


RACE = """
import os, sys
from supervisor import digest
root, writer = sys.argv[1], sys.argv[2] == "writer"
if writer:  # a writer that holds the FIFO open and never writes: a read would block
    held = os.open(os.path.join(root, "fifo"), os.O_RDWR)
# As if each special file had replaced a regular file between the listing and the open.
fd = os.open(root, os.O_PATH)
raced = digest._hash(fd, [("fifo", "F"), ("zero", "F")], (), (), False, [])[0]
markers = digest._hash(fd, [("fifo", "p"), ("zero", "c")], (), (), False, [])[0]
print(raced == markers)
"""


@pytest.mark.parametrize("writer", ["writer", "no-writer"])
def test_a_regular_file_replaced_by_a_fifo_or_device_after_listing_does_not_block(tmp_path, writer):
    """The open never blocks (no writer), the read never blocks (a silent writer), and a device
    is not read past one chunk. With a writer, what is found is counted by its kind; with none,
    the FIFO reads as empty, and the next listing (the replacement is an event) counts its kind."""
    os.mkfifo(tmp_path / "fifo")
    os.symlink("/dev/zero", tmp_path / "zero")
    out = subprocess.run([sys.executable, "-c", RACE, str(tmp_path), writer], capture_output=True,
                         text=True, timeout=30, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    if writer == "writer":
        assert out.stdout.split() == ["True"]
    else:  # it returned (in time): a blocking open would have hung until the timeout
        assert out.stdout.split()[0] in ("True", "False")


# ---- a vanished payload --------------------------------------------------------------------
def test_data_link_to_a_vanished_payload_is_missing(tmp_path):
    volume = KubeletVolume(tmp_path / "v", {"app.conf": b"v1", "nested/deep": b"d"})
    good = snapshot(volume.path)
    payload = os.readlink(os.path.join(volume.path, "..data"))
    os.rename(os.path.join(volume.path, payload), tmp_path / "away")
    assert snapshot(volume.path).digest == MISSING  # not "a directory of dangling links"
    assert snapshot(volume.path, "app.conf").digest == MISSING
    assert snapshot(volume.path).dirs == (os.path.realpath(volume.path),)  # a fix is noticed
    (tmp_path / "file").write_bytes(b"not a directory")
    os.symlink(str(tmp_path / "file"), os.path.join(volume.path, "..data_tmp"))
    os.rename(os.path.join(volume.path, "..data_tmp"), os.path.join(volume.path, "..data"))
    assert snapshot(volume.path).digest == MISSING
    os.symlink(payload, os.path.join(volume.path, "..data_tmp"))
    os.rename(os.path.join(volume.path, "..data_tmp"), os.path.join(volume.path, "..data"))
    os.rename(tmp_path / "away", os.path.join(volume.path, payload))
    assert snapshot(volume.path) == good
