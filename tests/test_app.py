"""The app's lifecycle on a fake OS: forwarding, stopping, backoff, exit codes, the Stop."""
from __future__ import annotations

import os
import signal

from fakes import FakeSystem, Harness, exited, killed
from supervisor.app import BACKOFF, DONE, STOPPING, UP


def test_term_is_forwarded_then_escalates_to_sigkill_of_the_group():
    h = Harness(stop_timeout=10)
    pid = h.child
    h.signal(signal.SIGTERM)
    assert h.sys.sent == [(pid, signal.SIGTERM, False)]
    assert h.app.state == STOPPING and h.app.why == "shutdown"
    h.advance(9.9)
    assert len(h.sys.sent) == 1
    h.advance(0.2)
    assert h.sys.sent[-1] == (pid, signal.SIGKILL, True)
    h.exit(pid, killed(signal.SIGKILL))
    assert h.exit_code == 137


def test_app_exit_while_stopping_gives_its_group_the_signal_and_waits_for_it():
    h = Harness(stop_timeout=5)
    pid = h.child
    h.signal(signal.SIGTERM)
    assert h.sys.sent == [(pid, signal.SIGTERM, False)]  # without -g: the app only
    h.sys.pending.append((pid, exited(0)))  # the app exits, a grandchild lingers in its group
    h.events.put(("reap",))
    h.drain()
    # What is left of the group gets the stop signal at once, not SIGKILL at the deadline.
    assert h.sys.sent[-1] == (pid, signal.SIGTERM, True)
    assert h.exit_code is None
    h.advance(1)
    assert h.exit_code is None  # still within the deadline, group still there
    h.sys.alive_groups.discard(pid)
    h.advance(0.1)
    assert h.exit_code == 0
    assert (pid, signal.SIGKILL, True) not in h.sys.sent


def test_group_flag_means_the_group_is_not_signalled_twice():
    h = Harness(stop_timeout=5, group=True)
    pid = h.child
    h.signal(signal.SIGTERM)
    h.sys.pending.append((pid, exited(0)))
    h.events.put(("reap",))
    h.drain()
    assert h.sys.sent == [(pid, signal.SIGTERM, True)]


def test_rewritten_stop_signal_is_what_the_rest_of_the_group_gets():
    h = Harness(rewrite=((signal.SIGTERM, signal.SIGQUIT),))
    pid = h.child
    h.signal(signal.SIGTERM)
    h.sys.pending.append((pid, exited(0)))
    h.events.put(("reap",))
    h.drain()
    assert h.sys.sent == [(pid, signal.SIGQUIT, False), (pid, signal.SIGQUIT, True)]


def test_lingering_group_is_killed_at_the_deadline():
    h = Harness(stop_timeout=2)
    pid = h.child
    h.signal(signal.SIGTERM)
    h.sys.pending.append((pid, exited(0)))
    h.events.put(("reap",))
    h.drain()
    h.advance(2.1)
    assert (pid, signal.SIGKILL, True) in h.sys.sent
    assert h.exit_code == 0


def test_orphan_reaped_looks_at_the_lingering_group_at_once():
    h = Harness(stop_timeout=5)
    pid = h.child
    h.signal(signal.SIGTERM)
    h.sys.pending.append((pid, exited(0)))  # the app exits; its group lingers
    h.events.put(("reap",))
    h.drain()
    assert h.exit_code is None
    h.sys.alive_groups.discard(pid)
    h.sys.pending.append((999, exited(0)))  # the grandchild, re-parented to us
    h.events.put(("reap",))
    h.drain()
    assert h.exit_code == 0 and h.sup.procs.orphans == 1


def test_second_term_changes_nothing():
    h = Harness(stop_timeout=10)
    h.signal(signal.SIGTERM)
    h.advance(5)
    h.signal(signal.SIGTERM)
    h.advance(5.1)
    assert h.sys.sent[-1] == (h.child, signal.SIGKILL, True)  # the first deadline held
    assert h.log().count("received SIGTERM") == 1


