"""Config watching end to end: real cfgsup, real app, kubelet-style swaps and plain edits."""
from __future__ import annotations

import http.server
import os
import random
import shutil
import signal
import subprocess
import threading

import pytest

from conftest import APP, wait_until
from kubelet import KubeletVolume
from supervisor.digest import short, snapshot


@pytest.fixture
def volume(tmp_path):
    return KubeletVolume(tmp_path / "config", {"app.conf": "v1", "nested/deep.conf": "d1"})


def ready(running, start=0):
    match = running.wait_line(r"^child ready pid=(\d+) changed=(.*)$", start=start)
    return int(match.group(1)), match.group(2)


def watching(run_cfgsup, *args):
    """Start `cfgsup ARGS -- app`; return it once the app is up and the watches are in place."""
    running = run_cfgsup(*args, "--", *APP)
    ready(running)
    running.wait_line(r"INFO watching")
    return running


WATCH_MODES = [pytest.param((), id="inotify"), pytest.param(("--poll", "0.1"), id="poll")]


@pytest.mark.parametrize("mode", WATCH_MODES)
def test_restart_mode_restarts_with_changed_names(run_cfgsup, volume, mode):
    running = run_cfgsup("-v", *mode, "--watch", volume.path, "--", *APP)
    first, _ = ready(running)
    running.wait_line(r"INFO watching")
    mark = running.mark()
    volume.write({"app.conf": "v2", "nested/deep.conf": "d1"})
    second, changed = ready(running, start=mark)
    assert second != first and changed == "app.conf"
    running.wait_line(r"restarted the app for app.conf in [\d.]+ ms")
    assert running.count(r"^child got SIGTERM$") == 1


@pytest.mark.parametrize("mode", WATCH_MODES)
def test_signal_mode_keeps_the_pid(run_cfgsup, volume, mode):
    running = run_cfgsup("-v", *mode, "--watch", volume.path, "--on-change", "signal",
                         "--signal", "USR2", "--", *APP)
    pid, _ = ready(running)
    running.wait_line(r"INFO watching")
    volume.write({"app.conf": "v2", "nested/deep.conf": "d2"})
    running.wait_line(r"^child got SIGUSR2$")
    line = running.wait_line(r"change in .*: app.conf, nested (\w+) -> (\w+)")
    assert line.group(2) == short(snapshot(volume.path).digest)
    assert running.count(r"child ready") == 1
    assert psutil_alive(pid)


def psutil_alive(pid):
    import psutil

    return psutil.pid_exists(pid)


def test_touch_chmod_and_identical_swaps_do_nothing(run_cfgsup, volume):
    running = watching(run_cfgsup, "-v", "--watch", volume.path, "--on-change", "signal")
    data = os.path.join(volume.path, os.readlink(os.path.join(volume.path, "..data")))
    os.utime(os.path.join(data, "app.conf"))
    os.chmod(os.path.join(data, "app.conf"), 0o600)
    # A new payload dir with identical content, swapped in the kubelet's way.
    other = KubeletVolume(volume.path)
    other.current = lambda: {}  # force a write of the same payload
    other.write({"app.conf": "v1", "nested/deep.conf": "d1"})
    running.wait_line(r"event without content change")
    volume.write({"app.conf": "v3", "nested/deep.conf": "d1"})  # a real change as a marker
    running.wait_line(r"^child got SIGHUP$")
    running.wait_line(r"sent SIGHUP")  # logged after the signal went out
    assert running.count(r"^child got SIGHUP$") == 1
    assert running.count(r"INFO change in") == 1


def test_exec_mode_runs_the_reload_command(run_cfgsup, volume, tmp_path):
    out = tmp_path / "reloads"
    running = watching(run_cfgsup, "--watch", volume.path, "--on-change", "exec", "--reload-command",
                         f"sh -c 'echo \"$CFGSUP_CHANGED\" >> {out}'")
    volume.write({"app.conf": "v2", "nested/deep.conf": "d1"})
    running.wait_line(r"ran the reload command for app.conf")
    assert out.read_text() == "app.conf\n"


def test_exec_mode_failure_is_logged_and_app_keeps_running(run_cfgsup, volume):
    running = run_cfgsup("--watch", volume.path, "--on-change", "exec", "--reload-command",
                         "sh -c 'echo reload broke >&2; exit 3'", "--", *APP)
    pid, _ = ready(running)
    running.wait_line(r"INFO watching")
    volume.write({"app.conf": "v2", "nested/deep.conf": "d1"})
    line = running.wait_line(r"ERROR ran the reload command .*\(failed: exited with code 3; output: reload broke\)")
    assert line and psutil_alive(pid) and running.count("child ready") == 1


