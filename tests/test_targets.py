"""Sidecar mode's target: the oldest process of that name, never cfgsup's own, looked up anew."""
from __future__ import annotations

import pytest

from supervisor.targets import find


class NoSuchProcess(Exception):
    pass


class FakeProcess:
    def __init__(self, pid, name, cmdline, created, children=()):
        self.pid = pid
        self.info = {"pid": pid, "name": name, "cmdline": cmdline, "create_time": created}
        self.kids = list(children)

    def children(self, recursive=False):
        return self.kids


class FakePsutil:
    Error = NoSuchProcess

    def __init__(self, procs, me):
        self.procs = procs
        self.me = me

    def Process(self, pid):  # noqa: N802 - psutil's own name
        if pid != self.me.pid:
            raise NoSuchProcess(pid)
        return self.me

    def process_iter(self, attrs):
        for proc in self.procs:
            if proc.info is None:
                continue  # vanished while we iterated: psutil skips it too
            yield proc


def world(*procs, mine=()):
    me = FakeProcess(1, "cfgsup", ["/opt/cfgsup/cfgsup"], 1.0, children=mine)
    return FakePsutil([me, *mine, *procs], me)


def test_the_oldest_process_of_that_name_wins():
    master = FakeProcess(10, "nginx", ["nginx: master process nginx -g daemon off;"], 5.0)
    worker = FakeProcess(11, "nginx", ["nginx: worker process"], 6.0)
    other = FakeProcess(12, "sleep", ["sleep", "100"], 1.0)
    assert find("nginx", world(worker, other, master), me=1) is master


def test_the_base_name_of_argv0_counts_too():
    app = FakeProcess(20, "python3", ["/usr/local/bin/myapp", "--serve"], 3.0)
    assert find("myapp", world(app), me=1) is app


def test_cfgsups_own_children_are_never_the_target():
    validator = FakeProcess(30, "nginx", ["nginx", "-t"], 0.5)  # `nginx -t` run by cfgsup: older!
    app = FakeProcess(31, "nginx", ["nginx"], 2.0)
    assert find("nginx", world(app, mine=(validator,)), me=1) is app
    assert find("cfgsup", world(app), me=1) is None  # cfgsup itself is not counted


def test_a_vanished_process_is_skipped_and_none_is_none():
    gone = FakeProcess(40, "nginx", ["nginx"], 1.0)
    gone.info = None
    assert find("nginx", world(gone), me=1) is None
    assert find("nginx", world(), me=1) is None


def test_a_process_without_a_start_time_is_skipped():
    odd = FakeProcess(50, "nginx", ["nginx"], None)
    real = FakeProcess(51, "nginx", ["nginx"], 9.0)
    assert find("nginx", world(odd, real), me=1) is real


@pytest.mark.parametrize("cmdline", [[], None, [""]])
def test_a_process_with_no_argv_is_matched_on_its_name(cmdline):
    kernel_thread = FakeProcess(60, "kworker", cmdline, 0.1)
    assert find("kworker", world(kernel_thread), me=1) is kernel_thread
