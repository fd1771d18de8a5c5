"""The loop's logic with a fake OS: no processes, no files, no real time."""
from __future__ import annotations

import errno
import io
import queue
import signal

import pytest

from supervisor.child import SpawnError
from supervisor.digest import MISSING, Snapshot
from supervisor.logs import Log
from supervisor.loop import Loop
from supervisor.settings import Settings


def exited(code):
    return code << 8


def killed(signo):
    return signo


class FakeHelper:
    def __init__(self, pid, purpose, command, env, timeout, now):
        self.pid, self.purpose, self.command, self.env = pid, purpose, command, env
        self.deadline = now + timeout
        self.timed_out = False

    def tail(self):
        return "bad config line 3"


class FakeWatcher:
    def __init__(self, fail_adds=()):
        self.added = []
        self.fail_adds = fail_adds
        self.abandoned = False

    def add(self, index, root, only):
        if root in self.fail_adds:
            raise OSError(28, "No space left on device")  # what the inotify watch limit says
        self.added.append(root)

    def abandon(self):
        self.abandoned = True

    def remove(self, index):
        pass

    def stop(self):
        pass


class FakeSystem:
    def __init__(self, inotify_fails=False):
        self.next_pid = 100
        self.spawned = []          # (pid, env)
        self.sent = []             # (pid, signo, group)
        self.alive_groups = set()
        self.pending = []
        self.content = {}          # root -> digest
        self.helpers = []
        self.threads = []
        self.inotify_fails = inotify_fails
        self.hashes = 0
        self.spawn_failures = 0
        self.hash_failures = 0
        self.fail_adds = ()

    def _pid(self):
        self.next_pid += 1
        return self.next_pid

    def spawn_app(self, argv, env, previous=0):
        if self.spawn_failures:
            self.spawn_failures -= 1
            raise SpawnError(126, "app: cannot start now: Resource temporarily unavailable", transient=True)
        pid = self._pid()
        self.spawned.append((pid, env))
        self.alive_groups.add(pid)
        return pid

    def send(self, pid, signo, group):
        self.sent.append((pid, signo, group))
        return True

    def group_alive(self, pgid):
        return pgid in self.alive_groups

    def reap(self):
        reaped, self.pending = self.pending, []
        return reaped

    def snapshot(self, root, only, include, exclude):
        if self.hash_failures:
            self.hash_failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        self.hashes += 1
        digest = self.content.get(root, MISSING)
        unreadable = ("secret.key",) if digest.startswith("unreadable") else ()
        return Snapshot(digest, {} if digest == MISSING else {"key": digest}, unreadable, True)

    def helper(self, purpose, command, env, timeout, now):
        helper = FakeHelper(self._pid(), purpose, command, env, timeout, now)
        self.helpers.append(helper)
        return helper

    def watcher(self, put, quiet_threads):
        if self.inotify_fails:
            raise OSError(24, "Too many open files")
        self.the_watcher = FakeWatcher(self.fail_adds)
        return self.the_watcher

    def pinned_mount(self, path):
        return False

    def isdir(self, root):
        return root in self.content

    def poll_signature(self, root, only):
        return ("kubelet", self.content.get(root))

    def start_thread(self, target, *args):
        self.threads.append((target, args))


class Harness:
    def __init__(self, system=None, **options):
        options.setdefault("command", ("app",))
        self.settings = Settings(**options)
        self.sys = system or FakeSystem()
        for path in self.settings.watches:
            self.sys.content.setdefault(path, "v1")
        self.now = [1000.0]
        self.events = queue.SimpleQueue()
        self.log_stream = io.StringIO()
        self.loop = Loop(self.settings, Log(10, "text", self.log_stream), self.sys,
                         clock=lambda: self.now[0], events=self.events)
        self.loop.add_watches()
        assert self.loop.start_child(first=True)
        if self.settings.watches:
            self.loop.start_watching()
        self.drain()

    @property
    def child(self):
        return self.loop.child

    def drain(self):
        for _ in range(50):
            self.loop.step(block=False)
            if self.events.empty():
                return

    def advance(self, seconds):
        self.now[0] += seconds
        self.drain()

    def signal(self, signo):
        self.events.put(("signal", signo))
        self.drain()

    def exit(self, pid, status):
        self.sys.alive_groups.discard(pid)
        self.sys.pending.append((pid, status))
        self.events.put(("reap",))
        self.drain()

    def swap(self, content, index=0):
        self.sys.content[self.settings.watches[index]] = content
        self.events.put(("fs", index, True))
        self.drain()

    def log(self):
        return self.log_stream.getvalue()