class Recorder(http.server.BaseHTTPRequestHandler):
    answers: list = []
    seen: list = []

    def do_POST(self):
        self.seen.append((self.command, self.path, self.headers.get("X-Cfgsup-Changed")))
        code = self.answers.pop(0) if self.answers else 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook_server():
    Recorder.answers, Recorder.seen = [500], []  # fail once: cfgsup must retry
    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_http_mode_calls_the_webhook_with_retries(run_cfgsup, volume, webhook_server):
    url = f"http://127.0.0.1:{webhook_server.server_address[1]}/-/reload"
    running = watching(run_cfgsup, "--watch", volume.path, "--on-change", "http", "--webhook", url)
    volume.write({"app.conf": "v2", "nested/deep.conf": "d1"})
    running.wait_line(r"called the webhook\(s\) for app.conf")
    assert Recorder.seen == [("POST", "/-/reload", "app.conf")] * 2


def test_exit_mode_stops_the_app_and_exits_with_the_code(run_cfgsup, volume):
    running = watching(run_cfgsup, "--watch", volume.path, "--on-change", "exit", "--change-exit-code", "3")
    volume.write({"app.conf": "v2", "nested/deep.conf": "d1"})
    assert running.wait() == 3
    assert running.count(r"^child got SIGTERM$") == 1


def test_none_mode_only_logs(run_cfgsup, volume):
    running = watching(run_cfgsup, "--watch", volume.path, "--on-change", "none")
    volume.write({"app.conf": "v2", "nested/deep.conf": "d1"})
    running.wait_line(r"did nothing \(--on-change none\)")
    assert running.count(r"child got") == 0


def test_validate_rejects_bad_content_and_tries_the_next(run_cfgsup, volume):
    check = f"sh -c 'grep -q good {volume.path}/app.conf || {{ echo \"app.conf: no good\"; exit 1; }}'"
    running = watching(run_cfgsup, "--watch", volume.path, "--on-change", "signal", "--validate", check)
    volume.write({"app.conf": "bad", "nested/deep.conf": "d1"})
    running.wait_line(r"validation rejected the change, nothing applied: exited with code 1; output: app.conf: no good")
    volume.write({"app.conf": "good", "nested/deep.conf": "d1"})
    running.wait_line(r"^child got SIGHUP$")
    assert running.count(r"child got SIGHUP") == 1


def test_plain_directory_edits_are_debounced_into_one_action(run_cfgsup, tmp_path):
    conf = tmp_path / "plain"
    conf.mkdir()
    (conf / "a.conf").write_text("one")
    running = watching(run_cfgsup, "--watch", str(conf), "--on-change", "signal", "--debounce", "1")
    # (A one-second debounce: a loaded CI machine can stall this test between two writes.)
    with open(conf / "a.conf", "w") as fh:  # an edit in several writes
        for part in ("line1\n", "line2\n", "line3\n"):
            fh.write(part)
            fh.flush()
    (conf / "sub").mkdir()
    (conf / "sub" / "b.conf").write_text("new nested file")
    running.wait_line(r"^child got SIGHUP$")
    line = running.wait_line(r"change in .*: a.conf, sub ")
    assert line and running.count(r"INFO change in") == 1


def test_single_file_watch_survives_kubelet_swaps(run_cfgsup, volume):
    path = os.path.join(volume.path, "app.conf")
    running = watching(run_cfgsup, "--watch", path, "--on-change", "signal")
    volume.write({"app.conf": "v1", "nested/deep.conf": "other"})  # not our file
    volume.write({"app.conf": "v2", "nested/deep.conf": "other"})
    running.wait_line(r"^child got SIGHUP$")
    volume.write({"app.conf": "v3", "nested/deep.conf": "other"})  # the watch must still be alive
    wait_until(lambda: running.count(r"^child got SIGHUP$") == 2, what="second HUP")
    wait_until(lambda: running.count(r"sent SIGHUP") == 2, what="second HUP logged")
    assert running.count(r"INFO change in") == 2


def test_allow_missing_acts_when_the_path_appears(run_cfgsup, tmp_path):
    later = tmp_path / "later"
    running = run_cfgsup("--watch", str(later), "--allow-missing", "--on-change", "signal", "--", *APP)
    ready(running)
    running.wait_line(r"watching .*\(missing\)")
    KubeletVolume(later, {"k": "v"})
    running.wait_line(r"^child got SIGHUP$")


