"""cfgsup in real containers (podman on runc), for both ways of getting it into an image:
`pip` (Dockerfile.example: Debian with Python, cfgsup pip-installed from wheels) and `bundle`
(packaging/Containerfile: the PyInstaller bundle on busybox, no Python at all)."""
from __future__ import annotations

import os
import re
import subprocess

import psutil
import pytest

from conftest import wait_until
from kubelet import KubeletVolume

# image key in `built`, and cfgsup's path in it
FLAVOURS = {"pip": "/opt/cfgsup-venv/bin/cfgsup", "bundle": "/opt/cfgsup/cfgsup"}
IMAGE = {"pip": "pip", "bundle": "cfgsup"}

# An app in plain sh (busybox's or dash): reports HUP and TERM at once (a trap runs as soon as
# `wait` is interrupted), exits 0 on TERM unless told to ignore it.
APP = ('trap "echo app got HUP" HUP; trap "echo app got TERM; exit 0" TERM; '
       'echo "app ready uid=$(id -u)"; while :; do sleep 1 & wait $!; done')
STUBBORN = 'trap "" TERM; echo "app ready"; while :; do sleep 1; done'


@pytest.fixture(params=list(FLAVOURS))
def flavour(request, built):
    """(image, cfgsup path) for one flavour; the options below put cfgsup's own args first."""
    return built[IMAGE[request.param]], FLAVOURS[request.param]


def cfgsup(flavour, *args, options=()):
    """(image, command, options) to run `cfgsup ARGS` as the container's entrypoint."""
    image, path = flavour
    return image, args, ["--entrypoint", path, *options]


def start(podman, flavour, *args, options=()):
    image, command, opts = cfgsup(flavour, *args, options=options)
    return podman.start(image, *command, options=opts)


def output(proc) -> str:
    return (proc.stdout + proc.stderr).decode(errors="replace")


def test_cfgsup_is_pid_1_with_the_app_as_its_child(podman, flavour):
    image, command, opts = cfgsup(flavour, "--", "sh", "-c",
                                  'echo "pid1=$(tr "\\0" " " < /proc/1/cmdline)"; '
                                  'echo "exe=$(readlink /proc/1/exe)"; echo "ppid=$PPID"')
    proc = podman.run(image, *command, options=opts)
    text = output(proc)
    assert proc.returncode == 0, text
    assert re.search(r"^ppid=1$", text, re.M), text
    pid1 = re.search(r"^pid1=(.*)$", text, re.M).group(1).split()
    path = flavour[1]
    if path == FLAVOURS["bundle"]:
        # the bootloader itself is PID 1: no process above cfgsup, nothing unpacked
        assert pid1[0] == path and re.search(rf"^exe={re.escape(path)}$", text, re.M), text
    else:
        assert pid1[1] == path and "python" in pid1[0], text


@pytest.mark.parametrize("script, code", [("exit 0", 0), ("exit 7", 7), ("kill -USR1 $$", 128 + 10)])
def test_exit_codes_pass_through(podman, flavour, script, code):
    image, command, opts = cfgsup(flavour, "--", "sh", "-c", script)
    proc = podman.run(image, *command, options=opts)
    assert proc.returncode == code, output(proc)


def test_podman_kill_hup_reaches_the_app_and_stop_is_graceful(podman, flavour):
    running = start(podman, flavour, "--", "sh", "-c", APP)
    running.wait_line(r"^app ready")
    podman.cmd("kill", "--signal", "HUP", running.container)
    running.wait_line(r"^app got HUP$")
    podman.cmd("stop", "-t", "60", running.container, timeout=90)
    assert running.wait(timeout=30) == 0
    assert running.count(r"^app got TERM$") == 1
    assert "SIGKILL" not in running.text()


def test_an_app_ignoring_term_is_killed_after_stop_timeout(podman, flavour):
    # podman's own timeout (60 s) is far longer: the SIGKILL must be cfgsup's.
    running = start(podman, flavour, "--stop-timeout", "1", "--", "sh", "-c", STUBBORN)
    running.wait_line(r"^app ready")
    podman.cmd("stop", "-t", "60", running.container, timeout=90)
    assert running.wait(timeout=30) == 128 + 9
    running.wait_line(r"did not stop within 1s: SIGKILL to its group")


def signal_masks(host_pid: int) -> tuple[int, int]:
    """(blocked, caught) signal masks of a process, as /proc shows them."""
    with open(f"/proc/{host_pid}/status") as fh:
        fields = dict(line.split(":\t", 1) for line in fh if line.startswith(("SigBlk", "SigCgt")))
    return int(fields["SigBlk"], 16), int(fields["SigCgt"], 16)


