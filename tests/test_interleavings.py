"""Random interleavings of changes, stops, exits, helper results, webhook results and time, on a
fake OS. The invariants are the PID 1 promises: nothing starts after a stop; cfgsup exits once,
with the app's status; every process it started is reaped; actions never exceed the distinct
contents; and without a stop the app ends up on the final content."""
from __future__ import annotations

import signal

from hypothesis import given, settings as hsettings, strategies as st

from fakes import Harness, exited, killed
from supervisor.app import DONE
from supervisor.reaper import exit_code

CHANGE_EXIT = 7

steps = st.lists(st.one_of(
    st.tuples(st.just("swap"), st.sampled_from(["v1", "a", "b", "c"])),
    st.tuples(st.just("stop"), st.sampled_from([signal.SIGTERM, signal.SIGINT])),
    st.tuples(st.just("app-exits"), st.sampled_from([exited(0), exited(3), killed(signal.SIGTERM)])),
    st.tuples(st.just("helper-exits"), st.booleans()),
    st.tuples(st.just("webhook"), st.tuples(st.integers(0, 3), st.booleans())),
    st.tuples(st.just("time"), st.floats(0, 3)),
), max_size=40)


class Model:
    """What the test knows from the outside, to check the machines against."""

    def __init__(self, h):
        self.h = h
        self.contents = ["v1"]
        self.status = {}          # pid -> the status we made it exit with
        self.stop_pid = None      # the app's pid when the first stop arrived (0: none running)
        self.stop_signo = 0
        self.started_at_stop = None
        self.actions_at_stop = None
        self.code = None          # cfgsup's exit code, once it is over
        self.change_exit = False  # the app ended by the exit mode's own stop

    def started(self):
        return len(self.h.sys.spawned) + len(self.h.sys.helpers)

    def exit_app(self, status):
        h = self.h
        if h.child is None:
            return
        self.status[h.child] = status
        h.exit(h.child, status)

    def step(self, kind, arg):
        h = self.h
        if kind == "swap":
            h.swap(arg)
            if arg != self.contents[-1]:
                self.contents.append(arg)
        elif kind == "stop":
            if self.stop_pid is None and not h.sup.stop:
                self.stop_pid, self.stop_signo = h.child or 0, arg
                self.started_at_stop = self.started()
                self.actions_at_stop = dict(h.sup.stats.actions)
            h.signal(arg)
        elif kind == "app-exits":
            self.exit_app(arg)
        elif kind == "helper-exits":
            helpers = [p for p in h.sup.procs.owners if p != h.child]
            if helpers:
                h.exit(helpers[0], exited(0 if arg else 1))
        elif kind == "webhook":
            index, ok = arg
            if h.sys.threads:
                h.webhook_result(ok, "answer", index=min(index, len(h.sys.threads) - 1))
        elif kind == "time":
            self.kernel_kills()
            h.advance(arg)
        self.check()

    def kernel_kills(self):
        """What the kernel does with a SIGKILL between two steps: the process is gone."""
        h = self.h
        for pid in list(h.sup.procs.owners):
            if pid != h.child and (pid, signal.SIGKILL, True) in h.sys.sent:
                h.exit(pid, killed(signal.SIGKILL))

    def check(self):
        h = self.h
        if self.stop_pid is None and "stopped the app to exit" in h.log():
            self.change_exit = True  # exit mode ended it (an app that was down needed no stop)
        if self.started_at_stop is not None:
            assert self.started() == self.started_at_stop, "something started after the stop"
            assert h.sup.stats.actions == self.actions_at_stop, "an action after the stop"
            for pid in h.sup.procs.owners:  # a validator or reload command still running
                assert pid == h.child or (pid, signal.SIGKILL, True) in h.sys.sent, "helper not killed"
        if self.code is not None:
            assert h.exit_code == self.code, "exited twice, or the code changed"
        elif h.sup.finished():
            self.code = h.exit_code

    def settle(self):
        """Let everything run out: helpers finish, stopping apps exit, webhooks answer."""
        h = self.h
        for _ in range(60):
            self.kernel_kills()
            if h.sup.finished():
                break
            helpers = [p for p in h.sup.procs.owners if p != h.child]
            if helpers:
                h.exit(helpers[0], exited(0))
            elif h.app.why is not None and h.child is not None:
                self.exit_app(exited(0))  # not 128+N: a code of its own, told apart from ours
            elif h.changes.action is not None and h.changes.action.kind == "http":
                h.webhook_result(True, "answer")
            elif h.changes.busy or h.app.state == "backoff":
                h.advance(5)
            else:
                break
            self.check()

    def expected_code(self):
        if self.stop_pid == 0:
            return 128 + self.stop_signo
        if self.stop_pid is not None:
            return exit_code(self.status[self.stop_pid])
        if self.change_exit:
            return CHANGE_EXIT
        return exit_code(self.status[max(self.status)])


@hsettings(max_examples=300, deadline=None)
@given(st.sampled_from(["restart", "signal", "exec", "http", "exit"]), st.booleans(),
       st.sampled_from(["exit", "restart"]), steps)
def test_a_stop_always_wins_and_no_update_is_lost(mode, validating, on_exit, script):
    h = Harness(watches=("/cfg",), on_change=mode, validate="check" if validating else None,
                reload_command="reload", webhooks=("http://127.0.0.1:1/",), stop_timeout=2,
                on_exit=on_exit, change_exit_code=CHANGE_EXIT)
    model = Model(h)
    for kind, arg in script:
        model.step(kind, arg)
    model.settle()
    final = h.sys.content["/cfg"]
    if not h.sup.stop:
        # No stop: the app was brought up to the final content (or that content was rejected).
        assert h.changes.applied[0].digest == final or h.changes.rejected == (final,)
        model.step("stop", signal.SIGTERM)
        model.settle()
    assert h.sup.finished() and h.app.state == DONE
    assert not h.sup.procs.alive(), "a process we started was never reaped"
    assert h.exit_code == model.expected_code()
    # Every action is one content transition; never more actions than new contents.
    assert sum(h.sup.stats.actions.values()) <= h.sup.stats.changes <= len(model.contents) - 1