# ---- PID 1 core ----------------------------------------------------------------------------
def test_term_is_forwarded_then_escalates_to_sigkill_of_the_group():
    h = Harness(stop_timeout=10)
    pid = h.child
    h.signal(signal.SIGTERM)
    assert h.sys.sent == [(pid, signal.SIGTERM, False)]
    h.advance(9.9)
    assert len(h.sys.sent) == 1
    h.advance(0.2)
    assert h.sys.sent[-1] == (pid, signal.SIGKILL, True)
    h.exit(pid, killed(signal.SIGKILL))
    assert h.loop.exit_code == 137


def test_child_exit_while_stopping_waits_for_its_group():
    h = Harness(stop_timeout=5)
    pid = h.child
    h.signal(signal.SIGTERM)
    h.sys.pending.append((pid, exited(0)))  # the app exits, a grandchild lingers in its group
    h.events.put(("reap",))
    h.drain()
    assert h.loop.exit_code is None
    h.advance(1)
    assert h.loop.exit_code is None  # still within the deadline, group still there
    h.sys.alive_groups.discard(pid)
    h.advance(0.1)
    assert h.loop.exit_code == 0
    assert (pid, signal.SIGKILL, True) not in h.sys.sent


def test_lingering_group_is_killed_at_the_deadline():
    h = Harness(stop_timeout=2)
    pid = h.child
    h.signal(signal.SIGTERM)
    h.sys.pending.append((pid, exited(0)))
    h.events.put(("reap",))
    h.drain()
    h.advance(2.1)
    assert (pid, signal.SIGKILL, True) in h.sys.sent
    assert h.loop.exit_code == 0


def test_group_flag_and_rewrite():
    h = Harness(group=True, rewrite=((signal.SIGUSR1, signal.SIGUSR2), (signal.SIGHUP, 0)))
    h.signal(signal.SIGUSR1)
    h.signal(signal.SIGHUP)
    assert h.sys.sent == [(h.child, signal.SIGUSR2, True)]


def test_expect_exit():
    h = Harness(expect_exit=frozenset({3}))
    h.exit(h.child, exited(3))
    assert h.loop.exit_code == 0


def test_on_exit_restart_backoff_doubles_caps_and_resets():
    h = Harness(on_exit="restart", restart_backoff=4)
    delays = []
    for _ in range(5):
        h.exit(h.child, exited(1))
        delays.append(h.loop.backoff)
        assert h.child is None
        h.advance(h.loop.backoff)
        assert h.child is not None
    assert delays == [0.5, 1, 2, 4, 4]
    h.advance(60)  # stayed up a long while
    h.exit(h.child, exited(1))
    assert h.loop.backoff == 0.5


def test_term_during_restart_backoff_exits():
    h = Harness(on_exit="restart")
    h.exit(h.child, exited(1))
    h.signal(signal.SIGTERM)
    assert h.loop.exit_code == 143


# ---- content changes ------------------------------------------------------------------------
def test_restart_on_change_coalesces_changes_during_the_stop_phase():
    h = Harness(watches=("/cfg",), on_change="restart")
    first = h.child
    h.swap("v2")
    assert h.sys.sent[-1] == (first, signal.SIGTERM, True)
    h.swap("v3")  # arrive while the app is still stopping
    h.swap("v4")
    assert len(h.sys.spawned) == 1
    h.exit(first, killed(signal.SIGTERM))
    second = h.child
    assert second != first and h.sys.spawned[-1][1]["CFGSUP_CHANGED"] == "key"
    # One follow-up for the newest content, not one per swap.
    assert h.sys.sent[-1] == (second, signal.SIGTERM, True)
    h.exit(second, killed(signal.SIGTERM))
    assert len(h.sys.spawned) == 3
    assert h.loop.watches[0].applied.digest == "v4"
    assert h.loop.action is None


def test_identical_content_never_acts():
    h = Harness(watches=("/cfg",), on_change="signal")
    h.swap("v1")
    h.swap("v1")
    assert h.sys.sent == []
    h.swap("v2")
    h.swap("v2")
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]


