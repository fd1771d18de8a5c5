"""A stop always wins, end to end: a TERM or INT in the middle of a change ends cfgsup with the
app's status, kills what it started, and nothing is applied or started after it."""
from __future__ import annotations

import http.server
import os
import signal
import socketserver
import threading
import time

import psutil
import pytest

from conftest import APP, CFGSUP, wait_until
from kubelet import KubeletVolume
from test_kubernetes import free_port
from test_pid1 import UNSHARE, needs_pidns

# Takes a second to stop gracefully, then exits 0: a change in flight is still in flight when
# the TERM arrives, and the app's own status (0) is told apart from 143 and --change-exit-code.
SLOW_STOP = ["sh", "-c", 'trap "sleep 1; exit 0" TERM; echo ready; while :; do sleep .2; done']
AFTER_TERM = (r"restarted the app|sent SIG|ran the reload command|called the webhook|"
              r"stopped the app to exit|failing /healthz|did nothing|^ready$|child ready|"
              r"stopping pid .*\((restart|change-exit)\)")


@pytest.fixture
def volume(tmp_path):
    return KubeletVolume(tmp_path / "config", {"app.conf": "v1"})


def alive(pid) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def term_and_check(running, code, signo=signal.SIGTERM, timeout=15):
    """Send the stop; cfgsup exits with `code`, leaves nothing behind, acts on nothing after."""
    left = {p.pid for p in running.descendants()}
    mark = running.mark()
    running.signal(signo)
    assert running.wait(timeout=timeout) == code, running.text()
    wait_until(lambda: not any(alive(pid) for pid in left), what="every process cfgsup started gone")
    after = running.lines[mark:]
    assert not [line for line in after if __import__("re").search(AFTER_TERM, line)], "\n".join(after)
    assert "Traceback" not in running.text()


class Hanging(http.server.BaseHTTPRequestHandler):
    """A webhook that takes the request and never answers (until the test ends)."""
    arrived = threading.Event()
    release = threading.Event()

    def do_POST(self):
        Hanging.arrived.set()
        Hanging.release.wait(30)

    def log_message(self, *args):
        pass


@pytest.fixture
def hanging_server():
    Hanging.arrived.clear()
    Hanging.release.clear()
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Hanging)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/-/reload"
    Hanging.release.set()
    server.shutdown()
    server.server_close()