def test_term_during_start_up_stops_the_container(podman, flavour):
    """A TERM from the moment cfgsup's own code runs (it blocks the signals first) until its loop
    has handlers is kept pending, not dropped. Sent the moment /proc shows TERM blocked: sending
    it blindly "right after start" would race the interpreter's own start-up, where a signal to
    PID 1 is lost (README: Signals during start-up)."""
    term = 1 << (15 - 1)
    image, command, opts = cfgsup(flavour, "--", "sh", "-c", APP)
    name = podman.name()
    podman.containers.append(name)
    podman.cmd("run", "-d", "--name", name, *opts, image, *command)
    pid = int(podman.text("inspect", "--format", "{{.State.Pid}}", name))
    wait_until(lambda: (lambda m: m if m[0] & term or m[1] & term else None)(signal_masks(pid)),
                                 timeout=30, interval=0.0005, what="TERM blocked or caught")
    os.kill(pid, 15)
    code = podman.text("wait", name, timeout=60)
    logs = output(podman.cmd("logs", name))
    assert code in ("0", "143"), logs  # the app's TERM trap, or TERM before the app had one
    assert "received SIGTERM" in logs and "Traceback" not in logs


def children(host_pid: int):
    try:
        return psutil.Process(host_pid).children()
    except psutil.NoSuchProcess:
        return []


def zombies(host_pid: int):
    found = []
    for child in children(host_pid):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                found.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.mark.parametrize("count", [20, 500], ids=["few", "storm"])
def test_orphans_from_podman_exec_are_reaped(podman, flavour, count):
    running = start(podman, flavour, "--", "sh", "-c", APP)
    running.wait_line(r"^app ready")
    pid1 = podman.wait_running(running)
    # Each subshell forks a sleep and exits: the sleeps are orphans, and PID 1 adopts them.
    podman.cmd("exec", running.container, "sh", "-c",
               f"i=0; while [ $i -lt {count} ]; do (sleep 1 &); i=$((i+1)); done", timeout=120)
    wait_until(lambda: sum(1 for c in children(pid1) if c.name() == "sleep") >= count // 2,
               timeout=30, what="orphans adopted by cfgsup")
    wait_until(lambda: len(children(pid1)) <= 2 and not zombies(pid1), timeout=60,
               what=f"every orphan reaped (left: {len(children(pid1))}, zombies {zombies(pid1)[:5]})")
    podman.cmd("stop", "-t", "30", running.container, timeout=60)
    assert running.wait(timeout=30) == 0


def test_read_only_root_with_a_tmpfs(podman, flavour):
    # No tmpfs anywhere but /scratch: nothing may be unpacked or written at start.
    image, command, opts = cfgsup(
        flavour, "--watch", "/scratch", "--on-change", "none", "--", "sh", "-c",
        'echo v1 > /scratch/app.conf && echo "wrote"; touch /opt/x 2>/dev/null || echo "root is read-only"; '
        + APP, options=["--read-only", "--read-only-tmpfs=false", "--tmpfs", "/scratch"])
    running = podman.start(image, *command, options=opts)
    running.wait_line(r"^root is read-only$")
    running.wait_line(r"INFO watching")
    podman.cmd("exec", running.container, "sh", "-c", "echo v2 > /scratch/app.conf")
    running.wait_line(r"did nothing \(--on-change none\)")
    podman.cmd("stop", "-t", "30", running.container, timeout=60)
    assert running.wait(timeout=30) == 0


def test_runs_as_any_non_root_user(podman, flavour):
    image, command, opts = cfgsup(flavour, "--", "sh", "-c", 'echo "uid=$(id -u)"',
                                  options=["--user", "4242:4242"])
    proc = podman.run(image, *command, options=opts)
    assert proc.returncode == 0 and "uid=4242" in output(proc), output(proc)
    default = podman.run(image, "--", "sh", "-c", 'echo "uid=$(id -u)"', options=opts[:2])
    uid = re.search(r"uid=(\d+)", output(default))
    assert default.returncode == 0 and uid and uid.group(1) != "0", output(default)