def test_plain_directory_events_are_debounced():
    h = Harness(watches=("/cfg",), on_change="signal", debounce=0.5)
    h.sys.content["/cfg"] = "v2"
    for _ in range(5):
        h.events.put(("fs", 0, False))
        h.advance(0.2)
    assert h.sys.sent == []
    h.advance(0.5)
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]


def test_validation_rejects_and_retries_only_new_content():
    h = Harness(watches=("/cfg",), on_change="signal", validate="check it")
    h.swap("bad")
    helper = h.sys.helpers[-1]
    assert helper.purpose == "validate" and helper.env["CFGSUP_CHANGED"] == "key"
    h.exit(helper.pid, exited(1))
    assert h.sys.sent == []
    assert "validation rejected" in h.log() and "bad config line 3" in h.log()
    assert h.loop.stats.rejections == 1
    h.swap("bad")  # same content again: not re-validated
    assert len(h.sys.helpers) == 1
    h.swap("good")
    h.exit(h.sys.helpers[-1].pid, exited(0))
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]


def test_validate_timeout_kills_the_validator_and_rejects():
    h = Harness(watches=("/cfg",), on_change="signal", validate="slow", command_timeout=3)
    h.swap("v2")
    helper = h.sys.helpers[-1]
    h.advance(3.1)
    assert (helper.pid, signal.SIGKILL, True) in h.sys.sent
    h.exit(helper.pid, killed(signal.SIGKILL))
    assert "timed out after 3s" in h.log()
    assert [s for s in h.sys.sent if s[1] == signal.SIGHUP] == []


def test_changes_during_a_slow_validate_fold_into_one_follow_up():
    h = Harness(watches=("/cfg",), on_change="signal", validate="check")
    h.swap("v2")
    hashes = h.sys.hashes
    for n in range(3, 50):
        h.swap(f"v{n}")
    assert h.sys.hashes == hashes  # no hashing while the action runs
    h.exit(h.sys.helpers[0].pid, exited(0))
    assert len(h.sys.helpers) == 2  # one follow-up validate, for v49
    h.exit(h.sys.helpers[1].pid, exited(0))
    assert [s for s in h.sys.sent if s[1] == signal.SIGHUP] == [(h.child, signal.SIGHUP, False)] * 2
    assert h.loop.watches[0].applied.digest == "v49"


def test_exec_mode_failure_is_counted_and_app_untouched():
    h = Harness(watches=("/cfg",), on_change="exec", reload_command="reload")
    h.swap("v2")
    helper = h.sys.helpers[-1]
    assert helper.purpose == "reload"
    h.exit(helper.pid, exited(4))
    assert h.loop.stats.actions[("exec", "failed")] == 1
    assert h.child is not None and h.sys.sent == []


def test_exit_mode_stops_the_app_and_exits_with_the_code():
    h = Harness(watches=("/cfg",), on_change="exit", change_exit_code=7)
    pid = h.child
    h.swap("v2")
    assert h.sys.sent == [(pid, signal.SIGTERM, True)]
    h.exit(pid, killed(signal.SIGTERM))
    assert h.loop.exit_code == 7


def test_http_mode_reports_back_through_the_queue():
    h = Harness(watches=("/cfg",), on_change="http", webhooks=("http://127.0.0.1:1/-/reload",))
    h.swap("v2")
    target, args = h.sys.threads[-1]
    args[-1](True, "1 webhook(s) answered 2xx")  # what the thread does when done
    h.drain()
    assert h.loop.stats.actions[("http", "done")] == 1


def test_vanished_path_is_not_acted_on_until_it_returns():
    h = Harness(watches=("/cfg",), on_change="signal")
    del h.sys.content["/cfg"]
    h.events.put(("gone", 0))
    h.drain()
    assert h.sys.sent == [] and h.loop.watches[0].mode == "missing"
    h.sys.content["/cfg"] = "v1"  # back with the same content: still nothing to do
    h.advance(1.1)
    assert h.sys.sent == []


def test_inotify_failure_falls_back_to_polling_with_one_warning():
    h = Harness(FakeSystem(inotify_fails=True), watches=("/cfg", "/cfg2"), on_change="signal")
    assert h.log().count("inotify unavailable") == 1
    assert [w.mode for w in h.loop.watches] == ["poll", "poll"]
    h.sys.content["/cfg2"] = "v2"
    h.advance(1.1)
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]


