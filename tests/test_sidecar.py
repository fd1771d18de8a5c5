"""Sidecar mode end to end, in a pid namespace of its own that stands for a pod sharing its
process namespace: `sh` is the pod's PID 1, the app and cfgsup are both its children."""
from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import signal

import psutil
import pytest

from asuser import as_user
from conftest import APP, CFGSUP, wait_until
from kubelet import KubeletVolume
from test_kubernetes import free_port, get
from test_pid1 import UNSHARE, needs_pidns

pytestmark = needs_pidns


@pytest.fixture
def volume(tmp_path):
    return KubeletVolume(tmp_path / "config", {"app.conf": "v1"})


def pod(run_cfgsup, app, *args, keep_restarting=False):
    """`sh` as PID 1 of a new pid namespace, running the app (named `targetapp`) and cfgsup as
    siblings; with keep_restarting, sh starts the app again whenever it exits (the kubelet)."""
    named = f"bash -c {shlex.quote('exec -a targetapp ' + shlex.join(app))}"
    start = f"while :; do {named}; done &" if keep_restarting else f"{named} &"
    script = f"{start} {shlex.join(CFGSUP)} {shlex.join(args)}; echo cfgsup-exit=$?"
    return run_cfgsup(prefix=[*UNSHARE, "sh", "-c", script])


def sidecar_running(running):
    return running.wait_line(r"INFO watching")


def target_pid(running, other_than=None) -> int:
    """The app's pid as the host sees it (it prints the one of its own pid namespace)."""
    def look():
        for proc in running.descendants():
            try:
                if proc.cmdline()[:1] == ["targetapp"] and proc.pid != other_than:
                    return proc.pid
            except psutil.Error:
                pass
        return None
    return wait_until(look, what="the target app")


def test_signal_mode_signals_the_oldest_target_and_leaves_it_running(run_cfgsup, volume):
    running = pod(run_cfgsup, APP, "-v", "--watch", volume.path, "--on-change", "signal",
                               "--signal", "USR1", "--target", "targetapp")
    pid = int(running.wait_line(r"^child ready pid=(\d+)").group(1))
    sidecar_running(running)
    volume.write({"app.conf": "v2"})
    running.wait_line(r"^child got SIGUSR1$")
    running.wait_line(r"sent SIGUSR1 for app.conf")
    assert running.count(r"^child ready") == 1  # reloaded in place
    # A TERM to the sidecar ends the sidecar only, with 0; the app is not cfgsup's.
    sidecar = next(p for p in running.descendants() if p.cmdline()[:len(CFGSUP)] == CFGSUP)
    sidecar.send_signal(signal.SIGTERM)
    running.wait_line(r"^cfgsup-exit=0$")
    assert running.count(r"child got SIGTERM") == 0 and pid


def test_restart_mode_stops_the_target_and_its_restarted_container_is_found_again(run_cfgsup, volume):
    running = pod(run_cfgsup, APP, "--watch", volume.path, "--on-change", "restart", "--target", "targetapp",
                  keep_restarting=True)
    first = int(running.wait_line(r"^child ready pid=(\d+)").group(1))
    sidecar_running(running)
    mark = running.mark()
    volume.write({"app.conf": "v2"})
    running.wait_line(r"^child got SIGTERM$", start=mark)
    running.wait_line(r"stopped targetapp for the kubelet to restart its container", start=mark)
    second = int(running.wait_line(r"^child ready pid=(\d+)", start=mark).group(1))
    assert second != first
    mark = running.mark()
    volume.write({"app.conf": "v3"})  # looked up again: the new process gets it
    running.wait_line(r"^child got SIGTERM$", start=mark)
    running.wait_line(r"stopped targetapp", start=mark)


def test_a_target_that_ignores_the_stop_signal_is_killed_after_the_timeout(run_cfgsup, volume):
    running = pod(run_cfgsup, [*APP, "--ignore-term"], "--watch", volume.path, "--target", "targetapp",
                  "--stop-timeout", "1")
    running.wait_line(r"^child ready pid=(\d+)")
    pid = target_pid(running)
    sidecar_running(running)
    volume.write({"app.conf": "v2"})
    running.wait_line(r"WARNING targetapp \(pid \d+\) did not stop within 1s: SIGKILL")
    running.wait_line(r"stopped targetapp")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_no_target_fails_the_action_and_the_next_change_tries_again(run_cfgsup, volume):
    running = pod(run_cfgsup, ["sleep", "300"], "--watch", volume.path, "--on-change", "signal",
                  "--target", "nosuchapp")
    sidecar_running(running)
    volume.write({"app.conf": "v2"})
    running.wait_line(r"ERROR sent SIGHUP for app.conf .*\(failed: no process named nosuchapp to send SIGHUP to\)")
    volume.write({"app.conf": "v3"})
    wait_until(lambda: running.count(r"no process named nosuchapp") == 2, what="a second try")
    assert "Traceback" not in running.text()


def test_probe_mode_with_a_target_recovers_once_the_container_was_restarted(run_cfgsup, volume):
    port = free_port()
    running = pod(run_cfgsup, APP, "--watch", volume.path, "--on-change", "probe", "--target", "targetapp",
                  "--health-addr", f"127.0.0.1:{port}", keep_restarting=True)
    running.wait_line(r"^child ready pid=(\d+)")
    pid = target_pid(running)
    sidecar_running(running)
    assert wait_until(lambda: get(port, "/healthz")[0] == 200, what="healthy") and get(port, "/readyz")[0] == 200
    volume.write({"app.conf": "v2"})
    status, body = wait_until(lambda: (a := get(port, "/healthz"))[0] == 503 and a, what="/healthz 503")
    assert "app.conf" in body
    assert get(port, "/healthz")[0] == 503  # stays so: the container was not restarted yet
    os.kill(pid, signal.SIGKILL)  # the kubelet, after the livenessProbe failed
    running.wait_line(r"saw the app's container restarted for app.conf")
    assert get(port, "/healthz")[0] == 200


def test_probe_mode_without_a_target_holds_for_probe_hold(run_cfgsup, volume):
    port = free_port()
    running = pod(run_cfgsup, ["sleep", "300"], "--watch", volume.path, "--on-change", "probe",
                  "--probe-hold", "1", "--health-addr", f"127.0.0.1:{port}")
    sidecar_running(running)
    volume.write({"app.conf": "v2"})
    wait_until(lambda: get(port, "/healthz")[0] == 503, what="/healthz 503")
    running.wait_line(r"held /healthz at 503 for app.conf")
    assert get(port, "/healthz")[0] == 200


def test_a_target_of_another_user_is_one_clear_line(run_cfgsup):
    top = tempfile.mkdtemp(prefix="cfgsup-sidecar-")  # pytest's tmp_path is 0700 all the way
    os.chmod(top, 0o755)
    volume = KubeletVolume(os.path.join(top, "config"), {"app.conf": "v1"})
    cfgsup_as_nobody = [*as_user(65534, 65534), *CFGSUP]
    named = f"bash -c {shlex.quote('exec -a targetapp sleep 300')}"
    script = f"{named} & {shlex.join(cfgsup_as_nobody)} --watch {volume.path} --on-change signal --target targetapp"
    running = run_cfgsup(prefix=[*UNSHARE, "sh", "-c", script + "; echo cfgsup-exit=$?"])
    running.wait_line(r"INFO watching")
    volume.write({"app.conf": "v2"})
    try:
        running.wait_line(r"not permitted to signal targetapp \(pid \d+\): cfgsup needs the same uid or CAP_KILL")
        assert "Traceback" not in running.text()
    finally:
        shutil.rmtree(top, ignore_errors=True)
