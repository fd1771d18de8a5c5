"""PID 1 behaviour with real processes: exit codes, forwarding, stopping, reaping, hygiene."""
from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import APP, CFGSUP, wait_until

UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]


def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


# CI runs as root with unshare available, so there these tests always run.
needs_pidns = pytest.mark.skipif(not os.environ.get("CI") and not _can_unshare(),
                                 reason="needs unshare --pid (root)")


def app_pid(running) -> int:
    return int(running.wait_line(r"^child ready pid=(\d+)").group(1))


# ---- exit status ---------------------------------------------------------------------------
@pytest.mark.parametrize("script, expected", [
    ("exit 0", 0), ("exit 1", 1), ("exit 2", 2), ("exit 255", 255),
    ("kill -TERM $$", 143), ("kill -KILL $$", 137), ("kill -HUP $$", 129),
])
def test_exit_code_matrix(run_cfgsup, script, expected):
    assert run_cfgsup("--", "sh", "-c", script).wait() == expected


def test_command_not_found_is_127_with_one_line(run_cfgsup):
    running = run_cfgsup("--", "no-such-command-xyz")
    assert running.wait() == 127
    lines = [line for line in running.lines if line.strip()]
    assert len(lines) == 1 and "no-such-command-xyz" in lines[0] and "not found" in lines[0]


