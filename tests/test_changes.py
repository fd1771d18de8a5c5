"""The change pipeline on a fake OS: deciding on digests, folding, every mode, and the Stop."""
from __future__ import annotations

import signal

import pytest

from fakes import FakeSystem, Harness, exited, killed
from supervisor.app import DONE
from supervisor.changes import IDLE, STOPPED, VALIDATING


def hups(h):
    return [s for s in h.sys.sent if s[1] == signal.SIGHUP]


# ---- deciding and folding --------------------------------------------------------------------
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
    assert h.changes.applied[0].digest == "v4"
    assert h.changes.state == IDLE


def test_identical_content_never_acts():
    h = Harness(watches=("/cfg",), on_change="signal")
    h.swap("v1")
    h.swap("v1")
    assert h.sys.sent == []
    h.swap("v2")
    h.swap("v2")
    assert h.sys.sent == [(h.child, signal.SIGHUP, False)]


def test_validation_rejects_and_retries_only_new_content():
    h = Harness(watches=("/cfg",), on_change="signal", validate="check it")
    h.swap("bad")
    helper = h.sys.helpers[-1]
    assert helper.purpose == "validate" and helper.env["CFGSUP_CHANGED"] == "key"
    assert h.changes.state == VALIDATING
    h.exit(helper.pid, exited(1))
    assert h.sys.sent == []
    assert "validation rejected" in h.log() and "bad config line 3" in h.log()
    assert h.sup.stats.rejections == 1
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
    assert hups(h) == []


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
    assert hups(h) == [(h.child, signal.SIGHUP, False)] * 2
    assert h.changes.applied[0].digest == "v49"


def test_exec_mode_failure_is_counted_and_app_untouched():
    h = Harness(watches=("/cfg",), on_change="exec", reload_command="reload")
    h.swap("v2")
    helper = h.sys.helpers[-1]
    assert helper.purpose == "reload"
    h.exit(helper.pid, exited(4))
    assert h.sup.stats.actions[("exec", "failed")] == 1
    assert h.child is not None and h.sys.sent == []


def test_exit_mode_stops_the_app_and_exits_with_the_code():
    h = Harness(watches=("/cfg",), on_change="exit", change_exit_code=7)
    pid = h.child
    h.swap("v2")
    assert h.sys.sent == [(pid, signal.SIGTERM, True)]
    h.exit(pid, killed(signal.SIGTERM))
    assert h.exit_code == 7
    assert "stopped the app to exit" in h.log()


def test_http_mode_reports_back_through_the_queue():
    h = Harness(watches=("/cfg",), on_change="http", webhooks=("http://127.0.0.1:1/-/reload",))
    h.swap("v2")
    h.webhook_result(True, "1 webhook(s) answered 2xx")
    assert h.sup.stats.actions[("http", "done")] == 1


def test_a_stale_webhook_result_is_ignored():
    h = Harness(watches=("/cfg",), on_change="http", webhooks=("http://127.0.0.1:1/-/reload",))
    h.swap("v2")
    h.webhook_result(True)
    h.swap("v3")
    h.webhook_result(False, "late", index=0)  # the first action's thread, reporting twice
    assert h.changes.action is not None and h.changes.action.target[0].digest == "v3"
    h.webhook_result(True)
    assert h.sup.stats.actions == {("http", "done"): 2}


@pytest.mark.parametrize("mode", ["none", "probe"])
def test_none_and_probe_leave_the_app_alone(mode):
    h = Harness(watches=("/cfg",), on_change=mode, health_addr=("127.0.0.1", 1))
    h.swap("v2")
    assert h.sys.sent == [] and h.sup.stats.changes == 1
    assert (h.changes.unhealthy is not None) == (mode == "probe")


def test_thousands_of_changed_names_are_bounded_in_env_and_logs():
    system = FakeSystem()
    system.entries["/cfg"] = {f"key-{n:05d}.conf": f"d{n}" for n in range(8000)}
    h = Harness(system, watches=("/cfg",), on_change="restart")
    h.swap("v2")
    h.exit(h.child, killed(signal.SIGTERM))
    env = h.sys.spawned[-1][1]
    assert len(env["CFGSUP_CHANGED"]) <= 16 * 1024
    kept = env["CFGSUP_CHANGED"].split(",")
    assert int(env["CFGSUP_CHANGED_TRUNCATED"]) == 8000 - len(kept)
    assert max(len(line) for line in h.log().splitlines()) < 4096
    assert "(+7980 more)" in h.log()


# ---- a stop wins, in every phase ---------------------------------------------------------------
def stopped_cleanly(h, code, spawned):
    """The exit code, nothing started after the stop, every process we started reaped."""
    assert h.exit_code == code, h.log()
    assert len(h.sys.spawned) + len(h.sys.helpers) == spawned
    assert not h.sup.procs.alive()
    assert h.changes.state == STOPPED and h.app.state == DONE


