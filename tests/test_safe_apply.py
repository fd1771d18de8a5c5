"""Safe apply end to end (--stage): the app only ever runs on validated content, and content the
app fails on is rolled back, also across a restart of cfgsup. Real cfgsup, real app, the kubelet
writer for SRC."""
from __future__ import annotations

import json
import os
import re
import signal
import sys

import pytest

from conftest import HERE
from kubelet import KubeletVolume
from test_kubernetes import free_port, get

APP = [sys.executable, os.path.join(HERE, "cfgapp.py")]
REJECT_INVALID = "sh -c '! grep -q invalid \"$CFGSUP_CANDIDATE/app.conf\"'"
VERIFY_HEALTHY = "sh -c '! grep -q unhealthy \"$CFGSUP_STAGE/app.conf\"'"


@pytest.fixture
def src(tmp_path):
    return KubeletVolume(tmp_path / "src", {"app.conf": "v1"})


@pytest.fixture
def dest(tmp_path):
    return str(tmp_path / "dest")


def view(dest) -> dict:
    """Everything under DEST as the app sees it, and the layout itself (cfgsup's state aside)."""
    seen = {}
    for dirpath, dirs, files in os.walk(dest):
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, dest)
            if rel.startswith("..cfgsup-state"):
                continue
            if os.path.islink(full):
                seen[rel] = ("link", os.readlink(full))
            elif os.path.isfile(full):
                with open(full, "rb") as fh:
                    seen[rel] = ("file", fh.read(), oct(os.stat(full).st_mode))
            else:
                seen[rel] = ("dir", oct(os.stat(full).st_mode))
    return seen


def serving(running, content, start=0):
    return int(running.wait_line(rf"^(serving|reloaded) {re.escape(content)} pid=(\d+)$", start=start).group(2))


def staged(run_cfgsup, src, dest, *args, app=()):
    running = run_cfgsup("--stage", f"{src.path}:{dest}", "--min-uptime", "1", *args,
                         "--", *(app or (*APP, dest)))
    return running


def test_the_app_reads_a_kubelet_layout_that_cfgsup_published(run_cfgsup, src, dest):
    running = staged(run_cfgsup, src, dest)
    serving(running, "v1")
    assert os.path.islink(os.path.join(dest, "..data"))
    assert os.readlink(os.path.join(dest, "app.conf")) == "..data/app.conf"
    assert os.readlink(os.path.join(dest, "..data")).startswith("..20")


def test_a_validation_failure_leaves_dest_as_it_was_and_the_app_untouched(run_cfgsup, src, dest):
    running = staged(run_cfgsup, src, dest, "--on-change", "signal", "--validate", REJECT_INVALID)
    pid = serving(running, "v1")
    running.wait_line(r"INFO watching")
    running.wait_line(r"passed probation")
    before = view(dest)
    src.write({"app.conf": "invalid v2"})
    running.wait_line(r"validation rejected the change, nothing applied")
    assert view(dest) == before
    assert running.count(r"^reloaded") == 0 and running.count(r"^serving") == 1
    assert os.path.exists(f"/proc/{pid}")


def test_content_that_makes_the_app_exit_is_rolled_back(run_cfgsup, src, dest):
    port = free_port()
    running = staged(run_cfgsup, src, dest, "--health-addr", f"127.0.0.1:{port}")
    serving(running, "v1")
    running.wait_line(r"passed probation")
    mark = running.mark()
    src.write({"app.conf": "crash v2"})
    line = running.wait_line(r"ERROR rolled back (\w+) -> (\w+): the app exited with code 3 during probation", start=mark)
    assert line.group(1) != line.group(2)
    serving(running, "v1", start=mark)  # back on the last-known-good, and cfgsup runs on
    with open(os.path.join(dest, "app.conf")) as fh:
        assert fh.read() == "v1"
    status, metrics = get(port, "/metrics")
    assert re.search(r"^cfgsup_rollbacks_total 1\.0$", metrics, re.M)
    assert re.search(r"^cfgsup_config_held 1\.0$", metrics, re.M)
    assert running.proc.poll() is None


def test_a_failing_verify_rolls_back(run_cfgsup, src, dest):
    running = staged(run_cfgsup, src, dest, "--on-change", "signal", "--verify", VERIFY_HEALTHY,
                     "--verify-timeout", "2")
    serving(running, "v1")
    running.wait_line(r"passed probation")
    mark = running.mark()
    src.write({"app.conf": "unhealthy v2"})
    serving(running, "unhealthy v2", start=mark)  # reloaded on it by HUP...
    running.wait_line(r"ERROR rolled back \w+ -> \w+: --verify did not succeed within 2s", start=mark)
    serving(running, "v1", start=mark)  # ...and back on the old one by HUP


def test_good_content_after_a_bad_one_is_applied(run_cfgsup, src, dest):
    running = staged(run_cfgsup, src, dest, "--validate", REJECT_INVALID)
    serving(running, "v1")
    running.wait_line(r"passed probation")
    src.write({"app.conf": "invalid v2"})
    running.wait_line(r"validation rejected")
    mark = running.mark()
    src.write({"app.conf": "v3"})
    serving(running, "v3", start=mark)
    running.wait_line(r"passed probation", start=mark)