def test_not_executable_is_126_with_one_line(run_cfgsup, tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    running = run_cfgsup("--", str(script))
    assert running.wait() == 126
    lines = [line for line in running.lines if line.strip()]
    assert len(lines) == 1 and str(script) in lines[0]
    assert "Traceback" not in running.text()


@pytest.mark.parametrize("kind, code, words", [
    ("empty", 127, "empty command name"),
    ("directory", 126, "is a directory"),
    ("long", 127, "name too long"),
    ("dangling", 127, "a symlink to a missing file"),
    ("newline", 127, "command not found"),
])
def test_odd_command_names_are_one_line_and_a_shell_code(run_cfgsup, tmp_path, kind, code, words):
    name = {"empty": "", "directory": str(tmp_path), "long": "a" * 5000,
            "dangling": str(tmp_path / "link"), "newline": "no\nsuch\x1b[31m"}[kind]
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    running = run_cfgsup("--", name)
    assert running.wait() == code
    lines = [line for line in running.lines if line.strip()]
    assert len(lines) == 1 and words in lines[0], running.text()
    assert len(lines[0]) < 300 and "\x1b" not in lines[0]


def test_nul_in_the_command_is_a_spawn_error_not_a_traceback():
    """No real command line can carry a NUL byte, but argv built by a caller can."""
    from supervisor.child import SpawnError, spawn_app

    with pytest.raises(SpawnError) as name:
        spawn_app(["no\0such"], dict(os.environ))
    assert name.value.code == 127 and "NUL byte" in str(name.value)
    with pytest.raises(SpawnError) as argument:
        spawn_app(["true", "a\0b"], dict(os.environ))
    assert argument.value.code == 126 and "NUL byte" in str(argument.value)


def test_expect_exit_maps_code_to_zero(run_cfgsup):
    assert run_cfgsup("-e", "3", "-e", "143", "--", "sh", "-c", "exit 3").wait() == 0
    assert run_cfgsup("-e", "143", "--", "sh", "-c", "kill -TERM $$").wait() == 0
    assert run_cfgsup("-e", "3", "--", "sh", "-c", "exit 4").wait() == 4


# ---- forwarding ----------------------------------------------------------------------------
FORWARDED = ["SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGCONT", "SIGALRM",
             "SIGURG", "SIGTSTP", "SIGABRT", "SIGPWR"]


def signal_state(pid) -> str:
    """What the kernel says about a process's signals, for a failure message."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return " ".join(line.strip() for line in fh if line.startswith(("State", "Sig", "ShdPnd")))
    except OSError:
        return "gone"


def test_forwards_every_catchable_signal(run_cfgsup):
    running = run_cfgsup("-v", "--", *APP)
    pid = app_pid(running)
    for name in FORWARDED:
        mark = running.mark()
        running.signal(getattr(signal, name))
        try:
            running.wait_line(rf"^child got {name}$", start=mark)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\napp: {signal_state(pid)}\ncfgsup: {signal_state(running.pid)}") from None
    for number in (signal.SIGRTMIN, signal.SIGRTMIN + 3, signal.SIGRTMAX):
        mark = running.mark()
        running.signal(number)
        running.wait_line(rf"^child got {signal.Signals(number).name if number in (signal.SIGRTMIN, signal.SIGRTMAX) else number}$",
                          start=mark)
    running.signal(signal.SIGTERM)
    running.wait_line(r"^child got SIGTERM$")
    assert running.wait() == 0


def test_forwards_to_the_process_only_without_group_flag(run_cfgsup):
    running = run_cfgsup("--", *APP, "--grandchild")
    running.wait_line(r"^child ready")
    running.wait_line(r"^grandchild ready")
    running.signal(signal.SIGUSR1)
    running.wait_line(r"^child got SIGUSR1$")
    running.signal(signal.SIGUSR2)  # a marker: by now USR1 would have reached the grandchild
    running.wait_line(r"^child got SIGUSR2$")
    assert running.count(r"^grandchild got") == 0


def test_group_flag_signals_the_whole_group(run_cfgsup):
    running = run_cfgsup("-g", "--", *APP, "--grandchild")
    running.wait_line(r"^child ready")
    running.wait_line(r"^grandchild ready")
    running.signal(signal.SIGUSR1)
    running.wait_line(r"^child got SIGUSR1$")
    running.wait_line(r"^grandchild got SIGUSR1$")


def test_rewrite_and_drop(run_cfgsup):
    running = run_cfgsup("-r", "USR1:USR2", "-r", "SIGHUP:0", "--", *APP)
    app_pid(running)
    running.signal(signal.SIGUSR1)
    running.wait_line(r"^child got SIGUSR2$")
    running.signal(signal.SIGHUP)
    running.signal(signal.SIGWINCH)  # marker sent after the dropped HUP
    running.wait_line(r"^child got SIGWINCH$")
    assert running.count(r"got SIGHUP") == 0
    assert running.count(r"got SIGUSR1") == 0


def test_rewritten_term_still_stops(run_cfgsup):
    """TERM rewritten to QUIT: the app gets QUIT, and the stop deadline still runs."""
    running = run_cfgsup("--stop-timeout", "0.5", "-r", "TERM:QUIT", "--", *APP, "--ignore-term")
    pid = app_pid(running)
    running.signal(signal.SIGTERM)
    running.wait_line(r"^child got SIGQUIT$")
    assert running.wait() == 137
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


# ---- stopping ------------------------------------------------------------------------------
def test_stop_timeout_escalates_to_sigkill_of_the_group(run_cfgsup):
    running = run_cfgsup("--stop-timeout", "1", "--", *APP, "--ignore-term", "--grandchild")
    pid = app_pid(running)
    grandchild = int(running.wait_line(r"^grandchild ready pid=(\d+)").group(1))
    started = time.monotonic()
    running.signal(signal.SIGTERM)
    assert running.wait() == 137  # the app's own status: killed by SIGKILL
    assert time.monotonic() - started >= 1.0  # not before the deadline
    for doomed in (pid, grandchild):
        wait_until(lambda: not psutil.pid_exists(doomed)
                   or psutil.Process(doomed).status() == psutil.STATUS_ZOMBIE,
                   what=f"pid {doomed} gone")
    assert "did not stop within 1s" in running.text()


def test_sigint_is_forwarded_and_stops(run_cfgsup):
    running = run_cfgsup("--", *APP)
    app_pid(running)
    running.signal(signal.SIGINT)
    running.wait_line(r"^child got SIGINT$")
    assert running.wait() == 0


def test_second_term_does_not_reset_the_deadline(run_cfgsup):
    running = run_cfgsup("--stop-timeout", "1", "--", *APP, "--ignore-term")
    app_pid(running)
    started = time.monotonic()
    running.signal(signal.SIGTERM)
    running.wait_line(r"stopping")
    running.signal(signal.SIGTERM)
    assert running.wait() == 137
    assert time.monotonic() - started >= 1.0


# ---- --on-exit restart ---------------------------------------------------------------------
def test_on_exit_restart_backs_off(run_cfgsup):
    running = run_cfgsup("--on-exit", "restart", "--restart-backoff", "2", "--", "sh", "-c", "echo up; exit 3")
    running.wait_line(r"restarting in 0.5s")
    running.wait_line(r"restarting in 1s")
    running.wait_line(r"restarting in 2s")
    assert running.count(r"^up$") >= 3
    running.signal(signal.SIGTERM)
    assert running.wait() in (3, 143)


# ---- reaping -------------------------------------------------------------------------------
ORPHANS = r"""
for i in $(seq 60); do sh -c 'sleep 0.05 &'; done
deadline=$(( $(date +%s) + 10 ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  z=0
  for s in /proc/[0-9]*/stat; do
    case "$(cut -d' ' -f3 "$s" 2>/dev/null)" in Z) z=$((z+1));; esac
  done
  pgrep -x sleep >/dev/null || [ "$z" -ne 0 ] || break
  sleep 0.05
done
echo "zombies=$z"
"""


@needs_pidns
def test_pid1_reaps_every_orphan(run_cfgsup):
    running = run_cfgsup("-v", "--", "sh", "-c", ORPHANS, prefix=UNSHARE)
    running.wait_line(r"^\[cfgsup 1\] ")  # really PID 1 of the namespace
    assert running.wait_line(r"^zombies=(\d+)", timeout=20).group(1) == "0"
    assert running.wait() == 0
    assert running.count(r"reaped orphan") >= 60


@needs_pidns
def test_pid1_sigterm_ends_a_child_with_default_action(run_cfgsup):
    running = run_cfgsup("-v", "--", "sh", "-c", "echo ready; exec sleep 300", prefix=UNSHARE)
    running.wait_line(r"^ready$")
    inner = wait_until(lambda: [p for p in running.descendants() if p.cmdline()[:len(CFGSUP)] == CFGSUP],
                       what="cfgsup in the namespace")
    os.kill(inner[0].pid, signal.SIGTERM)
    assert running.wait() == 143


def test_subreaper_adopts_orphans_when_not_pid1(run_cfgsup):
    running = run_cfgsup("-v", "--", "sh", "-c", "sh -c 'sleep 300 & echo orphan=$!'; exec sleep 300")
    orphan = int(running.wait_line(r"^orphan=(\d+)").group(1))
    wait_until(lambda: psutil.Process(orphan).ppid() == running.pid, what="orphan re-parented to cfgsup")
    os.kill(orphan, signal.SIGKILL)
    running.wait_line(rf"reaped orphan {orphan}")
    wait_until(lambda: not psutil.pid_exists(orphan), what="orphan reaped")


# ---- hygiene -------------------------------------------------------------------------------
def _block_usr1_and_ignore_int_and_leak_fd(fd):
    def prepare():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGHUP})
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.set_inheritable(fd, True)
    return prepare


def _status_field(pid, field):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    raise AssertionError(field)


def test_child_gets_clean_mask_default_dispositions_and_only_fds_012(run_cfgsup, tmp_path):
    leaked = os.open(tmp_path / "leak", os.O_CREAT | os.O_RDWR)
    try:
        running = run_cfgsup("--", "sh", "-c", "echo ready; exec sleep 300",
                             preexec_fn=_block_usr1_and_ignore_int_and_leak_fd(leaked), pass_fds=(leaked,))
    finally:
        os.close(leaked)
    running.wait_line(r"^ready$")
    app = wait_until(lambda: [p for p in running.descendants() if p.name() == "sleep"], what="app")[0]
    assert _status_field(app.pid, "SigBlk") == 0
    # Nothing ignored, not even PIPE/TTIN/TTOU which cfgsup ignores, nor glibc's 32 and 33.
    assert _status_field(app.pid, "SigIgn") == 0
    assert sorted(int(fd) for fd in os.listdir(f"/proc/{app.pid}/fd")) == [0, 1, 2]
    assert os.getpgid(app.pid) == app.pid  # its own process group


CLEAN = ["SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000"]


def test_app_starts_with_nothing_ignored_and_nothing_blocked(run_cfgsup):
    """The command line of issue 9.16: under tini and dumb-init it prints all zeros. glibc's
    posix_spawn ignores its internal signals 32 and 33 in the child unless told otherwise."""
    running = run_cfgsup("--", "grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status")
    assert running.wait() == 0
    assert [line for line in running.lines if line.startswith("Sig")] == CLEAN


def _helper_sig_lines():
    from supervisor.child import spawn_helper

    read_end, write_end = os.pipe()
    try:
        pid = spawn_helper(["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"], dict(os.environ),
                           write_end)
    finally:
        os.close(write_end)
    data, deadline = b"", time.monotonic() + 10
    try:
        while True:  # read to EOF, with a deadline
            assert time.monotonic() < deadline, "helper output did not end within 10 s"
            if select.select([read_end], [], [], 0.5)[0]:
                chunk = os.read(read_end, 4096)
                if not chunk:
                    break
                data += chunk
    finally:
        os.close(read_end)
    wait_until(lambda: os.waitpid(pid, os.WNOHANG)[0] == pid, what="helper exit")
    return data.decode().splitlines()


def test_helpers_start_with_nothing_ignored_and_nothing_blocked():
    assert _helper_sig_lines() == CLEAN


def test_without_ctypes_spawning_falls_back_to_os_posix_spawnp(monkeypatch):
    """Where ctypes is missing, os.posix_spawnp still starts everything; only 32 and 33 stay
    ignored then (glibc's doing), nothing else."""
    from supervisor import child

    monkeypatch.setattr(child, "_libc", False)
    blocked, ignored = _helper_sig_lines()
    assert blocked == CLEAN[0] and int(ignored.split()[1], 16) & ~0x180000000 == 0


# ---- terminal ------------------------------------------------------------------------------
def on_a_pty(argv):
    """Start argv as a session leader whose controlling terminal is a new pty; (proc, master)."""
    master, slave = pty.openpty()
    slave_name = os.ttyname(slave)

    def become_session_leader_on_the_pty():
        os.setsid()
        fd = os.open(slave_name, os.O_RDWR)  # first tty opened by a session leader: its ctty
        for target in (0, 1, 2):
            os.dup2(fd, target)

    proc = subprocess.Popen(argv, preexec_fn=become_session_leader_on_the_pty, close_fds=True)
    os.close(slave)
    return proc, master


def foreground_sleep(proc, master):
    def app_in_foreground():
        apps = [p for p in psutil.Process(proc.pid).children() if p.name() == "sleep"]
        return apps if apps and os.tcgetpgrp(master) == apps[0].pid else None
    return wait_until(app_in_foreground, what="app in the foreground")[0]


def test_restarted_app_gets_the_terminal_too():
    proc, master = on_a_pty([*CFGSUP, "--on-exit", "restart", "--", "sleep", "300"])
    try:
        first = foreground_sleep(proc, master)
        first.terminate()
        wait_until(lambda: foreground_sleep(proc, master).pid != first.pid, what="restarted app in front")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) in (0, 143)
    finally:
        if proc.poll() is None:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait(timeout=5)
        os.close(master)


def test_ctrl_c_on_a_pty_reaches_the_app_and_exits_130(tmp_path):
    proc, master = on_a_pty([*CFGSUP, "-v", "--", "sh", "-c", "echo ready; exec sleep 300"])
    output = b""
    try:
        deadline = time.monotonic() + 10
        while b"ready" not in output and time.monotonic() < deadline:
            output += os.read(master, 4096)
        assert b"ready" in output
        # The app must be the terminal's foreground group before Ctrl-C means anything.
        wait_until(lambda: any(p.name() == "sleep" and os.tcgetpgrp(master) == p.pid
                               for p in psutil.Process(proc.pid).children()), what="app in foreground")
        os.write(master, b"\x03")
        assert proc.wait(timeout=10) == 130
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []:
            child.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        try:
            while True:
                chunk = os.read(master, 4096)
                if not chunk:
                    break
                output += chunk
        except OSError:
            pass
        os.close(master)
    assert b"received SIGINT" not in output  # the terminal signalled the app, not cfgsup


BACKGROUND = """
import os, subprocess, sys
# A background job, like `cfgsup ... &` in an interactive shell.
cfgsup = subprocess.Popen(sys.argv[1:], preexec_fn=os.setpgrp, stderr=subprocess.PIPE)
for line in iter(cfgsup.stderr.readline, b""):  # logged once spawning (and any tcsetpgrp) is done
    if b"started sleep" in line:
        break
print("terminal kept" if os.tcgetpgrp(0) == os.getpgrp() else "terminal stolen", flush=True)
cfgsup.terminate()
cfgsup.wait(10)
"""


def test_cfgsup_in_the_background_leaves_the_terminal_alone():
    proc, master = on_a_pty([sys.executable, "-c", BACKGROUND, *CFGSUP, "-v", "--", "sleep", "300"])
    output = b""
    try:
        deadline = time.monotonic() + 15
        while b"terminal " not in output and time.monotonic() < deadline:
            output += os.read(master, 4096)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        os.close(master)
    assert b"terminal kept" in output
