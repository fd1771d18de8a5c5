"""The one walk the digest and polling share: loop-safe, sorted, and what polling sees."""
from __future__ import annotations

import errno
import os
import subprocess
import sys

from hypothesis import given, settings, strategies as st

from conftest import APP
from kubelet import KubeletVolume
from supervisor import tree
from supervisor.digest import snapshot
from supervisor.tree import poll_signature, walk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
segments = st.text(alphabet="ab-_.0", min_size=1, max_size=3).filter(lambda n: not n.startswith(".."))
paths = st.lists(segments.filter(lambda n: n != "."), min_size=1, max_size=3).map("/".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(paths, min_size=1, max_size=12, unique=True))
def test_the_walk_yields_the_sorted_relative_paths(tmp_path_factory, paths):
    """Siblings sorted with a directory as `name/` give exactly the sorted order of the paths
    ("a-b" sorts before "a/b"): the digest needs no sort of the whole list."""
    root = tmp_path_factory.mktemp("w")
    files = []
    for rel in sorted(paths, key=len, reverse=True):  # the deepest first: a file cannot hide a dir
        full = os.path.join(root, rel)
        if any(f.startswith(rel + "/") for f in files) or os.path.isdir(full):
            continue
        if any(rel.startswith(f + "/") for f in files):
            continue
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb"):
            pass
        files.append(rel)
    got = [rel for rel, kind in walk(str(root))]
    assert got == sorted(files)


LOOPS = """
import os, sys
from supervisor.tree import poll_signature
from supervisor.digest import snapshot
print(poll_signature(sys.argv[1], None)[0], len(snapshot(sys.argv[1]).dirs))
"""


def test_polling_a_directory_with_link_loops_finishes(tmp_path):
    """`x -> .` and `y -> .`: os.walk(followlinks=True) ran for ever (and grew) on this."""
    (tmp_path / "a.conf").write_bytes(b"1")
    os.symlink(".", tmp_path / "x")
    os.symlink(".", tmp_path / "y")
    out = subprocess.run([sys.executable, "-c", LOOPS, str(tmp_path)], capture_output=True, text=True,
                         timeout=30, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["plain", "1"]


def test_polling_and_the_digest_move_together(tmp_path):
    """Every change the digest counts moves the poll signature too: the same walk, the same links."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "linked.conf").write_bytes(b"1")
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.conf").write_bytes(b"1")
    os.symlink("../outside", conf / "sub")

    def edit_linked():
        (tmp_path / "outside" / "linked.conf").write_bytes(b"22")

    changes = [
        edit_linked,
        lambda: (tmp_path / "outside" / "new.conf").write_bytes(b"3"),
        lambda: os.mkfifo(conf / "fifo"),
        lambda: os.symlink("nowhere", conf / "dangling"),
        lambda: os.symlink(".", conf / "loop"),  # cut: nothing new to count, nothing new to poll
    ]
    for n, change in enumerate(changes):
        digest, signature = snapshot(str(conf)).digest, poll_signature(str(conf), None)
        change()
        moved = snapshot(str(conf)).digest != digest, poll_signature(str(conf), None) != signature
        assert moved == ((True, True) if n < 4 else (False, False)), n


def test_polling_a_watched_link_to_a_directory_sees_edits_inside_it(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.conf").write_bytes(b"1")
    os.symlink("real", tmp_path / "link")
    before = poll_signature(str(tmp_path), "link")  # `--watch s/link`: root s, only link
    (tmp_path / "real" / "a.conf").write_bytes(b"22")
    assert poll_signature(str(tmp_path), "link") != before


def test_polling_a_watched_link_to_a_kubelet_volume_follows_its_swaps(tmp_path):
    volume = KubeletVolume(tmp_path / "etc", {"app.conf": b"v1"})
    (tmp_path / "app").mkdir()
    os.symlink(volume.path, tmp_path / "app" / "config")
    before = poll_signature(str(tmp_path / "app"), "config")
    assert before == ("kubelet", os.readlink(os.path.join(volume.path, "..data")))
    volume.write({"app.conf": b"v2"})
    assert poll_signature(str(tmp_path / "app"), "config") != before


def test_polling_never_raises(tmp_path, monkeypatch):
    (tmp_path / "a").write_bytes(b"1")

    def out_of_fds(path):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "scandir", out_of_fds)
    assert poll_signature(str(tmp_path), None) == ("failed", errno.EMFILE)
    assert poll_signature(str(tmp_path / "gone"), None) is None


def test_special_kind_names_what_cannot_be_watched(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    os.symlink("/dev/null", tmp_path / "null")
    (tmp_path / "file").write_bytes(b"")
    assert tree.special_kind(str(tmp_path / "fifo")) == "a FIFO"
    assert tree.special_kind(str(tmp_path / "null")) == "a character device"
    assert tree.special_kind(str(tmp_path / "file")) is None
    assert tree.special_kind(str(tmp_path)) is None


def test_poll_mode_sees_edits_through_a_watched_link_to_a_directory(run_cfgsup, tmp_path):
    """issue 9 item 4, with --poll: `--watch s/link` noticed nothing, ever."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.conf").write_bytes(b"a")
    os.symlink("real", tmp_path / "link")
    running = run_cfgsup("--poll", "0.1", "--debounce", "0.1", "--watch", str(tmp_path / "link"),
                         "--on-change", "signal", "--", *APP)
    running.wait_line(r"^child ready")
    running.wait_line(r"INFO watching")
    (tmp_path / "real" / "a.conf").write_bytes(b"b")
    running.wait_line(r"^child got SIGHUP$")
    running.wait_line(r"change in .*link: a.conf ")
