"""The digest: a pure function of visible content, kubelet-aware."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

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