def test_deleted_and_recreated_directory(run_cfgsup, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a").write_text("1")
    running = watching(run_cfgsup, "--watch", str(conf), "--on-change", "signal", "--debounce", "0.05")
    shutil.rmtree(conf)
    running.wait_line(r"was deleted or moved away; waiting for it to come back")
    conf.mkdir()
    (conf / "a").write_text("2")
    running.wait_line(r"^child got SIGHUP$")
    mark = running.mark()
    (conf / "a").write_text("3")  # and it is watched again
    running.wait_line(r"^child got SIGHUP$", start=mark)


def test_burst_of_swaps_ends_on_the_final_content(run_cfgsup, volume):
    contents = [f"c{n}" for n in range(6)]
    running = watching(run_cfgsup, "--watch", volume.path, "--on-change", "signal")
    rnd = random.Random(7)
    for _ in range(1000):  # thousands of swaps, as fast as they can be written
        volume.write({"app.conf": rnd.choice(contents), "nested/deep.conf": "d1"})
    volume.write({"app.conf": "final", "nested/deep.conf": "d1"})
    final = short(snapshot(volume.path).digest)
    running.wait_line(rf"change in .* -> {final}")
    running.wait_line(r"sent SIGHUP", start=0)
    wait_until(lambda: running.count(r"sent SIGHUP") == running.count(r"INFO change in"),
               what="every change acted on")
    assert running.count(r"INFO change in") <= volume.swaps  # never more actions than contents


def test_nested_key_added_and_removed(run_cfgsup, volume):
    running = watching(run_cfgsup, "--watch", volume.path, "--on-change", "signal")
    volume.write({"app.conf": "v1", "nested/deep.conf": "d1", "extra/x/y.conf": "new"})
    running.wait_line(r"change in .*: extra ")
    volume.write({"app.conf": "v1", "extra/x/y.conf": "new"})
    running.wait_line(r"change in .*: nested ")
    wait_until(lambda: running.count(r"^child got SIGHUP$") == 2, what="two reloads")


def test_nested_directory_of_a_kubelet_volume(run_cfgsup, volume):
    # `nested` is a visible link `nested -> ..data/nested`: the swap happens in its parent.
    path = os.path.join(volume.path, "nested")
    running = watching(run_cfgsup, "--watch", path, "--on-change", "signal")
    volume.write({"app.conf": "v9", "nested/deep.conf": "d1"})  # outside the watched dir
    volume.write({"app.conf": "v9", "nested/deep.conf": "d2"})
    running.wait_line(r"^child got SIGHUP$")
    line = running.wait_line(r"change in .*: nested ")
    assert line and running.count(r"INFO change in") == 1


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _blocked(pid, tid):
    """The thread's blocked-signal mask, or None when the thread exited before it could be read."""
    try:
        with open(f"/proc/{pid}/task/{tid}/status") as fh:
            for line in fh:
                if line.startswith("SigBlk:"):
                    return int(line.split()[1], 16)
    except (FileNotFoundError, ProcessLookupError):
        return None  # listdir saw it, but it is gone now (a finished webhook thread, say)
    raise AssertionError("no SigBlk")


def test_only_the_main_thread_takes_signals(run_cfgsup, volume, webhook_server):
    """A signal the kernel hands to a helper thread would never wake the main thread's wait."""
    url = f"http://127.0.0.1:{webhook_server.server_address[1]}/-/reload"
    running = watching(run_cfgsup, "--watch", volume.path, "--health-addr", f"127.0.0.1:{free_port()}",
                       "--on-change", "http", "--webhook", url)
    volume.write({"app.conf": "v2", "nested/deep.conf": "d1"})
    running.wait_line(r"called the webhook")
    tids = [int(t) for t in os.listdir(f"/proc/{running.pid}/task") if int(t) != running.pid]
    masks = {tid: mask for tid in tids if (mask := _blocked(running.pid, tid)) is not None}
    assert len(masks) >= 1  # the health server's thread at least (inotify needs none of its own)
    for tid, mask in masks.items():
        for signo in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGCONT):
            assert mask & (1 << (signo - 1)), f"thread {tid} does not block {signo}"