MODES = {
    "restart": [],
    "signal": ["--on-change", "signal"],
    "exec": ["--on-change", "exec", "--reload-command", "true"],
    "http": ["--on-change", "http", "--webhook", "http://127.0.0.1:9/"],
    "exit": ["--on-change", "exit", "--change-exit-code", "7"],
    "probe": ["--on-change", "probe", "--health-addr", "127.0.0.1:{port}"],
    "none": ["--on-change", "none"],
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_term_while_validating_exits_with_the_apps_status_in_every_mode(run_cfgsup, volume, tmp_path, mode):
    """The issue's reproduction: one TERM during --validate ends cfgsup, in every mode."""
    marker = tmp_path / "validating"
    running = run_cfgsup("--watch", volume.path, "--validate", f"sh -c 'touch {marker}; exec sleep 30'",
                         "--stop-timeout", "20", *(a.format(port=free_port()) for a in MODES[mode]),
                         "--", *SLOW_STOP)
    running.wait_line(r"^ready$")
    running.wait_line(r"INFO watching")
    volume.write({"app.conf": "v2"})
    wait_until(marker.exists, what="the validator running")
    term_and_check(running, 0)
    assert running.count(r"^ready$") == 1


def test_term_while_the_app_is_stopped_for_a_restart(run_cfgsup, volume):
    running = run_cfgsup("--watch", volume.path, "--stop-timeout", "20", "--", *SLOW_STOP)
    running.wait_line(r"^ready$")
    running.wait_line(r"INFO watching")
    volume.write({"app.conf": "v2"})
    running.wait_line(r"stopping pid \d+ with SIGTERM \(restart\)")
    term_and_check(running, 0)


def test_term_as_the_old_app_exits_for_a_restart_starts_no_new_app(run_cfgsup, volume):
    """The old app asks for the stop as it exits: cfgsup sees the TERM and the exit together,
    where it would spawn the new app."""
    app = ["sh", "-c", 'trap "kill -TERM $PPID; exit 0" TERM; echo ready; while :; do sleep .2; done']
    running = run_cfgsup("-v", "--watch", volume.path, "--", *app)
    running.wait_line(r"^ready$")
    running.wait_line(r"INFO watching")
    volume.write({"app.conf": "v2"})
    running.wait_line(r"received SIGTERM")
    assert running.wait(timeout=15) == 0
    assert running.count(r"^ready$") == 1 and running.count("restarted the app") == 0


def test_term_during_the_on_exit_restart_backoff_exits_143_at_once(run_cfgsup):
    running = run_cfgsup("--on-exit", "restart", "--restart-backoff", "30", "--",
                         "sh", "-c", "echo ready; exit 3")
    running.wait_line(r"restarting in 1s")
    mark = running.mark()
    term_and_check(running, 143)
    assert running.count(r"^ready$") == 2 and not any("ready" == line for line in running.lines[mark:])


PIDS = "/sys/fs/cgroup/pids"


@pytest.fixture
def pids_cgroup():
    """A pids cgroup (v1) to run out of processes in, as root: root ignores RLIMIT_NPROC."""
    if not os.access(PIDS, os.W_OK) and not os.environ.get("CI"):
        pytest.skip("needs a writable pids cgroup (root, cgroup v1)")
    path = os.path.join(PIDS, f"cfgsup-test-{os.getpid()}")
    os.mkdir(path)
    yield path
    with open(os.path.join(path, "cgroup.procs")) as fh:
        left = [line.strip() for line in fh if line.strip()]
    for pid in left:  # whatever is still in it goes back to the root cgroup first
        try:
            with open(os.path.join(PIDS, "cgroup.procs"), "w") as fh:
                fh.write(pid)
        except OSError:
            pass
    os.rmdir(path)


def test_term_during_the_spawn_failure_backoff_exits_at_once(run_cfgsup, volume, pids_cgroup):
    """Out of processes: the restart backs off instead of giving up; a TERM then ends cfgsup
    at once."""
    running = run_cfgsup("--watch", volume.path, "--", "sh", "-c", "echo ready; exec sleep 300")
    running.wait_line(r"^ready$")
    running.wait_line(r"INFO watching")
    with open(os.path.join(pids_cgroup, "cgroup.procs"), "w") as fh:
        fh.write(str(running.pid))
    # Room for cfgsup's own threads only: once the old app is gone, forking a new one fails.
    with open(os.path.join(pids_cgroup, "pids.max"), "w") as fh:
        fh.write(str(psutil.Process(running.pid).num_threads()))
    volume.write({"app.conf": "v2"})
    running.wait_line(r"cannot start now: Resource temporarily unavailable; retrying in 0.5s")
    term_and_check(running, 143)


def test_term_while_an_exec_reload_runs_kills_it(run_cfgsup, volume, tmp_path):
    marker = tmp_path / "reloading"
    running = run_cfgsup("--watch", volume.path, "--on-change", "exec", "--reload-command",
                         f"sh -c 'touch {marker}; exec sleep 30'", "--stop-timeout", "20", "--", *SLOW_STOP)
    running.wait_line(r"^ready$")
    running.wait_line(r"INFO watching")
    volume.write({"app.conf": "v2"})
    wait_until(marker.exists, what="the reload command running")
    term_and_check(running, 0)


def test_term_while_a_webhook_hangs_ignores_it(run_cfgsup, volume, hanging_server):
    running = run_cfgsup("--watch", volume.path, "--on-change", "http", "--webhook", hanging_server,
                         "--webhook-timeout", "20", "--stop-timeout", "20", "--", *SLOW_STOP)
    running.wait_line(r"^ready$")
    running.wait_line(r"INFO watching")
    volume.write({"app.conf": "v2"})
    assert Hanging.arrived.wait(10)
    term_and_check(running, 0)


def test_term_during_the_exit_mode_stop_exits_with_the_apps_status(run_cfgsup, volume):
    running = run_cfgsup("--watch", volume.path, "--on-change", "exit", "--change-exit-code", "7",
                         "--stop-timeout", "20", "--", *SLOW_STOP)
    running.wait_line(r"^ready$")
    running.wait_line(r"INFO watching")
    volume.write({"app.conf": "v2"})
    running.wait_line(r"stopping pid \d+ with SIGTERM \(change-exit\)")
    term_and_check(running, 0)


def test_int_while_validating_in_signal_mode_sends_no_hup(run_cfgsup, volume, tmp_path):
    marker = tmp_path / "validating"
    running = run_cfgsup("--watch", volume.path, "--on-change", "signal", "--validate",
                         f"sh -c 'touch {marker}; exec sleep 30'", "--", *APP)
    running.wait_line(r"^child ready")
    running.wait_line(r"INFO watching")
    volume.write({"app.conf": "v2"})
    wait_until(marker.exists, what="the validator running")
    term_and_check(running, 0, signo=signal.SIGINT)
    assert running.count(r"child got SIGHUP") == 0 and running.count(r"child got SIGINT") == 1


# ---- grandchildren and early signals, as PID 1 ----------------------------------------------------
def inner_pid(running):
    """cfgsup's pid (outside the namespace) under `unshare --fork`, once it runs Python: before
    its exec, unshare's child blocks TERM for a moment of its own."""
    def find():
        for proc in running.descendants():
            try:
                if proc.cmdline()[:len(CFGSUP)] == CFGSUP:
                    return proc.pid
            except psutil.Error:
                pass
        return None
    return wait_until(find, what="cfgsup in the namespace", interval=0.0005)


@needs_pidns
def test_grandchildren_get_the_stop_signal_once_the_app_is_gone(run_cfgsup):
    running = run_cfgsup("--stop-timeout", "30", "--", *APP, "--grandchild", prefix=UNSHARE)
    running.wait_line(r"^child ready")
    running.wait_line(r"^grandchild ready")
    os.kill(inner_pid(running), signal.SIGTERM)
    running.wait_line(r"^child got SIGTERM$")
    running.wait_line(r"^grandchild got SIGTERM$")
    assert running.wait(timeout=20) == 0
    assert "did not stop within" not in running.text()


@needs_pidns
def test_a_shell_with_background_jobs_stops_without_waiting_for_sigkill(run_cfgsup):
    running = run_cfgsup("--stop-timeout", "30", "--", "sh", "-c", "echo ready; sleep 1000 & sleep 1000",
                         prefix=UNSHARE)
    running.wait_line(r"^ready$")
    pid = inner_pid(running)
    wait_until(lambda: len(psutil.Process(pid).children(recursive=True)) == 3, what="sh and two sleeps")
    os.kill(pid, signal.SIGTERM)
    assert running.wait(timeout=20) == 143
    assert "did not stop within" not in running.text()


def _blocked(pid) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1], 16) for line in fh if line.startswith("SigBlk:"))