def test_kubelet_update_of_a_read_only_bind_mount_signals_the_app(podman, flavour, tmp_path):
    volume = KubeletVolume(tmp_path / "config", {"app.conf": "v1"})
    running = start(podman, flavour, "--watch", "/etc/config", "--on-change", "signal", "--", "sh", "-c", APP,
                    options=["-v", f"{volume.path}:/etc/config:ro", "--user", "4242:4242", "--read-only"])
    running.wait_line(r"^app ready uid=4242$")
    running.wait_line(r"INFO watching")
    volume.write({"app.conf": "v2"})
    running.wait_line(r"^app got HUP$")
    running.wait_line(r"app\.conf")
    podman.cmd("stop", "-t", "30", running.container, timeout=60)
    assert running.wait(timeout=30) == 0


def test_a_pod_shares_pid_and_network_between_an_app_and_the_cfgsup_image(podman, built):
    """What sidecar mode stands on: in a pod sharing pid and net, the cfgsup image sees the app's
    processes (and may signal them, as the same user) and reaches its port on 127.0.0.1."""
    pod = podman.pod("pid,net")
    app = podman.start(built["busybox"], "sh", "-c",
                       'trap "echo app got HUP" HUP; httpd -p 127.0.0.1:8080 -h /etc; echo "app ready"; '
                       'while :; do sleep 1 & wait $!; done', "marker-app",
                       options=["--user", "65534:65534"], pod=pod)
    app.wait_line(r"^app ready$")
    sidecar = podman.start(built["cfgsup"], "--", "sh", "-c",
                           'wget -q -O - http://127.0.0.1:8080/group | head -n 1; '
                           'for p in /proc/[0-9]*; do grep -q "marker-ap[p]" $p/cmdline 2>/dev/null '
                           '&& kill -HUP ${p#/proc/} && echo "signalled ${p#/proc/}"; done', pod=pod)
    assert sidecar.wait(timeout=60) == 0, sidecar.text()
    assert "root:x:0:" in sidecar.text()
    sidecar.wait_line(r"^signalled \d+$")
    app.wait_line(r"^app got HUP$")


# ---- the shipped Dockerfiles, built and run once each as a user would ------------------------
def test_dockerfile_example_runs_the_demo_and_restarts_it_on_a_change(podman, built):
    running = podman.start(built["pip"])  # its own ENTRYPOINT and CMD
    running.wait_line(r"^demo-app: read greeting \(6 bytes\)$")
    running.wait_line(r"INFO watching")
    podman.cmd("exec", "--user", "0", running.container, "sh", "-c", "echo hi > /etc/config/greeting")
    running.wait_line(r"^demo-app: started after a change to greeting$")
    running.wait_line(r"^demo-app: read greeting \(3 bytes\)$")
    podman.cmd("stop", "-t", "30", running.container, timeout=60)
    assert running.wait(timeout=30) == 0
    assert running.count(r"^demo-app: stopping$") == 2


def test_cfgsup_image_runs_cfgsup_as_nobody(podman, built):
    proc = podman.run(built["cfgsup"])  # CMD --help
    assert proc.returncode == 0 and b"Usage: cfgsup" in proc.stdout, output(proc)
    assert podman.text("image", "inspect", "--format", "{{.Config.User}}", built["cfgsup"]) == "65534:65534"
    version = podman.run(built["cfgsup"], "--version")
    assert version.returncode == 0 and re.match(rb"cfgsup \d+\.\d+", version.stdout), output(version)


def test_dockerfile_bundle_example_runs_without_python(podman, built):
    # its ENTRYPOINT ends in `--`: the arguments are the app
    nopython = podman.run(built["bundled"], "sh", "-c", "for p in python3 python; do which $p && exit 1; done; exit 0")
    assert nopython.returncode == 0, output(nopython)
    running = podman.start(built["bundled"])
    running.wait_line(r"^demo-app: read greeting \(6 bytes\)$")
    running.wait_line(r"INFO watching")
    podman.cmd("kill", "--signal", "HUP", running.container)
    running.wait_line(r"^demo-app: reloaded greeting \(6 bytes\)$")
    podman.cmd("stop", "-t", "30", running.container, timeout=60)
    assert running.wait(timeout=30) == 0


def test_a_base_without_libz_fails_with_the_loaders_message(podman, built):
    """The README names this message: the loader needs libz.so.1 before the bundle's folder is
    searched, so the copy inside the bundle does not help."""
    proc = podman.run(built["nolibz"], "/opt/cfgsup/cfgsup", "--version",
                      options=["-v", f"{built['bundle_dir']}:/opt/cfgsup:ro"])
    assert proc.returncode == 127
    assert ("error while loading shared libraries: libz.so.1: cannot open shared object file"
            in output(proc)), output(proc)
