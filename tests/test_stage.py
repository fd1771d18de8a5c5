"""A stage directory and the rollout over stage pairs, on real directories."""
from __future__ import annotations

import json
import os
import stat
import threading

import pytest

from kubelet import KubeletVolume
from supervisor.digest import snapshot
from supervisor.rollout import BAD_KEPT, Rollout, config_id
from supervisor.stage import STATE, Stage, StageError


@pytest.fixture
def src(tmp_path):
    return KubeletVolume(tmp_path / "src", {"app.conf": "v1", "nested/deep.conf": "d1"}, mode=0o640)


def test_a_copy_is_the_same_content_with_the_same_modes(src, tmp_path):
    stage = Stage(src.path, str(tmp_path / "dest"))
    stage.check()
    gen = stage.copy()
    assert snapshot(stage.path(gen)).digest == snapshot(src.path).digest
    mode = os.stat(os.path.join(stage.path(gen), "nested/deep.conf")).st_mode
    assert stat.S_IMODE(mode) == 0o640
    assert stage.published() is None  # a candidate is invisible until published


def test_publish_gives_the_kubelets_layout_and_follows_removed_keys(src, tmp_path):
    stage = Stage(src.path, str(tmp_path / "dest"))
    stage.check()
    first = stage.copy()
    stage.publish(first)
    dest = stage.dest
    assert os.readlink(os.path.join(dest, "..data")) == first
    assert os.readlink(os.path.join(dest, "app.conf")) == "..data/app.conf"
    assert os.readlink(os.path.join(dest, "nested")) == "..data/nested"
    src.write({"app.conf": "v2"})
    second = stage.copy()
    stage.publish(second)
    assert not os.path.lexists(os.path.join(dest, "nested"))
    with open(os.path.join(dest, "app.conf")) as fh:
        assert fh.read() == "v2"
    assert snapshot(dest).digest == snapshot(src.path).digest


def test_a_plain_source_with_links_fifos_and_an_unreadable_file(tmp_path):
    plain = tmp_path / "plain"
    (plain / "real").mkdir(parents=True)
    (plain / "real" / "a.conf").write_text("a")
    (plain / "linked").symlink_to("real")
    os.mkfifo(plain / "pipe")
    stage = Stage(str(plain), str(tmp_path / "dest"))
    stage.check()
    done = []
    thread = threading.Thread(target=lambda: done.append(stage.copy()), daemon=True)
    thread.start()
    thread.join(10)
    assert done, "copying a FIFO must never block"
    copied = stage.path(done[0])
    assert open(os.path.join(copied, "linked", "a.conf")).read() == "a"  # links followed, as the app reads
    assert not os.path.exists(os.path.join(copied, "pipe"))
    if os.geteuid() != 0:
        (plain / "secret").write_text("s")
        os.chmod(plain / "secret", 0)
        with pytest.raises(ValueError, match="cannot read"):
            stage.copy()


