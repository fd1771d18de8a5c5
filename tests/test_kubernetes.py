"""Running in Kubernetes: health, readiness, probe mode, metrics, JSON logs, subPath warning."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import APP, CFGSUP, wait_until
from kubelet import KubeletVolume
from supervisor.digest import snapshot
from supervisor.health import verdicts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError):
        return None, ""


@pytest.fixture
def volume(tmp_path):
    return KubeletVolume(tmp_path / "config", {"app.conf": "v1", "password": "s3cr3t-v1"})


def test_readyz_is_503_while_the_app_restarts_for_a_change(run_cfgsup, volume):
    port = free_port()
    running = run_cfgsup("--health-addr", f"127.0.0.1:{port}", "--stop-timeout", "5",
                         "--watch", volume.path, "--", *APP, "--ignore-term")
    running.wait_line(r"^child ready")
    wait_until(lambda: get(port, "/readyz")[0] == 200, what="ready")
    assert get(port, "/healthz") == (200, "ok\n")
    running.wait_line(r"INFO watching")
    volume.write({"app.conf": "v2", "password": "s3cr3t-v1"})
    running.wait_line(r"stopping pid \d+ with SIGTERM \(restart\)")
    # The app ignores TERM, so the restart is stuck in its stop phase for up to 5 s: not ready.
    # The loop publishes the state at the end of the step that logged the line, so the health
    # thread (which answers in microseconds) can see it a moment after the line.
    status, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(get(port, "/readyz")),
                              timeout=4, what="/readyz 503 while stopping")
    assert "being stopped (restart)" in body
    running.wait_line(r"restarted the app for app.conf", timeout=15)
    wait_until(lambda: get(port, "/readyz")[0] == 200, what="ready again")


def test_ready_delay_and_down_app():
    state = {"unhealthy": None, "child_up": True, "stopping": None, "child_started": 100.0,
             "ready_delay": 5.0}
    assert verdicts(state, 102.0)[1] == (503, "the app is starting")
    assert verdicts(state, 106.0) == ((200, "ok"), (200, "ok"))
    down = dict(state, child_up=False)
    assert verdicts(down, 106.0)[0][0] == 503 and verdicts(down, 106.0)[1][0] == 503


def test_probe_mode_fails_healthz_after_a_change_and_nothing_else(run_cfgsup, volume):
    port = free_port()
    running = run_cfgsup("--health-addr", f"127.0.0.1:{port}", "--on-change", "probe",
                         "--watch", volume.path, "--", *APP)
    running.wait_line(r"^child ready")
    running.wait_line(r"INFO watching")
    wait_until(lambda: get(port, "/healthz")[0] == 200, what="healthy")
    volume.write({"app.conf": "v2", "password": "s3cr3t-v1"})
    status, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(get(port, "/healthz")),
                              what="/healthz 503")
    assert "configuration changed (app.conf)" in body
    assert get(port, "/readyz")[0] == 200  # still serving: only liveness asks for the restart
    assert running.count(r"child got") == 0 and running.count(r"child ready") == 1


def test_metrics(run_cfgsup, volume):
    port = free_port()
    running = run_cfgsup("--health-addr", f"127.0.0.1:{port}", "--on-change", "signal",
                         "--validate", f"sh -c '! grep -q bad {volume.path}/app.conf'",
                         "--watch", volume.path, "--", "sh", "-c",
                         "trap 'echo hup' HUP; sh -c 'sleep 0.01 &'; echo ready; while :; do sleep 0.1; done")
    running.wait_line(r"^ready$")
    running.wait_line(r"INFO watching")
    volume.write({"app.conf": "v2", "password": "s3cr3t-v1"})
    running.wait_line(r"sent SIGHUP")
    good = snapshot(volume.path).digest
    volume.write({"app.conf": "bad", "password": "s3cr3t-v1"})
    running.wait_line(r"validation rejected")
    wait_until(lambda: "cfgsup_orphans_reaped_total 1.0" in get(port, "/metrics")[1], what="orphan counted")
    status, text = get(port, "/metrics")
    assert status == 200
    for line in (
        "cfgsup_changes_detected_total 2.0",
        'cfgsup_actions_total{kind="signal",result="done"} 1.0',
        'cfgsup_actions_total{kind="signal",result="rejected"} 1.0',
        "cfgsup_validation_rejections_total 1.0",
        "cfgsup_child_up 1.0",
        "cfgsup_child_restarts_total 0.0",
    ):
        assert line in text, line
    # The digest the app runs with is the good one: the bad content was rejected.
    assert re.search(rf'^cfgsup_config_info{{.*digest="{good}".*watcher="inotify".*}} 1.0$', text, re.M)
    last_apply = re.search(r"^cfgsup_last_apply_success_timestamp_seconds (\S+)$", text, re.M)
    assert float(last_apply.group(1)) > 1e9
    assert "s3cr3t" not in text


def test_json_logs_carry_fields_and_never_contents(run_cfgsup, volume):
    running = run_cfgsup("--log-format", "json", "-v", "--on-change", "restart",
                         "--watch", volume.path, "--", *APP)
    running.wait_line(r"^child ready")
    running.wait_line(r'"event":"watching"')
    volume.write({"app.conf": "v2", "password": "s3cr3t-v2"})
    running.wait_line(r'"event":"action"')
    records = [json.loads(line) for line in running.lines if line.startswith("{")]
    assert records and all({"time", "level", "pid", "message"} <= set(r) for r in records)
    change = next(r for r in records if r.get("event") == "change")
    assert change["changed"] == ["app.conf", "password"] and change["watch"] == volume.path
    assert len(change["old"]) == 12 and change["old"] != change["new"]
    action = next(r for r in records if r.get("event") == "action")
    assert action["action"] == "restart" and action["result"] == "done" and action["took"] >= 0
    assert "s3cr3t" not in running.text()
    # cfgsup's own pid stays `pid`; the app's is a field of its own, on every line that has one.
    assert {r["pid"] for r in records} == {running.pid}
    apps = [r for r in records if r.get("event") in ("start", "exit", "stop")]
    assert len(apps) >= 4 and all(r["app_pid"] != running.pid for r in apps)


def test_json_signal_action_names_the_signal(run_cfgsup, volume):
    running = run_cfgsup("--log-format", "json", "--on-change", "signal", "--signal", "USR1",
                         "--watch", volume.path, "--", *APP)
    running.wait_line(r'"event":"watching"')
    volume.write({"app.conf": "v2", "password": "s3cr3t-v1"})
    line = running.wait_line(r'^\{.*"event":"action".*\}$')
    record = json.loads(line.string)
    assert record["signal"] == "SIGUSR1" and record["result"] == "done" and record["took"] >= 0


def test_health_port_in_use_is_a_usage_error_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        marker = tmp_path / "started"
        proc = subprocess.run([*CFGSUP, "--health-addr", f"127.0.0.1:{port}", "--", "touch", str(marker)],
                              capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and not marker.exists()
    assert proc.stderr.count("\n") == 1 and "cannot serve health" in proc.stderr


SUBPATH = """
set -e
mount --bind "$SRC" "$DST"
exec "$@"
"""


@pytest.mark.skipif(not os.environ.get("CI") and (os.geteuid() != 0 or not shutil.which("unshare")),
                    reason="needs root and unshare --mount")
def test_subpath_mount_is_warned_about(run_cfgsup, volume, tmp_path):
    # What a subPath mount is: the payload file bind-mounted on its own over a file path.
    target = tmp_path / "app.conf"
    target.write_text("placeholder")
    source = os.path.realpath(os.path.join(volume.path, "app.conf"))
    running = run_cfgsup("--watch", str(target), "--", "sh", "-c", "echo ready", prefix=[
        "unshare", "--mount", "--propagation", "private", "sh", "-c", SUBPATH, "subpath"],
        env={"SRC": source, "DST": str(target)})
    assert running.wait() == 0
    line = running.wait_line(r"WARNING .*app.conf is a mount of its own .*subPath")
    assert "never receive ConfigMap/Secret updates" in line.string
    # The whole volume mounted as a directory is fine: no warning.
    plain = run_cfgsup("--watch", volume.path, "--", "true")
    assert plain.wait() == 0 and plain.count("subPath") == 0