@needs_pidns
def test_a_term_that_arrives_while_cfgsup_still_starts_is_not_lost(run_cfgsup):
    """As PID 1 the kernel drops a signal whose action is the default; cfgsup blocks them as its
    first act, so a TERM during its imports waits for the loop instead."""
    running = run_cfgsup("--", "sleep", "300", prefix=UNSHARE)
    pid = inner_pid(running)
    wait_until(lambda: _blocked(pid) & (1 << (signal.SIGTERM - 1)), interval=0.0005,
               what="the entry point blocking signals")
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    assert running.wait(timeout=15) == 143
    assert time.monotonic() - started < 15


def test_what_a_reload_command_left_in_its_group_goes_with_cfgsup(run_cfgsup, volume, tmp_path):
    marker = tmp_path / "left"
    reload = f"sh -c 'sleep 300 & echo $! > {marker}; exit 0'"
    running = run_cfgsup("--watch", volume.path, "--on-change", "exec", "--reload-command", reload,
                         "--", *SLOW_STOP)
    running.wait_line(r"^ready$")
    running.wait_line(r"INFO watching")
    volume.write({"app.conf": "v2"})
    running.wait_line(r"ran the reload command for app.conf")
    left = int(wait_until(lambda: marker.exists() and marker.read_text().strip(), what="the leftover's pid"))
    assert alive(left)
    running.signal(signal.SIGTERM)
    assert running.wait(timeout=15) == 0
    wait_until(lambda: not alive(left), what="the reload command's leftover gone")
