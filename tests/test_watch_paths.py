"""What the watcher watches, end to end: links, renamed roots, excluded files, lost events, limits.

Real cfgsup, real inotify. The inotify limits are lowered in a user namespace of cfgsup's own
(/proc/sys/user/max_inotify_*), which leaves the machine's limits alone.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import threading

import pytest

from asuser import as_user
from conftest import APP, wait_until
from kubelet import KubeletVolume

WATCH_MODES = [pytest.param((), id="inotify"), pytest.param(("--poll", "0.1"), id="poll")]
HUP = r"^child got SIGHUP$"


def watching(run_cfgsup, *args, prefix=()):
    running = run_cfgsup(*args, "--", *APP, prefix=prefix)
    running.wait_line(r"^child ready pid=")
    running.wait_line(r"INFO watching")
    return running


def hups(running, n, what="a reload"):
    wait_until(lambda: running.count(HUP) >= n, what=what)
    assert running.count(HUP) == n


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def limits(**values):
    """An argv prefix: run in a user namespace of its own with these inotify limits."""
    sets = " && ".join(f"echo {v} > /proc/sys/user/max_inotify_{k}" for k, v in values.items())
    return ["unshare", "--user", "--map-root-user", "sh", "-c", sets + ' && exec "$@"', "limits"]


needs_unshare = pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare (util-linux)")


# ---- 13: one inotify fd, no thread ---------------------------------------------------------
def test_threads_do_not_grow_with_watched_directories(run_cfgsup, tmp_path):
    volumes = [KubeletVolume(tmp_path / f"v{n:03d}", {"a.conf": "1"}) for n in range(100)]
    one = watching(run_cfgsup, "--watch", volumes[0].path, "--on-change", "signal")
    args = [arg for v in volumes for arg in ("--watch", v.path)]
    many = watching(run_cfgsup, *args, "--on-change", "signal")
    assert threads(many.pid) == threads(one.pid) <= 3
    volumes[99].write({"a.conf": "2"})  # the hundredth is watched as well as the first
    hups(many, 1)
    fds = [os.readlink(f"/proc/{many.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{many.pid}/fd")]
    assert fds.count("anon_inode:inotify") == 1


# ---- 9.4: links ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", WATCH_MODES)
def test_a_watched_link_to_a_directory_sees_edits_and_being_re_pointed(run_cfgsup, tmp_path, mode):
    (tmp_path / "s" / "real").mkdir(parents=True)
    (tmp_path / "s" / "other").mkdir()
    (tmp_path / "s" / "real" / "a.conf").write_text("a")
    (tmp_path / "s" / "other" / "a.conf").write_text("other")
    os.symlink("real", tmp_path / "s" / "link")
    running = watching(run_cfgsup, *mode, "--watch", str(tmp_path / "s" / "link"),
                       "--on-change", "signal", "--debounce", "0.05")
    (tmp_path / "s" / "real" / "a.conf").write_text("b")
    hups(running, 1)
    subprocess.run(["ln", "-sfn", "other", str(tmp_path / "s" / "link")], check=True)
    hups(running, 2, "the re-pointed link")
    (tmp_path / "s" / "other" / "a.conf").write_text("edited")  # the new target is watched now
    hups(running, 3, "an edit in the new target")


@pytest.mark.parametrize("mode", WATCH_MODES)
def test_a_watched_link_to_a_kubelet_volume_sees_its_swaps(run_cfgsup, tmp_path, mode):
    volume = KubeletVolume(tmp_path / "etc" / "config", {"app.conf": "v1"})
    (tmp_path / "app").mkdir()
    os.symlink(volume.path, tmp_path / "app" / "config")  # /app/config -> /etc/config
    running = watching(run_cfgsup, "-v", *mode, "--watch", str(tmp_path / "app" / "config"),
                       "--on-change", "signal")
    volume.write({"app.conf": "v2"})
    hups(running, 1)
    volume.write({"app.conf": "v3"})
    hups(running, 2)
    running.wait_line(r"change in .*: app.conf ")


@pytest.mark.parametrize("mode", WATCH_MODES)
def test_a_symlinked_subdirectory_of_a_plain_directory_is_watched(run_cfgsup, tmp_path, mode):
    (tmp_path / "conf").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "conf" / "a.conf").write_text("1")
    (tmp_path / "elsewhere" / "x.conf").write_text("1")
    os.symlink("../elsewhere", tmp_path / "conf" / "linked")
    running = watching(run_cfgsup, *mode, "--watch", str(tmp_path / "conf"), "--on-change", "signal",
                       "--debounce", "0.05")
    (tmp_path / "elsewhere" / "x.conf").write_text("2")
    hups(running, 1)
    (tmp_path / "elsewhere" / "deeper").mkdir()  # a new directory below the link, then a file in it
    (tmp_path / "elsewhere" / "deeper" / "y.conf").write_text("1")
    hups(running, 2)
    (tmp_path / "elsewhere" / "deeper" / "y.conf").write_text("2")
    hups(running, 3, "an edit in the new directory")


@pytest.mark.parametrize("mode", WATCH_MODES)
def test_a_link_loop_neither_hangs_nor_hides_edits(run_cfgsup, tmp_path, mode):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "a").write_text("1")
    os.symlink(".", tmp_path / "d" / "x")
    os.symlink("..", tmp_path / "d" / "sub" / "up")
    running = watching(run_cfgsup, *mode, "--watch", str(tmp_path / "d"), "--on-change", "signal",
                       "--debounce", "0.05")
    (tmp_path / "d" / "sub" / "a").write_text("2")
    hups(running, 1)
    running.signal(signal.SIGTERM)
    assert running.wait() == 0


# ---- 9.5: excluded files -------------------------------------------------------------------
@pytest.mark.parametrize("glob", ["*.log", "db/*.log"])
def test_a_busy_excluded_file_does_not_postpone_a_change(run_cfgsup, tmp_path, glob):
    root = tmp_path / "conf"
    (root / "db").mkdir(parents=True)
    (root / "db" / "app.conf").write_text("1")
    (root / "db" / "state.log").write_text("")
    running = watching(run_cfgsup, "--watch", str(root), "--exclude", glob, "--on-change", "signal",
                       "--debounce", "0.5")
    stop = threading.Event()

    def writer():  # a process appending to its state every 50 ms, for as long as the test runs
        with open(root / "db" / "state.log", "a") as fh:
            while not stop.wait(0.05):
                fh.write("tick\n")
                fh.flush()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        (root / "db" / "app.conf").write_text("2")
        hups(running, 1, "the change applied while the writer still writes")
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=5)


# ---- 9.6: a root replaced by rename ---------------------------------------------------------
def test_a_root_replaced_by_rename_is_followed(run_cfgsup, tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "new").mkdir()
    (tmp_path / "cfg" / "a.conf").write_text("1")
    (tmp_path / "new" / "a.conf").write_text("2")
    running = watching(run_cfgsup, "-v", "--watch", str(tmp_path / "cfg"), "--on-change", "signal",
                       "--debounce", "0.05")
    os.rename(tmp_path / "cfg", tmp_path / "old")
    os.rename(tmp_path / "new", tmp_path / "cfg")
    hups(running, 1, "the new directory's content")
    running.wait_line(r"change in .*: a.conf ")
    (tmp_path / "old" / "a.conf").write_text("3")  # the old one is not watched any more ...
    (tmp_path / "cfg" / "a.conf").write_text("4")  # ... the new one is
    hups(running, 2, "an edit in the new directory")
    # the signal goes out first; the lines that say which names changed follow it
    wait_until(lambda: running.count(r"sent SIGHUP") >= 2, what="the second HUP logged")
    assert running.count(r"INFO change in") == 2


def test_a_root_moved_away_and_back_later_is_missing_meanwhile(run_cfgsup, tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "a.conf").write_text("1")
    running = watching(run_cfgsup, "--watch", str(tmp_path / "cfg"), "--on-change", "signal",
                       "--debounce", "0.05")
    os.rename(tmp_path / "cfg", tmp_path / "away")
    running.wait_line(r"cfg was deleted or moved away; waiting for it to come back")
    (tmp_path / "away" / "a.conf").write_text("2")
    os.rename(tmp_path / "away", tmp_path / "cfg")
    hups(running, 1, "the content it came back with")


# ---- 9.9: ..data names a directory that is not there -----------------------------------------
def test_a_vanished_data_target_acts_like_a_deleted_directory(run_cfgsup, tmp_path):
    volume = KubeletVolume(tmp_path / "config", {"app.conf": "v1"})
    running = watching(run_cfgsup, "--watch", volume.path, "--on-change", "signal")
    target = os.readlink(os.path.join(volume.path, "..data"))
    os.rename(os.path.join(volume.path, target), tmp_path / "payload")  # the payload dir vanishes...
    os.symlink(target + "_", os.path.join(volume.path, "..data_tmp"))
    os.rename(os.path.join(volume.path, "..data_tmp"), os.path.join(volume.path, "..data"))  # ...and is committed
    running.wait_line(r"config: its \.\.data names a directory that is not there; waiting for it to "
                      r"come back")
    (tmp_path / "payload" / "app.conf").write_text("v2")
    os.rename(tmp_path / "payload", os.path.join(volume.path, target + "_"))  # back, changed
    hups(running, 1, "the content it came back with")
    running.wait_line(r"config is back")
    running.wait_line(r"sent SIGHUP")  # logged after the change line, which follows the signal
    assert running.count(r"INFO change in") == 1
    volume.write({"app.conf": "v3"})  # and swaps are seen again
    hups(running, 2)


# ---- lost events ---------------------------------------------------------------------------
def test_an_overflowed_inotify_queue_reads_everything_again(run_cfgsup, tmp_path):
    root = tmp_path / "conf"
    root.mkdir()
    (root / "app.conf").write_text("1")
    running = watching(run_cfgsup, "-v", "--watch", str(root), "--exclude", "*.log", "--on-change",
                       "signal", "--debounce", "0.05")
    os.kill(running.pid, signal.SIGSTOP)  # nothing is read: the kernel queues at most 16384 events
    try:
        wait_until(lambda: stopped(running.pid), what="cfgsup stopped")
        with open(root / "a.log", "a") as a, open(root / "b.log", "a") as b:
            for _ in range(10000):  # alternating, so the kernel cannot merge them
                a.write("1")
                a.flush()
                b.write("1")
                b.flush()
        (root / "app.conf").write_text("2")  # its events are lost: only the overflow tells
    finally:
        os.kill(running.pid, signal.SIGCONT)
    hups(running, 1, "the change behind the overflow")
    running.wait_line(r"DEBUG the inotify queue overflowed; reading every watched path again")


def stopped(pid):
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rpartition(")")[2].split()[0] == "T"


# ---- limits --------------------------------------------------------------------------------
@needs_unshare
def test_inotify_unavailable_falls_back_to_polling(run_cfgsup, tmp_path):
    # The fd budget is one inotify fd now, and hashing needs two: no fd limit lets cfgsup hash
    # but not get its inotify fd. The instance limit does (EMFILE, as the fd limit would).
    volume = KubeletVolume(tmp_path / "config", {"app.conf": "v1"})
    running = watching(run_cfgsup, "--watch", volume.path, "--on-change", "signal",
                       prefix=limits(instances=0))
    running.wait_line(r"WARNING inotify unavailable \(Too many open files\); polling every 1s instead")
    running.wait_line(r"watching .* \(poll\)")
    volume.write({"app.conf": "v2"})
    hups(running, 1)
    assert running.count("WARNING") == 1


@needs_unshare
def test_the_watch_limit_on_a_later_watch_polls_only_that_one(run_cfgsup, tmp_path):
    first = KubeletVolume(tmp_path / "first", {"app.conf": "v1"})
    plain = tmp_path / "plain"
    for sub in ("a", "b", "c"):
        (plain / sub).mkdir(parents=True)
        (plain / sub / "x.conf").write_text("1")
    # Three watches allowed: the volume's root and two of the plain tree's four directories.
    running = watching(run_cfgsup, "--watch", first.path, "--watch", str(plain), "--on-change",
                       "signal", "--debounce", "0.05", prefix=limits(watches=3))
    running.wait_line(r"WARNING cannot watch .*plain with inotify \(No space left on device \(the "
                      r"inotify watch limit\)\); polling it every 1s")
    running.wait_line(r"watching .*first \(inotify\), .*plain \(poll\)")
    (plain / "c" / "x.conf").write_text("2")
    hups(running, 1, "the polled one")
    first.write({"app.conf": "v2"})
    hups(running, 2, "the one on inotify")
    assert running.count("WARNING") == 1


@needs_unshare
def test_the_watch_limit_on_the_first_watch_gives_inotify_up_whole(run_cfgsup, tmp_path):
    volume = KubeletVolume(tmp_path / "config", {"app.conf": "v1"})
    other = KubeletVolume(tmp_path / "other", {"app.conf": "v1"})
    running = watching(run_cfgsup, "--watch", volume.path, "--watch", other.path, "--on-change",
                       "signal", prefix=limits(watches=0))
    running.wait_line(r"WARNING inotify unavailable \(No space left on device \(the inotify watch "
                      r"limit\)\); polling every 1s instead")
    running.wait_line(r"watching .*config \(poll\), .*other \(poll\)")
    other.write({"app.conf": "v2"})
    hups(running, 1)
    assert running.count("WARNING") == 1
    fds = [os.readlink(f"/proc/{running.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{running.pid}/fd")]
    assert "anon_inode:inotify" not in fds  # given back


# ---- not root ------------------------------------------------------------------------------
@pytest.fixture
def open_tmp():
    """A directory uid 65534 can reach (pytest's tmp_path is 0700 all the way)."""
    top = tempfile.mkdtemp(prefix="cfgsup-watch-")
    os.chmod(top, 0o755)
    yield pathlib.Path(top)
    shutil.rmtree(top)


@pytest.mark.skipif(not os.environ.get("CI") and (os.geteuid() != 0 or not shutil.which("setpriv")),
                    reason="needs root and setpriv to run cfgsup as another user")
def test_watching_as_another_user(run_cfgsup, open_tmp):
    tmp_path = open_tmp
    volume = KubeletVolume(tmp_path / "etc" / "config", {"app.conf": "v1"})
    (tmp_path / "app").mkdir()
    os.symlink(volume.path, tmp_path / "app" / "config")
    plain = tmp_path / "plain"
    (plain / "closed").mkdir(parents=True)
    (plain / "a.conf").write_text("1")
    os.chmod(plain / "closed", 0o700)  # root's: the user can neither list nor watch it
    for path in (tmp_path / "etc", tmp_path / "app"):
        os.chmod(path, 0o755)
    running = watching(run_cfgsup, "--watch", str(tmp_path / "app" / "config"), "--watch", str(plain),
                       "--on-change", "signal", "--debounce", "0.05", prefix=as_user(65534, 65534))
    running.wait_line(r"cannot read closed")
    running.wait_line(r"watching .*config \(inotify\), .*plain \(inotify\)")
    volume.write({"app.conf": "v2"})
    hups(running, 1)
    (plain / "a.conf").write_text("2")
    hups(running, 2)


@pytest.mark.skipif(not os.environ.get("CI") and (os.geteuid() != 0 or not shutil.which("setpriv")),
                    reason="needs root and setpriv to run cfgsup as another user")
def test_a_link_in_a_directory_the_user_cannot_list_is_polled(run_cfgsup, open_tmp):
    """inotify needs read permission on a directory; the digest only needs to search it. The
    watch whose link sits there is polled, the others stay on inotify."""
    volume = KubeletVolume(open_tmp / "etc" / "config", {"app.conf": "v1"})
    other = KubeletVolume(open_tmp / "etc" / "other", {"app.conf": "v1"})
    for path in (open_tmp / "etc", open_tmp / "app"):
        path.mkdir(exist_ok=True)
        os.chmod(path, 0o755)
    os.symlink(volume.path, open_tmp / "app" / "config")
    os.chmod(open_tmp / "app", 0o711)  # searchable, not listable
    running = watching(run_cfgsup, "--watch", str(open_tmp / "app" / "config"), "--watch", other.path,
                       "--on-change", "signal", prefix=as_user(65534, 65534))
    running.wait_line(r"WARNING cannot watch .*/app/config with inotify \(Permission denied\); "
                      r"polling it every 1s")
    running.wait_line(r"watching .*config \(poll\), .*other \(inotify\)")
    volume.write({"app.conf": "v2"})
    hups(running, 1)
    other.write({"app.conf": "v2"})
    hups(running, 2)
    assert running.count("WARNING") == 1