def test_group_flag_and_rewrite():
    h = Harness(group=True, rewrite=((signal.SIGUSR1, signal.SIGUSR2), (signal.SIGHUP, 0)))
    h.signal(signal.SIGUSR1)
    h.signal(signal.SIGHUP)
    assert h.sys.sent == [(h.child, signal.SIGUSR2, True)]


def test_term_rewritten_to_zero_starts_no_stop():
    h = Harness(rewrite=((signal.SIGTERM, 0),))
    h.signal(signal.SIGTERM)
    assert h.sys.sent == [] and h.app.state == UP and not h.sup.stop


def test_expect_exit():
    h = Harness(expect_exit=frozenset({3}))
    h.exit(h.child, exited(3))
    assert h.exit_code == 0


def test_on_exit_restart_backoff_doubles_caps_and_resets():
    h = Harness(on_exit="restart", restart_backoff=4)
    delays = []
    for _ in range(5):
        h.exit(h.child, exited(1))
        delays.append(h.app.backoff)
        assert h.child is None and h.app.state == BACKOFF
        h.advance(h.app.backoff)
        assert h.child is not None
    assert delays == [0.5, 1, 2, 4, 4]
    h.advance(60)  # stayed up a long while
    h.exit(h.child, exited(1))
    assert h.app.backoff == 0.5


def test_term_during_restart_backoff_exits_at_once():
    h = Harness(on_exit="restart")
    h.exit(h.child, exited(1))
    h.signal(signal.SIGTERM)
    assert h.exit_code == 143
    h.advance(60)
    assert len(h.sys.spawned) == 1  # never started again


def test_int_during_restart_backoff_exits_130():
    h = Harness(on_exit="restart")
    h.exit(h.child, exited(1))
    h.signal(signal.SIGINT)
    assert h.exit_code == 130


def test_first_start_failure_exits_with_the_shell_code():
    system = FakeSystem()
    system.spawn_failures = 1
    h = Harness(system)
    assert h.code == 126 and h.app.state == DONE


def test_transient_spawn_failure_on_restart_is_retried_and_finishes_the_action():
    h = Harness(watches=("/cfg",), on_change="restart")
    first = h.child
    h.swap("v2")
    h.sys.spawn_failures = 2
    h.exit(first, killed(signal.SIGTERM))
    assert h.child is None and h.exit_code is None and h.app.state == BACKOFF
    assert "cannot start now" in h.log() and "retrying in 0.5s" in h.log()
    h.advance(0.5)
    assert h.child is None and "retrying in 1s" in h.log()
    h.advance(1)
    assert h.child is not None and h.sys.spawned[-1][1]["CFGSUP_CHANGED"] == "key"
    assert h.changes.action is None and h.changes.applied[0].digest == "v2"
    assert h.sup.stats.restarts == 1


def test_term_during_transient_spawn_failure_backoff_exits_at_once():
    h = Harness(watches=("/cfg",), on_change="restart")
    h.swap("v2")
    h.sys.spawn_failures = 5
    h.exit(h.child, killed(signal.SIGTERM))
    assert h.app.state == BACKOFF
    h.signal(signal.SIGTERM)
    assert h.exit_code == 143
    h.advance(60)
    assert h.sys.spawned == h.sys.spawned[:1]


def test_restart_with_an_environment_too_large_retries_without_the_names():
    h = Harness(watches=("/cfg",), on_change="restart")
    # The environment as it is fits; with CFGSUP_CHANGED it is "too long" for the fake kernel.
    h.sys.env_limit = sum(len(k) + len(v) for k, v in os.environ.items())
    h.swap("v2")
    h.exit(h.child, killed(signal.SIGTERM))
    assert h.child is not None and "CFGSUP_CHANGED" not in h.sys.spawned[-1][1]
    assert "too large with CFGSUP_CHANGED" in h.log()
    assert h.changes.applied[0].digest == "v2"