def test_dest_must_be_cfgsups(src, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(ValueError, match="not staged by cfgsup"):
        Stage(src.path, str(busy)).check()
    with pytest.raises(ValueError, match="contain each other"):
        Stage(src.path, os.path.join(src.path, "inner")).check()
    Stage(src.path, str(tmp_path / "new" / "dir")).check()  # made when missing
    assert (tmp_path / "new" / "dir").is_dir()


def test_prune_keeps_the_published_the_kept_and_the_newest(src, tmp_path):
    stage = Stage(src.path, str(tmp_path / "dest"))
    stage.check()
    gens = [stage.copy() for _ in range(6)]
    assert gens == sorted(gens)  # names sort by age
    stage.publish(gens[0])
    stage.prune({gens[1]}, 2)
    assert stage.generations() == sorted([gens[0], gens[1], gens[4], gens[5]])


def test_a_full_dest_is_a_stage_error_not_a_content_error(src, tmp_path):
    stage = Stage(src.path, "/proc/self")  # not writable: what ENOSPC or a read-only fs gives
    with pytest.raises(StageError):
        stage._copy_tree(src.path, "/proc/self/cfgsup-test")


def two(tmp_path):
    a = KubeletVolume(tmp_path / "a", {"a.conf": "a1"})
    b = KubeletVolume(tmp_path / "b", {"b.conf": "b1"})
    stages = [Stage(a.path, str(tmp_path / "da")), Stage(b.path, str(tmp_path / "db"))]
    for stage in stages:
        stage.check()
    return a, b, stages


def stage_now(rollout, volumes):
    """Stage what the volumes hold now, named by their digests (as the pipeline does)."""
    digests = [snapshot(v.path).digest for v in volumes]
    cid = config_id(digests)
    rollout.stage_candidate(cid, digests)
    return cid


def test_pairs_are_one_configuration_and_survive_a_restart(tmp_path):
    a, b, stages = two(tmp_path)
    rollout = Rollout(stages, 3, snapshot)
    cid = stage_now(rollout, (a, b))
    assert len(rollout.candidate_gens) == 2
    rollout.publish("candidate")
    rollout.accept()
    b.write({"b.conf": "b2"})
    bad = stage_now(rollout, (a, b))
    rollout.publish("candidate")
    rollout.roll_back()
    assert rollout.published() == "good"
    again = Rollout(stages, 3, snapshot)
    again.load()
    assert again.good == cid and again.is_bad(bad) and again.published() == "good"


def test_states_that_disagree_forget_the_good_one(tmp_path):
    a, b, stages = two(tmp_path)
    rollout = Rollout(stages, 3, snapshot)
    stage_now(rollout, (a, b))
    rollout.publish("candidate")
    rollout.accept()
    path = os.path.join(stages[1].dest, STATE)
    state = json.load(open(path))
    state["good"]["config"] = "something else"
    json.dump(state, open(path, "w"))
    again = Rollout(stages, 3, snapshot)
    again.load()
    assert again.good is None


def test_the_bad_mark_is_saved_before_the_good_one_is_published(tmp_path, monkeypatch):
    a, b, stages = two(tmp_path)
    rollout = Rollout(stages, 3, snapshot)
    stage_now(rollout, (a, b))
    rollout.publish("candidate")
    rollout.accept()
    a.write({"a.conf": "a2"})
    bad = stage_now(rollout, (a, b))
    rollout.publish("candidate")

    def killed(_gen):
        raise SystemExit("SIGKILL")  # the process dies in the middle of the rollback

    monkeypatch.setattr(Stage, "publish", lambda self, gen: killed(gen))
    with pytest.raises(SystemExit):
        rollout.roll_back()
    monkeypatch.undo()
    again = Rollout(stages, 3, snapshot)
    again.load()
    assert again.is_bad(bad)


def test_bad_marks_are_bounded(tmp_path):
    _a, _b, stages = two(tmp_path)
    rollout = Rollout(stages, 3, snapshot)
    for n in range(BAD_KEPT + 10):
        rollout.mark_bad(f"id{n}")
    assert len(rollout.bad) == BAD_KEPT and rollout.bad[-1] == f"id{BAD_KEPT + 9}"


# ---- a hostile or broken DEST (it is an emptyDir every container of the pod can write) -----------
@pytest.mark.parametrize("text", ['{"version": 1, "bad": 5, "good": []}', "[" * 100000, "not json",
                                  '{"version": 1, "good": {"config": "abc", "gen": "../../etc", "digest": "abc"}}',
                                  '{"version": 1, "bad": ["ok", {"x": 1}, "../x", "' + "a" * 200 + '"]}'])
def test_a_state_that_makes_no_sense_is_ignored(tmp_path, text):
    a, b, stages = two(tmp_path)
    for stage in stages:
        with open(os.path.join(stage.dest, STATE), "w") as fh:
            fh.write(text)
    rollout = Rollout(stages, 3, snapshot)
    rollout.load()
    assert rollout.good is None and all(len(cid) <= 64 and cid.isalnum() for cid in rollout.bad)
    stages[0].remove("../../etc")  # never a path outside DEST
    assert os.path.isdir("/etc")


def test_links_planted_in_dest_are_never_written_through(tmp_path):
    a, b, stages = two(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    state = os.path.join(stages[0].dest, STATE)
    os.symlink(victim, state)
    rollout = Rollout(stages, 3, snapshot)
    rollout.load()  # not read through the link either
    assert rollout.save()
    assert victim.read_text() == "precious" and not os.path.islink(state)


def test_a_second_cfgsup_on_the_same_dest_is_refused(src, tmp_path):
    first, second = Stage(src.path, str(tmp_path / "dest")), Stage(src.path, str(tmp_path / "dest"))
    first.check()
    first.lock()
    with pytest.raises(ValueError, match="staged by another cfgsup already"):
        second.lock()
    os.close(first.lock_fd)
    second.lock()  # free again once the first is gone


def test_a_link_from_src_into_dest_is_refused(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.conf").write_text("a")
    dest = tmp_path / "dest"
    stage = Stage(str(plain), str(dest))
    stage.check()
    (plain / "mirror").symlink_to(dest)
    with pytest.raises(ValueError, match="links into"):
        stage.copy()
    assert stage.generations() == []  # the half-made candidate is gone


def test_a_copy_reads_no_more_than_the_digest(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "endless").symlink_to("/proc/self/pagemap")  # reads without end, says size 0
    stage = Stage(str(plain), str(tmp_path / "dest"))
    stage.check()
    gen = stage.copy()
    assert os.path.getsize(os.path.join(stage.path(gen), "endless")) <= 1 << 16


def test_the_last_good_is_held_when_killed_in_the_middle_of_its_rollback(tmp_path):
    """The bad mark was saved, DEST still shows the failed candidate: a new start holds it back
    instead of giving it a probation again."""
    a, b, stages = two(tmp_path)
    rollout = Rollout(stages, 3, snapshot)
    stage_now(rollout, (a, b))
    rollout.publish("candidate")
    rollout.accept()
    a.write({"a.conf": "a2"})
    bad = stage_now(rollout, (a, b))
    rollout.publish("candidate")
    rollout.bad.append(bad)
    rollout.save()  # ... and killed here
    again = Rollout(stages, 3, snapshot)
    again.load()
    assert again.published() == "candidate" and again.plan(bad) == "held"


def test_a_dest_left_by_a_cfgsup_killed_before_its_first_state_is_taken_over(src, tmp_path):
    stage = Stage(src.path, str(tmp_path / "dest"))
    stage.check()
    stage.publish(stage.copy())  # ... and killed before any state was written
    assert STATE not in os.listdir(stage.dest)
    Stage(src.path, stage.dest).check()  # only cfgsup's own things: accepted


def test_visible_links_are_put_right_when_dest_already_shows_the_generation(tmp_path):
    a, b, stages = two(tmp_path)
    rollout = Rollout(stages, 3, snapshot)
    good = stage_now(rollout, (a, b))
    rollout.publish("candidate")
    rollout.accept()
    dest = stages[0].dest
    os.unlink(os.path.join(dest, "a.conf"))  # killed between the ..data swap and the links
    os.symlink("..data/stale.conf", os.path.join(dest, "stale.conf"))
    again = Rollout(stages, 3, snapshot)
    again.load()
    assert again.plan(good) == "good"
    assert os.readlink(os.path.join(dest, "a.conf")) == "..data/a.conf"
    assert not os.path.lexists(os.path.join(dest, "stale.conf"))


def test_a_publish_that_fails_half_way_puts_the_first_dest_back(tmp_path, monkeypatch):
    a, b, stages = two(tmp_path)
    rollout = Rollout(stages, 3, snapshot)
    stage_now(rollout, (a, b))
    rollout.publish("candidate")
    rollout.accept()
    shown = [s.published() for s in stages]
    a.write({"a.conf": "a2"})
    b.write({"b.conf": "b2"})
    stage_now(rollout, (a, b))
    real = Stage.publish

    def second_is_full(self, gen):
        if self is stages[1]:
            raise StageError(28, "No space left on device")
        real(self, gen)

    monkeypatch.setattr(Stage, "publish", second_is_full)
    with pytest.raises(StageError):
        rollout.publish("candidate")
    monkeypatch.undo()
    assert [s.published() for s in stages] == shown  # both still on the last-known-good
    rollout.discard_candidate()
    for stage, gen in zip(stages, shown):
        assert os.path.isdir(stage.path(gen))  # nothing a DEST shows is ever removed