def test_term_while_validating_kills_the_validator_and_applies_nothing():
    h = Harness(watches=("/cfg",), on_change="restart", validate="check", stop_timeout=20)
    app = h.child
    h.swap("v2")
    validator = h.helper
    h.signal(signal.SIGTERM)
    assert (validator.pid, signal.SIGKILL, True) in h.sys.sent
    assert (app, signal.SIGTERM, False) in h.sys.sent
    h.exit(validator.pid, exited(0))  # even "passed" now means nothing
    h.exit(app, exited(0))
    stopped_cleanly(h, 0, 2)
    assert "stopping pid" not in h.log() and "restarted the app" not in h.log()


def test_term_while_stopping_for_a_restart_starts_nothing_and_exits_with_the_app_status():
    h = Harness(watches=("/cfg",), on_change="restart", stop_timeout=20)
    app = h.child
    h.swap("v2")
    h.advance(5)
    h.signal(signal.SIGTERM)
    assert h.app.why == "shutdown"
    assert h.sup.loop.timers.when("kill") == pytest.approx(h.now[0] - 5 + 20)  # earlier one kept
    h.exit(app, killed(signal.SIGTERM))
    stopped_cleanly(h, 143, 1)


def test_term_arriving_with_the_restarted_apps_exit_in_one_batch():
    h = Harness(watches=("/cfg",), on_change="restart")
    app = h.child
    h.swap("v2")
    h.sys.alive_groups.discard(app)
    h.sys.pending.append((app, exited(0)))
    h.events.put(("signal", signal.SIGTERM))  # what the wake-up pipe hands over: signals first
    h.events.put(("reap",))
    h.drain()
    stopped_cleanly(h, 0, 1)


def test_term_while_the_new_app_is_up_but_the_restart_not_logged():
    h = Harness(watches=("/cfg",), on_change="restart")
    h.swap("v2")
    h.exit(h.child, killed(signal.SIGTERM))
    new = h.child
    h.signal(signal.SIGTERM)
    assert h.sys.sent[-1] == (new, signal.SIGTERM, False)
    h.exit(new, exited(3))
    stopped_cleanly(h, 3, 2)


def test_term_while_an_exec_reload_runs_kills_it():
    h = Harness(watches=("/cfg",), on_change="exec", reload_command="reload")
    app = h.child
    h.swap("v2")
    reload = h.helper
    h.signal(signal.SIGINT)
    assert (reload.pid, signal.SIGKILL, True) in h.sys.sent
    h.exit(app, killed(signal.SIGINT))
    assert h.exit_code is None  # the reload command is not reaped yet
    h.exit(reload.pid, killed(signal.SIGKILL))
    stopped_cleanly(h, 130, 2)
    assert "ran the reload command" not in h.log()


def test_term_while_a_webhook_is_in_flight_ignores_its_result():
    h = Harness(watches=("/cfg",), on_change="http", webhooks=("http://127.0.0.1:1/",))
    h.swap("v2")
    h.signal(signal.SIGTERM)
    h.webhook_result(True)
    h.exit(h.sup.app.pid, exited(0))
    stopped_cleanly(h, 0, 1)
    assert h.sup.stats.actions == {}


def test_term_during_the_exit_mode_stop_exits_with_the_app_status():
    h = Harness(watches=("/cfg",), on_change="exit", change_exit_code=7)
    h.swap("v2")
    h.signal(signal.SIGTERM)
    h.exit(h.child, killed(signal.SIGTERM))
    stopped_cleanly(h, 143, 1)


def test_term_while_validating_in_signal_mode_sends_no_hup():
    h = Harness(watches=("/cfg",), on_change="signal", validate="check")
    h.swap("v2")
    h.signal(signal.SIGTERM)
    h.exit(h.helper.pid if h.helper else h.sys.helpers[-1].pid, exited(0))
    assert hups(h) == []


def test_changes_after_the_stop_are_not_even_considered():
    h = Harness(watches=("/cfg",), on_change="signal", stop_timeout=5)
    h.signal(signal.SIGTERM)
    h.swap("v2")
    assert hups(h) == [] and h.sup.stats.changes == 0


def test_app_exit_with_on_exit_exit_kills_a_running_validator():
    h = Harness(watches=("/cfg",), on_change="restart", validate="check")
    h.swap("v2")
    validator = h.helper
    h.exit(h.child, exited(5))
    assert (validator.pid, signal.SIGKILL, True) in h.sys.sent
    h.exit(validator.pid, killed(signal.SIGKILL))
    stopped_cleanly(h, 5, 2)


def test_exit_mode_acts_on_nothing_after_its_stop():
    """A second change while the app is stopped for the first: cfgsup exits; it does not act
    on the second once the app is gone."""
    h = Harness(watches=("/cfg",), on_change="exit", change_exit_code=7, validate="check")
    h.swap("v2")
    h.exit(h.sys.helpers[-1].pid, exited(0))  # v2 passes
    h.swap("v3")  # arrives during the stop
    h.exit(h.child, killed(signal.SIGTERM))
    assert h.exit_code == 7
    assert len(h.sys.helpers) == 1 and h.sup.stats.actions == {("exit", "done"): 1}
