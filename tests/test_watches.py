"""The watches on a fake OS: debouncing, missing paths, inotify fallbacks, hashing failures."""
from __future__ import annotations

import signal

from fakes import FakeSystem, Harness


def test_plain_directory_events_are_debounced():
    h = Harness(watches=("/cfg",), on_change="signal", debounce=0.5)
    h.sys.content["/cfg"] = "v2"
    for _ in range(5):
        h.events.put(("fs", 0, False))
        h.advance(0.2)
    assert h.sys.sent == []
    h.advance(0.5)
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]


def test_commits_in_one_batch_are_hashed_once():
    h = Harness(watches=("/cfg",), on_change="signal")
    hashes = h.sys.hashes
    h.sys.content["/cfg"] = "v2"
    for _ in range(5):
        h.events.put(("fs", 0, True))
    h.drain()
    assert h.sys.hashes == hashes + 1 and len(h.sys.sent) == 1


def test_vanished_path_is_not_acted_on_until_it_returns():
    h = Harness(watches=("/cfg",), on_change="signal")
    del h.sys.content["/cfg"]
    h.events.put(("gone", 0))
    h.drain()
    assert h.sys.sent == [] and h.sup.watches.list[0].mode == "missing"
    h.sys.content["/cfg"] = "v1"  # back with the same content: still nothing to do
    h.advance(1.1)
    assert h.sys.sent == []


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
    assert not system.the_watcher.abandoned
    h.sys.content["/cfg2"] = "v2"
    h.advance(1.1)
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]


def test_first_watch_failing_gives_inotify_up_whole():
    system = FakeSystem()
    system.fail_adds = ("/cfg",)
    h = Harness(system, watches=("/cfg", "/cfg2"), on_change="signal")
    assert [w.mode for w in h.sup.watches.list] == ["poll", "poll"]
    assert system.the_watcher.abandoned and h.sup.watches.watcher is None
    assert h.log().count("WARNING") == 1 and "inotify unavailable" in h.log()