def test_a_bad_configuration_is_remembered_across_a_kill(run_cfgsup, src, dest):
    running = staged(run_cfgsup, src, dest)
    serving(running, "v1")
    running.wait_line(r"passed probation")
    src.write({"app.conf": "crash v2"})
    running.wait_line(r"rolled back")
    running.kill_all()  # SIGKILL cfgsup and the app: the emptyDir outlives them
    again = staged(run_cfgsup, src, dest)
    again.wait_line(r"WARNING the watched configuration is held back .*: starting on the last-known-good")
    serving(again, "v1")
    assert again.count("crashing") == 0


def test_first_start_ever_with_a_rejected_configuration_exits_78(run_cfgsup, src, dest):
    src.write({"app.conf": "invalid v0"})
    running = staged(run_cfgsup, src, dest, "--validate", "sh -c 'echo app.conf is invalid; exit 1'")
    assert running.wait() == 78
    assert "app.conf is invalid" in running.text() and "EX_CONFIG" in running.text()
    assert running.count(r"^serving") == 0


def test_new_content_at_start_is_validated_then_started_on_probation(run_cfgsup, src, dest):
    running = staged(run_cfgsup, src, dest)
    serving(running, "v1")
    running.wait_line(r"passed probation")
    running.signal(signal.SIGTERM)
    assert running.wait() == 0
    src.write({"app.conf": "v2"})  # changed while the container was down
    again = staged(run_cfgsup, src, dest, "--validate", REJECT_INVALID)
    serving(again, "v2")
    again.wait_line(r"configuration \w+ passed probation")


def test_exit_mode_proves_the_new_configuration_after_the_restart_it_causes(run_cfgsup, src, dest):
    running = staged(run_cfgsup, src, dest, "--on-change", "exit")
    serving(running, "v1")
    running.wait_line(r"passed probation")
    src.write({"app.conf": "crash v2"})
    assert running.wait() == 0  # exit mode: the kubelet starts the container again
    second = staged(run_cfgsup, src, dest, "--on-change", "exit")
    second.wait_line(r"crashing on crash v2")  # on probation, and it fails: rolled back, exit
    second.wait_line(r"rolled back")
    second.wait()
    third = staged(run_cfgsup, src, dest, "--on-change", "exit")
    serving(third, "v1")
    third.wait_line(r"held back")


def test_a_change_during_probation_waits_for_its_end(run_cfgsup, src, dest):
    running = staged(run_cfgsup, src, dest, "--on-change", "signal")
    serving(running, "v1")
    running.wait_line(r"passed probation")
    mark = running.mark()
    src.write({"app.conf": "v2"})
    serving(running, "v2", start=mark)
    src.write({"app.conf": "v3"})  # arrives while v2 is on probation
    first_proven = running.wait_line(r"configuration (\w+) passed probation", start=mark).group(1)
    serving(running, "v3", start=mark)
    lines = running.lines[mark:]
    assert lines.index(next(l for l in lines if "passed probation" in l)) < \
        lines.index(next(l for l in lines if l.startswith("reloaded v3")))
    assert first_proven


def test_term_during_the_splay_exits_with_no_action(run_cfgsup, src, dest):
    running = staged(run_cfgsup, src, dest, "--on-change", "signal", "--splay", "20")
    serving(running, "v1")
    running.wait_line(r"passed probation")
    running.wait_line(r"INFO watching")
    src.write({"app.conf": "v2"})
    running.wait_line(r"waiting [\d.]+s \(--splay\) before acting on a change")
    running.signal(signal.SIGTERM)
    assert running.wait() == 0
    assert running.count(r"^reloaded") == 0 and running.count("sent SIGHUP") == 0
    with open(os.path.join(dest, "app.conf")) as fh:
        assert fh.read() == "v1"


def test_dest_that_is_not_cfgsups_is_refused(run_cfgsup, src, tmp_path):
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "precious.conf").write_text("mine")
    running = run_cfgsup("--stage", f"{src.path}:{dest}", "--", "true")
    assert running.wait() == 2
    assert "is not empty and was not staged by cfgsup" in running.text()
    assert (dest / "precious.conf").read_text() == "mine"


def test_modes_and_owners_are_kept(run_cfgsup, tmp_path, dest):
    src = KubeletVolume(tmp_path / "modes", {"app.conf": "v1", "secret": "s"}, mode=0o640)
    if os.geteuid() == 0:
        for name in os.listdir(os.path.join(src.path, os.readlink(os.path.join(src.path, "..data")))):
            os.chown(os.path.join(src.path, "..data", name), 0, 1234)
    running = staged(run_cfgsup, src, dest)
    serving(running, "v1")
    st = os.stat(os.path.join(dest, "secret"))
    assert oct(st.st_mode & 0o777) == oct(0o640)
    if os.geteuid() == 0:
        assert st.st_gid == 1234
    state = json.load(open(os.path.join(dest, "..cfgsup-state")))
    assert state["version"] == 1
