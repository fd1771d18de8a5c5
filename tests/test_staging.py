"""The change pipeline with --stage on a fake OS over real directories: splay, probation,
rollback, and random sequences of good, invalid and crashing contents."""
from __future__ import annotations

import signal

from hypothesis import given, settings as hsettings, strategies as st

from fakes import StagedHarness, exited
from supervisor.app import HELD
from supervisor.changes import IDLE, PROBATION, SPLAY
from supervisor.watcher import COMMIT


def validator(h, ok=None):
    """Finish the running validator: by default it rejects content that says `invalid`."""
    helper = h.helper
    if ok is None:
        with open(helper.env["CFGSUP_CANDIDATE"].split(":")[0] + "/app.conf") as fh:
            ok = "invalid" not in fh.read()
    h.exit(helper.pid, exited(0 if ok else 1))


def test_splay_spreads_over_the_window_and_folds_what_arrives(tmp_path):
    h = StagedHarness(tmp_path, on_change="signal", splay=10, min_uptime=0)
    delays = []
    for n in range(200):
        h.swap(f"v{n + 2}")
        assert h.changes.state == SPLAY
        delays.append(h.sup.loop.timers.when("splay") - h.now[0])
        h.swap(f"w{n + 2}")  # during the splay: folded into the same action
        h.advance(10)
    assert all(0 <= d < 10 for d in delays)
    assert min(delays) < 1 and max(delays) > 9
    assert [c for how, c in h.sys.ran if how == "signal"] == [f"w{n + 2}" for n in range(200)]


def test_no_splay_before_the_first_start(tmp_path):
    h = StagedHarness(tmp_path, splay=30)
    assert h.child is not None and h.sys.ran == [("start", "v1")]


def test_verify_is_retried_every_second_until_it_passes(tmp_path):
    h = StagedHarness(tmp_path, verify="check", verify_timeout=30, min_uptime=2)
    assert h.helper is None  # the first run comes a second after the change was applied
    h.advance(1)
    for _ in range(3):
        assert h.changes.state == PROBATION
        h.exit(h.helper.pid, exited(1))
        h.advance(1)
    h.exit(h.helper.pid, exited(0))
    assert len([x for x in h.sys.helpers if x.purpose == "verify"]) == 4
    assert h.changes.state == IDLE and "passed probation" in h.log()


def test_an_exit_on_probation_rolls_back_whatever_on_exit_says(tmp_path):
    h = StagedHarness(tmp_path, on_exit="restart", min_uptime=5)
    h.advance(5)  # v1 proven
    h.swap("v2")
    h.exit(h.child, signal.SIGTERM)  # the restart for v2...
    assert h.sys.ran[-1] == ("start", "v2")
    h.exit(h.child, exited(3))  # ...and v2 makes the app exit: no backoff, a rollback
    assert "restarting in" not in h.log() and "rolled back" in h.log()
    assert h.sys.ran[-1] == ("start", "v1") and h.published() == "v1"
    assert h.sup.stats.rollbacks == 1


def test_with_nothing_to_roll_back_to_on_exit_decides(tmp_path):
    h = StagedHarness(tmp_path, on_exit="restart", min_uptime=5)
    h.exit(h.child, exited(3))  # the very first configuration fails its probation
    assert "nothing to roll back to" in h.log()
    assert h.app.state != HELD and "restarting in 0.5s" in h.log()


def test_term_on_probation_exits_with_the_apps_status_and_no_rollback(tmp_path):
    h = StagedHarness(tmp_path, on_change="signal", min_uptime=5)
    h.advance(5)
    h.swap("v2")
    assert h.changes.state == PROBATION
    h.signal(signal.SIGTERM)
    h.exit(h.child, exited(0))
    assert h.exit_code == 0 and "rolled back" not in h.log() and h.published() == "v2"


def test_a_change_during_probation_waits_for_its_end(tmp_path):
    h = StagedHarness(tmp_path, on_change="signal", min_uptime=5)
    h.advance(5)
    h.swap("v2")
    h.swap("v3")
    assert h.sys.ran[-1] == ("signal", "v2") and h.changes.state == PROBATION
    h.advance(5)
    assert h.sys.ran[-1] == ("signal", "v3")


# ---- random sequences of good, invalid and crashing contents ------------------------------------
contents = st.lists(st.tuples(st.sampled_from(["good", "invalid", "crash"]), st.integers(0, 3)),
                    min_size=1, max_size=12)


@hsettings(max_examples=60, deadline=None)
@given(st.sampled_from(["restart", "signal", "exec"]), contents)
def test_the_app_never_runs_on_bad_content_and_ends_on_the_newest_good(tmp_path_factory, mode, script):
    h = StagedHarness(tmp_path_factory.mktemp("staged"), {"app.conf": "good v1"}, on_change=mode,
                      validate="check", reload_command="reload", min_uptime=2, on_exit="restart")
    failed, newest_good = set(), "good v1"

    def settle():
        for _ in range(30):
            if h.helper is not None:
                if h.helper.purpose == "validate":
                    validator(h)
                else:
                    h.exit(h.helper.pid, exited(0))
            elif h.child is not None and h.sys.ran[-1][1].startswith("crash") and h.changes.state == PROBATION:
                failed.add(h.sys.ran[-1][1])
                h.exit(h.child, exited(3))  # the app cannot run on it
            elif h.app.why == "restart" and h.child is not None:
                h.exit(h.child, signal.SIGTERM)
            elif h.changes.busy or h.app.state == "backoff":
                h.advance(2)
            else:
                return

    for kind, n in script:
        content = f"{kind} v{n}"
        h.swap(content)
        settle()
        if kind == "good":
            newest_good = content
        for how, seen in h.sys.ran:
            assert not seen.startswith("invalid"), f"the app was {how}ed on content that failed validation"
        # Content that failed its probation is never run again.
        runs = [seen for _how, seen in h.sys.ran]
        for bad in failed:
            first = runs.index(bad)
            assert bad not in runs[first + 1:], f"{bad} ran again after it failed"
    assert h.published() == newest_good and h.sys.ran[-1][1] == newest_good


