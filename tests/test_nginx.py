"""A real application: nginx hot-reloaded by SIGHUP after `nginx -t` validation."""
from __future__ import annotations

import shutil
import socket
import urllib.error
import urllib.request

import psutil
import pytest

from conftest import wait_until
from kubelet import KubeletVolume

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if shutil.os.path.exists(p)), None)

# CI installs nginx (.ci/run), so there a missing nginx is a failure, not a skip.
pytestmark = pytest.mark.skipif(NGINX is None and not shutil.os.environ.get("CI"),
                                reason="nginx is not installed (.ci/run installs it)")

CONF = """
pid {tmp}/nginx.pid;
error_log stderr notice;
daemon off;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "{body}\\n"; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return response.read().decode().strip()
    except (urllib.error.URLError, OSError):
        return None


def workers(master_pid) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(master_pid).children()}
    except psutil.NoSuchProcess:
        return set()


def test_nginx_reloads_on_swap_and_rejects_a_broken_config(run_cfgsup, tmp_path):
    port = free_port()
    work = tmp_path / "work"
    work.mkdir()
    volume = KubeletVolume(tmp_path / "nginx", {"nginx.conf": CONF.format(tmp=work, port=port, body="v1")})
    conf = f"{volume.path}/nginx.conf"
    running = run_cfgsup(
        "--watch", volume.path, "--on-change", "signal", "--signal", "HUP",
        "--validate", f"{NGINX} -t -q -c {conf}", "--", NGINX, "-c", conf,
    )
    wait_until(lambda: fetch(port) == "v1", timeout=15, what="nginx serving v1")
    running.wait_line(r"INFO watching")
    master = [p for p in running.descendants() if p.name() == "nginx" and p.ppid() == running.pid]
    assert len(master) == 1
    master_pid = master[0].pid

    old_workers = workers(master_pid)
    assert old_workers
    volume.write({"nginx.conf": CONF.format(tmp=work, port=port, body="v2")})
    running.wait_line(r"sent SIGHUP for nginx.conf")
    # After a HUP the old workers finish gracefully and may still answer with v1 for a moment.
    # Once they are gone, every connection reaches a new worker.
    wait_until(lambda: not (old_workers & workers(master_pid)), timeout=15, what="the old workers to exit")
    assert [fetch(port) for _ in range(5)] == ["v2"] * 5
    assert psutil.Process(master_pid).is_running()  # same master: reloaded, not restarted

    volume.write({"nginx.conf": CONF.format(tmp=work, port=port, body="v3").replace("events", "evnts")})
    running.wait_line(r"validation rejected the change, nothing applied: exited with code 1; output: .*evnts")
    assert fetch(port) == "v2"
    assert psutil.Process(master_pid).is_running()
    assert running.count(r"sent SIGHUP") == 1
