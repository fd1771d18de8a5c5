"""The inotify watcher in-process, on real directories: what each event means for which watch."""
from __future__ import annotations

import os
import select
import shutil

import pytest

from kubelet import KubeletVolume
from supervisor.digest import snapshot
from supervisor.watcher import CHANGE, COMMIT, GONE, MOVED, OVERFLOW, READS, InotifyWatcher


@pytest.fixture
def watcher():
    made = []

    def make(include=(), exclude=()):
        made.append(InotifyWatcher(include, exclude))
        return made[-1]

    yield make
    for w in made:
        w.close()


def write(path, text="x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)


def wds(w):
    """The inotify watches the kernel holds for this watcher's fd."""
    with open(f"/proc/self/fdinfo/{w.fd}") as fh:
        return sum(1 for line in fh if line.startswith("inotify wd:"))


def test_a_kubelet_swap_is_one_commit_and_nothing_else(watcher, tmp_path):
    volume = KubeletVolume(tmp_path / "v", {"a.conf": "1", "nested/b": "2"})
    w = watcher()
    w.arm(0, snapshot(volume.path))
    volume.write({"a.conf": "2", "nested/b": "2", "new.conf": "3"})  # a new key: a new visible link
    assert w.read() == {(COMMIT, 0)}


def test_the_apps_own_reads_wake_nothing(watcher, tmp_path):
    write(str(tmp_path / "c" / "a.conf"), "1")
    w = watcher()
    w.arm(0, snapshot(str(tmp_path / "c")))
    for _ in range(3):
        with open(tmp_path / "c" / "a.conf") as fh:
            fh.read()
        os.listdir(tmp_path / "c")
    assert w.read() == set()
    assert select.select([w.fd], [], [], 0)[0] == []  # nothing queued at all: no wake-up


def test_a_shared_directory_tells_every_watch_and_outlives_one_of_them(watcher, tmp_path):
    write(str(tmp_path / "c" / "a.conf"))
    w = watcher()
    snap = snapshot(str(tmp_path / "c"))
    w.arm(0, snap)
    w.arm(1, snap)
    assert wds(w) == 1
    write(str(tmp_path / "c" / "a.conf"), "2")
    assert w.read() == {(CHANGE, 0), (CHANGE, 1)}
    w.disarm(0)
    write(str(tmp_path / "c" / "a.conf"), "3")
    assert w.read() == {(CHANGE, 1)} and wds(w) == 1
    w.disarm(1)
    assert wds(w) == 0


def test_rearming_adds_new_directories_and_drops_gone_ones(watcher, tmp_path):
    root = tmp_path / "c"
    write(str(root / "sub" / "a"))
    w = watcher()
    assert w.arm(0, snapshot(str(root))) is True
    assert w.arm(0, snapshot(str(root))) is False  # the same directories: nothing to do
    write(str(root / "new" / "b"))
    assert w.read() == {(CHANGE, 0)}
    assert w.arm(0, snapshot(str(root))) is True and wds(w) == 3
    shutil.rmtree(root / "sub")
    w.read()
    w.arm(0, snapshot(str(root)))
    assert wds(w) == 2
    write(str(root / "new" / "c"))  # a file in a new directory is seen
    assert w.read() == {(CHANGE, 0)}


def test_links_are_watched_where_they_lead(watcher, tmp_path):
    write(str(tmp_path / "elsewhere" / "x.conf"))
    write(str(tmp_path / "s" / "real" / "a.conf"))
    os.symlink("real", tmp_path / "s" / "link")
    os.symlink(str(tmp_path / "elsewhere"), tmp_path / "s" / "real" / "linked")
    w = watcher()
    w.arm(0, snapshot(str(tmp_path / "s"), "link"))  # `--watch s/link`
    write(str(tmp_path / "elsewhere" / "x.conf"), "2")  # below a linked subdirectory
    assert w.read() == {(CHANGE, 0)}
    write(str(tmp_path / "s" / "unrelated"))  # beside the watched link: not ours
    assert w.read() == set()
    os.symlink("elsewhere", tmp_path / "s" / "tmp")
    os.rename(tmp_path / "s" / "tmp", tmp_path / "s" / "link")  # `ln -sfn` re-points it
    assert w.read() == {(CHANGE, 0)}


def test_a_link_to_a_kubelet_volume_hears_its_commits(watcher, tmp_path):
    volume = KubeletVolume(tmp_path / "etc" / "config", {"a.conf": "1"})
    (tmp_path / "app").mkdir()
    os.symlink(volume.path, tmp_path / "app" / "config")
    w = watcher()
    w.arm(0, snapshot(str(tmp_path / "app"), "config"))
    volume.write({"a.conf": "2"})
    assert w.read() == {(COMMIT, 0)}


def test_excluded_files_do_not_count_but_links_to_directories_do(watcher, tmp_path):
    root = tmp_path / "db"
    write(str(root / "app.conf"))
    write(str(root / "state.log"))
    write(str(tmp_path / "d" / "x"))
    w = watcher(exclude=("*.log",))
    w.arm(0, snapshot(str(root), None, (), ("*.log",)))
    with open(root / "state.log", "a") as fh:
        fh.write("more")
    os.chmod(root / "state.log", 0o600)
    write(str(root / "other.log"))
    os.unlink(root / "other.log")
    assert w.read() == set()
    os.symlink(str(tmp_path / "d"), root / "dir.log")  # walked: its files are not *.log
    assert w.read() == {(CHANGE, 0)}
    w.arm(0, snapshot(str(root), None, (), ("*.log",)))
    os.unlink(root / "dir.log")
    assert w.read() == {(CHANGE, 0)}
    write(str(root / "app.conf"), "2")
    assert w.read() == {(CHANGE, 0)}


def test_a_glob_with_a_slash_is_matched_against_the_relative_path(watcher, tmp_path):
    root = tmp_path / "c"
    write(str(root / "logs" / "a.txt"))
    write(str(root / "conf" / "a.txt"))
    w = watcher(exclude=("logs/*",))
    w.arm(0, snapshot(str(root), None, (), ("logs/*",)))
    write(str(root / "logs" / "a.txt"), "2")
    assert w.read() == set()
    write(str(root / "conf" / "a.txt"), "2")
    assert w.read() == {(CHANGE, 0)}


def test_kubelet_internals_do_not_count(watcher, tmp_path):
    root = tmp_path / "c"
    write(str(root / "a"))
    w = watcher()
    w.arm(0, snapshot(str(root)))
    os.mkdir(root / "..2026_01_01_00_00_00.1")
    write(str(root / "..2026_01_01_00_00_00.1" / "a"))
    assert w.read() == set()


def test_the_root_deleted_moved_and_a_subdirectory_deleted(watcher, tmp_path):
    for name in ("gone", "moved", "parent"):
        write(str(tmp_path / name / "sub" / "a"))
    w = watcher()
    for index, name in enumerate(("gone", "moved", "parent")):
        w.arm(index, snapshot(str(tmp_path / name)))
    shutil.rmtree(tmp_path / "gone")
    os.rename(tmp_path / "moved", tmp_path / "old")
    shutil.rmtree(tmp_path / "parent" / "sub")
    assert w.read() == {(CHANGE, 0), (GONE, 0), (MOVED, 1), (CHANGE, 2)}
    assert w.armed[0] == {}  # the kernel dropped both of its watches (IN_IGNORED)


def test_an_overflow_is_reported(watcher, tmp_path):
    root = tmp_path / "c"
    write(str(root / "a"))
    write(str(root / "b"))
    w = watcher()
    w.arm(0, snapshot(str(root)))
    with open(root / "a", "a") as a, open(root / "b", "a") as b:
        for _ in range(10000):  # alternating, so the kernel cannot merge them: 20000 > 16384 queued
            a.write("1")
            a.flush()
            b.write("1")
            b.flush()
    notes = set()
    while True:
        found = w.read()
        if not found:
            break
        notes |= found
    assert (OVERFLOW, None) in notes


def test_one_read_is_bounded_and_the_rest_stays_queued(watcher, tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    w = watcher()
    w.arm(0, snapshot(str(root)))
    for n in range(6000):  # create and close-write: 12000 events of 32 bytes, more than READS reads
        os.close(os.open(root / f"f{n:07d}", os.O_CREAT | os.O_WRONLY, 0o644))
    assert w.read() == {(CHANGE, 0)}
    assert select.select([w.fd], [], [], 0)[0] == [w.fd]  # the loop is woken again for the rest
    reads = 1
    while w.read():
        reads += 1
    assert reads > 1 and READS > 1


def test_a_root_deleted_and_made_again_is_watched_again(watcher, tmp_path):
    """The same path, the same snapshot shape: only the kernel knows the old watch is gone."""
    root = tmp_path / "c"
    write(str(root / "a"))
    w = watcher()
    w.arm(0, snapshot(str(root)))
    assert w.arm(0, snapshot(str(root))) is False
    shutil.rmtree(root)
    write(str(root / "a"), "2")
    assert (GONE, 0) in w.read()
    assert w.arm(0, snapshot(str(root))) is True and wds(w) == 1
    write(str(root / "a"), "3")
    assert w.read() == {(CHANGE, 0)}


def test_a_kubelet_volume_inside_a_plain_directory_is_heard_through_its_data(watcher, tmp_path):
    write(str(tmp_path / "p" / "top.conf"))
    volume = KubeletVolume(tmp_path / "p" / "vol", {"a.conf": "1", "nested/b": "1"})
    w = watcher()
    w.arm(0, snapshot(str(tmp_path / "p")))
    volume.write({"a.conf": "2", "nested/b": "1"})  # only `..`-names change in vol itself
    assert w.read() == {(CHANGE, 0)}