# ---- when DEST cannot be written (full, read-only) -------------------------------------------------
def full_disk(monkeypatch, what):
    import errno

    from supervisor.stage import Stage, StageError

    def refuse(self, *args):
        raise StageError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Stage, what, refuse)


def test_a_rollback_that_cannot_publish_keeps_the_app_off_the_bad_content(tmp_path, monkeypatch):
    h = StagedHarness(tmp_path, on_change="restart", min_uptime=5)
    h.advance(5)  # v1 proven
    h.swap("v2")
    h.exit(h.child, signal.SIGTERM)
    assert h.sys.ran[-1] == ("start", "v2")
    full_disk(monkeypatch, "publish")
    starts = len(h.sys.ran)
    h.exit(h.child, exited(3))  # v2 makes the app exit; the last-known-good cannot be published
    assert "cannot publish the last-known-good" in h.log() and len(h.sys.ran) == starts
    h.advance(5)
    assert len(h.sys.ran) == starts  # tried again, still full: the app stays down
    monkeypatch.undo()
    h.advance(5)  # room again: the rollback goes through, and the app starts on v1
    assert h.sys.ran[-1] == ("start", "v1") and h.published() == "v1"
    assert h.sup.stats.rollbacks == 1


def test_a_full_dest_at_start_is_one_line_and_exit_75(tmp_path, monkeypatch):
    h = StagedHarness(tmp_path, min_uptime=0)
    h.advance(1)  # v1 proven
    h.signal(signal.SIGTERM)
    h.exit(h.child, exited(0))
    full_disk(monkeypatch, "publish")
    # SRC went back to the last-known-good while DEST shows another generation (a candidate).
    again = StagedHarness.__new__(StagedHarness)
    again.volume = h.volume
    h.volume.write({"app.conf": "v9"})
    from fakes import FsSystem, Harness

    Harness.__init__(again, FsSystem(h.sys.dest), stage=((h.volume.path, h.sys.dest),),
                     watches=(h.volume.path,), min_uptime=0)
    assert again.sys.ran == [] and "Traceback" not in again.log()


def test_a_state_that_cannot_be_saved_is_warned_about_not_a_crash(tmp_path, monkeypatch):
    h = StagedHarness(tmp_path, on_change="signal", min_uptime=2)
    full_disk(monkeypatch, "save")
    h.advance(2)  # the probation passes; its state cannot be written
    assert "passed probation" in h.log() and "cannot write cfgsup's state" in h.log()
    h.swap("v2")
    assert h.sys.ran[-1] == ("signal", "v2")


def test_a_fifo_in_src_does_not_make_every_idle_moment_a_change(tmp_path):
    """SRC's digest counts a FIFO (by name and kind), a copy leaves it out: the configuration is
    named by SRC's digest, so the copy's differing one never looks like a change."""
    import os

    h = StagedHarness(tmp_path, on_change="signal", min_uptime=1)
    h.advance(1)
    h.volume.write({"app.conf": "v2"})
    os.mkfifo(os.path.join(h.volume.path, "..data", "pipe"))  # after the write: the writer reads
    h.note(COMMIT)
    h.drain()
    assert h.sys.ran[-1] == ("signal", "v2")
    signals = len(h.sys.ran)
    for _ in range(5):
        h.advance(6)
    assert len(h.sys.ran) == signals  # acted once, then nothing


def test_a_splay_is_not_skipped_after_content_went_back(tmp_path):
    h = StagedHarness(tmp_path, on_change="signal", splay=10, min_uptime=0)
    h.swap("v2")
    h.swap("v1")  # back to what the app runs, during the splay
    h.advance(10)
    assert h.changes.state == IDLE and not [r for r in h.sys.ran if r[0] == "signal"]
    h.swap("v3")  # a real change: it gets a splay of its own
    assert h.changes.state == SPLAY


def test_candidates_of_a_killed_cfgsup_do_not_pile_up(tmp_path):
    import os

    from supervisor.stage import Stage

    h = StagedHarness(tmp_path, on_change="signal", validate="check", min_uptime=0)
    dest = h.sys.dest
    for n in range(5):  # killed while a candidate is being validated, five times over
        Stage(h.volume.path, dest).copy()
    os.close(h.sup.rollout.stages[0].lock_fd)  # the first one is gone (killed): its lock too
    again = StagedHarness.__new__(StagedHarness)
    again.volume = h.volume
    from fakes import FsSystem, Harness

    Harness.__init__(again, FsSystem(dest), stage=((h.volume.path, dest),), watches=(h.volume.path,),
                     validate="check", min_uptime=0)
    assert again.code is None  # started, validating its own candidate
    gens = [n for n in os.listdir(dest) if n.startswith("..20")]
    assert len(gens) == 1, gens  # its own candidate; the six left behind are gone