@pytest.mark.parametrize("attempt", range(5))
def test_term_burst_with_watches_active_stops_cleanly(run_cfgsup, volume, attempt):
    """What `timeout` does: TERM to the process and its group, then CONT to both, at once."""
    running = watching(run_cfgsup, "--watch", volume.path)
    for signo in (signal.SIGTERM, signal.SIGTERM, signal.SIGCONT, signal.SIGCONT):
        os.kill(running.pid, signo)
    # The app exits 0 on the first TERM; the second, forwarded too, may catch it mid-exit (143).
    # What matters: cfgsup does not sit on a signal one of its threads swallowed.
    try:
        code = running.wait(timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError("cfgsup did not stop:\n" + running.text()) from None
    assert code in (0, 143)


@pytest.mark.skipif(not shutil.which("prlimit"), reason="needs prlimit (util-linux)")
def test_running_out_of_fds_while_hashing_keeps_the_app(run_cfgsup, volume):
    # Seven fds: 0-2, the wake-up pipe and the inotify fd fit, but then hashing the directory
    # cannot open it and a file at once. (The fallback to polling when inotify cannot be set up
    # is in test_watch_paths.py: no fd limit lets cfgsup hash but not get its one inotify fd.)
    running = run_cfgsup("--watch", volume.path, "--", *APP, prefix=["prlimit", "--nofile=7"])
    pid, _ = ready(running)
    running.wait_line(r"WARNING cannot hash .* now \(Too many open files\); retrying every 1s")
    assert psutil_alive(pid) and "Traceback" not in running.text()
    running.signal(signal.SIGTERM)
    assert running.wait() == 0


@pytest.mark.skipif(not shutil.which("prlimit"), reason="needs prlimit (util-linux)")
def test_watched_paths_unreadable_at_start_is_one_line_and_nothing_started(run_cfgsup, volume, tmp_path):
    marker = tmp_path / "started"
    # Six fds: cfgsup starts, but cannot open the watched directory to hash it.
    running = run_cfgsup("--watch", volume.path, "--", "touch", str(marker), prefix=["prlimit", "--nofile=6"])
    assert running.wait() == 2
    assert running.lines == [f"[cfgsup {running.pid}] ERROR cannot read the watched paths: Too many open files"]
    assert not marker.exists()


def test_eight_thousand_changed_keys_still_restart_the_app(run_cfgsup, tmp_path):
    """One update changing 8000 keys: the names would make an environment too large to exec,
    and a 216 KB log line. Both are bounded, and the app starts."""
    volume = KubeletVolume(tmp_path / "big", {f"key-{n:04d}.conf": "a" for n in range(8000)})
    running = watching(run_cfgsup, "--watch", volume.path)
    mark = running.mark()
    volume.write({f"key-{n:04d}.conf": "b" for n in range(8000)})
    _pid, changed = ready(running, start=mark)
    names = changed.split(",")
    assert 100 < len(names) < 8000 and all(name.startswith("key-") for name in names)
    assert len(changed) <= 16 * 1024
    running.wait_line(r"restarted the app for key-0000.conf, .* \(\+7980 more\)")
    assert max(len(line) for line in running.lines if line.startswith("[cfgsup")) <= 4096 + 6


def test_a_validator_printing_megabytes_is_drained_and_its_tail_logged(run_cfgsup, volume):
    check = "sh -c 'head -c 5000000 /dev/zero | tr \"\\\\0\" x; echo; echo the last line; exit 1'"
    running = watching(run_cfgsup, "--watch", volume.path, "--on-change", "signal",
                       "--validate", check, "--command-timeout", "20")
    volume.write({"app.conf": "v2", "nested/deep.conf": "d1"})
    line = running.wait_line(r"validation rejected the change, nothing applied: exited with code 1; output: (.*)")
    assert line.group(1).endswith("the last line") and "timed out" not in line.group(0)
    assert len(line.group(0)) < 4200


def test_a_daemon_left_by_the_reload_command_cannot_fill_memory(run_cfgsup, volume, tmp_path):
    pidfile = tmp_path / "daemon.pid"
    reload = f"sh -c '(setsid sh -c \"echo \\$\\$ > {pidfile}; exec yes\" &) ; exit 0'"
    running = watching(run_cfgsup, "-v", "--watch", volume.path, "--on-change", "exec", "--reload-command", reload)
    volume.write({"app.conf": "v2", "nested/deep.conf": "d1"})
    running.wait_line(r"ran the reload command for app.conf")
    pid = wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the daemon's pid")
    # Once the command was reaped its pipe is closed: the daemon's next write is EPIPE/SIGPIPE.
    wait_until(lambda: not psutil_alive(int(pid)), what="the daemon gone")
    running.wait_line(r"reaped orphan")
