"""The watches on a fake OS: debouncing, missing paths, inotify fallbacks, hashing failures."""
from __future__ import annotations

import signal

from fakes import FakeSystem, Harness
from supervisor.watcher import CHANGE, COMMIT, GONE, MOVED, OVERFLOW


def test_plain_directory_events_are_debounced():
    h = Harness(watches=("/cfg",), on_change="signal", debounce=0.5)
    h.sys.content["/cfg"] = "v2"
    for _ in range(5):
        h.note(CHANGE)
        h.advance(0.2)
    assert h.sys.sent == []
    h.advance(0.5)
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]


def test_commits_in_one_batch_are_hashed_once():
    h = Harness(watches=("/cfg",), on_change="signal")
    hashes = h.sys.hashes
    h.sys.content["/cfg"] = "v2"
    for _ in range(5):  # five wake-ups of the loop, each with a commit, in one batch
        h.note(COMMIT)
    h.drain()
    assert h.sys.hashes == hashes + 1 and len(h.sys.sent) == 1


def test_vanished_path_is_not_acted_on_until_it_returns():
    h = Harness(watches=("/cfg",), on_change="signal")
    del h.sys.content["/cfg"]
    h.note(GONE)
    h.drain()
    assert h.sys.sent == [] and h.sup.watches.list[0].mode == "missing"
    assert h.log().count("/cfg was deleted or moved away; waiting for it to come back") == 1
    assert h.sys.the_watcher.armed[0] == set()  # nothing left to watch of it
    h.advance(1.1)  # still missing: looked for again, no second warning
    assert h.log().count("waiting for it to come back") == 1
    h.sys.content["/cfg"] = "v1"  # back with the same content: still nothing to do
    h.advance(1.1)
    assert h.sys.sent == [] and h.sup.watches.list[0].mode == "inotify"
    assert h.sys.the_watcher.armed[0] == {"/cfg"} and "/cfg is back" in h.log()
    h.swap("v2")  # and it is watched again
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]


def test_a_path_found_missing_by_a_hash_is_missing_too():
    """A kubelet volume whose ..data names no directory gives MISSING on a commit: no action,
    looked for every second, compared when it is back (as a deleted directory)."""
    h = Harness(watches=("/cfg",), on_change="signal")
    del h.sys.content["/cfg"]
    h.note(COMMIT)
    h.drain()
    assert h.sys.sent == [] and h.sup.watches.list[0].mode == "missing"
    h.sys.content["/cfg"] = "v2"
    h.advance(1.1)
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]
    assert "poll" not in h.sup.loop.timers  # on inotify again: no more looking


def test_a_moved_root_is_read_again_after_the_debounce():
    h = Harness(watches=("/cfg",), on_change="signal", debounce=0.5)
    h.sys.content["/cfg"] = "v2"  # `mv cfg old; mv new cfg`: another directory, other content
    h.note(MOVED)
    h.advance(0.1)
    assert h.sys.sent == []
    h.advance(0.5)
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]


def test_an_overflow_reads_every_watch_again():
    h = Harness(watches=("/cfg", "/cfg2"), on_change="signal")
    h.sys.content["/cfg2"] = "v2"
    h.note(OVERFLOW, None)
    h.advance(0.3)  # past the debounce (the fake's volumes are kubelet ones: at once, in fact)
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]


def test_inotify_failure_falls_back_to_polling_with_one_warning():
    h = Harness(FakeSystem(inotify_fails=True), watches=("/cfg", "/cfg2"), on_change="signal")
    assert h.log().count("inotify unavailable") == 1
    assert [w.mode for w in h.sup.watches.list] == ["poll", "poll"]
    h.sys.content["/cfg2"] = "v2"
    h.advance(1.1)
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]


def test_unreadable_file_is_warned_once_by_name_and_readable_again_is_a_change():
    h = Harness(watches=("/cfg",), on_change="signal")
    h.swap("unreadable-1")
    h.swap("unreadable-2")
    assert h.log().count("cannot read secret.key") == 1
    h.swap("v3")  # readable again: new content, acted on
    assert len([s for s in h.sys.sent if s[1] == signal.SIGHUP]) == 3


def test_transient_hash_failure_is_retried_without_losing_the_change():
    h = Harness(watches=("/cfg",), on_change="signal")
    h.sys.hash_failures = 3
    h.swap("v2")
    assert h.sys.sent == [] and h.log().count("cannot hash /cfg now (Too many open files)") == 1
    h.advance(1.1)
    h.advance(1.1)
    assert h.sys.sent == []
    h.advance(1.1)  # the fourth try succeeds
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]
    assert "can be hashed again" in h.log()


def test_watch_limit_on_a_later_watch_polls_only_that_one():
    system = FakeSystem()
    system.fail_adds = ("/cfg2",)
    h = Harness(system, watches=("/cfg", "/cfg2"), on_change="signal")
    assert [w.mode for w in h.sup.watches.list] == ["inotify", "poll"]
    assert "cannot watch /cfg2 with inotify (No space left on device)" in h.log()
    assert not system.the_watcher.closed and 1 not in system.the_watcher.armed
    h.sys.content["/cfg2"] = "v2"
    h.advance(1.1)
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]


def test_watch_limit_when_a_watch_is_armed_again_polls_only_that_one():
    """A hash that finds new directories arms them; the limit hit then polls that watch alone."""
    system = FakeSystem()
    h = Harness(system, watches=("/cfg", "/cfg2"), on_change="signal")
    system.the_watcher.fail_adds = ("/cfg2/new",)
    system.subdirs["/cfg2"] = ("/cfg2/new",)
    h.swap("v2", index=1)
    assert [w.mode for w in h.sup.watches.list] == ["inotify", "poll"]
    assert h.log().count("cannot watch /cfg2 with inotify (No space left on device)") == 1
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]  # the change itself still counts
    h.sys.content["/cfg2"] = "v3"
    h.advance(1.1)
    assert len(h.sys.sent) == 2


def test_first_watch_failing_gives_inotify_up_whole():
    system = FakeSystem()
    system.fail_adds = ("/cfg",)
    h = Harness(system, watches=("/cfg", "/cfg2"), on_change="signal")
    assert [w.mode for w in h.sup.watches.list] == ["poll", "poll"]
    assert system.the_watcher.closed and h.sup.watches.watcher is None
    assert h.log().count("WARNING") == 1 and "inotify unavailable" in h.log()


def test_a_first_watch_refused_for_another_reason_polls_only_that_one():
    """A directory the user cannot read (inotify needs read permission) says nothing about
    inotify itself: the other watches stay on it."""
    system = FakeSystem()
    system.fail_adds = ("/cfg",)
    system.fail_error = PermissionError(13, "Permission denied")
    h = Harness(system, watches=("/cfg", "/cfg2"), on_change="signal")
    assert [w.mode for w in h.sup.watches.list] == ["poll", "inotify"]
    assert "cannot watch /cfg with inotify (Permission denied); polling it every 1s" in h.log()
    assert not system.the_watcher.closed and h.log().count("WARNING") == 1


def test_a_broken_inotify_fd_is_given_up_for_polling():
    """poll() keeps reporting POLLNVAL on a closed fd: reading on would spin PID 1."""
    h = Harness(watches=("/cfg",), on_change="signal")
    h.events.put(("fd", h.sys.the_watcher.fd, 0x20))
    h.drain()
    assert h.sup.watches.watcher is None and h.sup.watches.list[0].mode == "poll"
    assert "inotify unavailable (the inotify fd is broken); polling every 1s instead" in h.log()
    h.sys.content["/cfg"] = "v2"
    h.advance(1.1)
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]