@pytest.mark.parametrize("mode", ["none", "probe"])
def test_none_and_probe_leave_the_app_alone(mode):
    h = Harness(watches=("/cfg",), on_change=mode, health_addr=("127.0.0.1", 1))
    h.swap("v2")
    assert h.sys.sent == [] and h.loop.stats.changes == 1
    assert (h.loop.unhealthy is not None) == (mode == "probe")


# ---- no lost update, whatever the interleaving -----------------------------------------------
from hypothesis import given, settings as hsettings, strategies as st  # noqa: E402

steps = st.lists(st.one_of(
    st.tuples(st.just("swap"), st.sampled_from(["v1", "a", "b", "c"])),
    st.tuples(st.just("app-exits"), st.none()),
    st.tuples(st.just("validator-exits"), st.booleans()),
    st.tuples(st.just("time"), st.floats(0, 3)),
), max_size=40)


@hsettings(max_examples=200, deadline=None)
@given(st.sampled_from(["restart", "signal"]), st.booleans(), steps)
def test_no_lost_update_under_random_bursts(mode, validating, script):
    h = Harness(watches=("/cfg",), on_change=mode, validate="check" if validating else None,
                stop_timeout=2, on_exit="restart")
    contents = ["v1"]
    for kind, arg in script:
        if kind == "swap":
            h.swap(arg)
            if arg != contents[-1]:
                contents.append(arg)
        elif kind == "app-exits" and h.child is not None:
            h.exit(h.child, killed(signal.SIGTERM))
        elif kind == "validator-exits" and h.loop.helper is not None:
            h.exit(h.loop.helper.pid, exited(0 if arg else 1))
        elif kind == "time":
            h.advance(arg)
    # Let everything settle: validators pass, stopping apps exit, timers run out.
    for _ in range(20):
        if h.loop.helper is not None:
            h.exit(h.loop.helper.pid, exited(0))
        elif h.loop.stopping and h.child is not None:
            h.exit(h.child, killed(signal.SIGTERM))
        else:
            h.advance(5)
    watch = h.loop.watches[0]
    final = h.sys.content["/cfg"]
    rejected = h.loop.rejected == (final,)
    assert watch.applied.digest == final or rejected
    # Every action started is one content transition; never more actions than new contents.
    actions = sum(h.loop.stats.actions.values())
    assert actions == h.loop.stats.changes <= len(contents) - 1


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


def test_transient_spawn_failure_on_restart_is_retried_and_finishes_the_action():
    h = Harness(watches=("/cfg",), on_change="restart")
    first = h.child
    h.swap("v2")
    h.sys.spawn_failures = 2
    h.exit(first, killed(signal.SIGTERM))
    assert h.child is None and h.loop.exit_code is None
    assert "cannot start now" in h.log() and "retrying in 0.5s" in h.log()
    h.advance(0.5)
    assert h.child is None and "retrying in 1s" in h.log()
    h.advance(1)
    assert h.child is not None and h.sys.spawned[-1][1]["CFGSUP_CHANGED"] == "key"
    assert h.loop.action is None and h.loop.watches[0].applied.digest == "v2"
    assert h.loop.stats.restarts == 1


def test_first_start_failure_exits_with_the_shell_code():
    system = FakeSystem()
    system.spawn_failures = 1
    loop = Loop(Settings(command=("app",)), Log(10, "text", io.StringIO()), system,
                events=queue.SimpleQueue())
    assert not loop.start_child(first=True) and loop.exit_code == 126


def test_watch_limit_on_a_later_watch_polls_only_that_one():
    system = FakeSystem()
    system.fail_adds = ("/cfg2",)
    h = Harness(system, watches=("/cfg", "/cfg2"), on_change="signal")
    assert [w.mode for w in h.loop.watches] == ["inotify", "poll"]
    assert "cannot watch /cfg2 with inotify (No space left on device)" in h.log()
    assert not system.the_watcher.abandoned
    h.sys.content["/cfg2"] = "v2"
    h.advance(1.1)
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]


def test_first_watch_failing_gives_inotify_up_whole():
    system = FakeSystem()
    system.fail_adds = ("/cfg",)
    h = Harness(system, watches=("/cfg", "/cfg2"), on_change="signal")
    assert [w.mode for w in h.loop.watches] == ["poll", "poll"]
    assert system.the_watcher.abandoned and h.loop.watcher is None
    assert h.log().count("WARNING") == 1 and "inotify unavailable" in h.log()
