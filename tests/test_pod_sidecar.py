"""Sidecar mode in a real podman pod: the cfgsup image beside an app container, sharing the pod's
pid and network namespaces (the network alone for the webhook), one config directory bind-mounted
into both and updated from the host by the kubelet writer. All three sidecar patterns: signal,
probe and webhook."""
from __future__ import annotations

import http.client
import os
import shutil
import tempfile

import psutil
import pytest

from conftest import wait_until
from kubelet import KubeletVolume
from kubepod import connect_in

NGINX_CONF = """daemon off;
pid /tmp/nginx.pid;
error_log stderr notice;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path /tmp/client_body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    include default.conf;
}
"""
SITE = 'server {{ listen 8080; location / {{ return 200 "{body}\\n"; }} }}\n'


@pytest.fixture
def shared_dir():
    """A host dir every uid in the containers can reach (pytest's tmp_path is 0700)."""
    path = tempfile.mkdtemp(prefix="cfgsup-pod-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def sidecar_image(podman_world, built):
    """The app's own image (Debian with nginx) with cfgsup's bundle copied in, the way
    examples/sidecar-signal.yaml says to build it: `nginx -t` runs in the sidecar."""
    context = tempfile.mkdtemp(prefix="cfgsup-sidecar-image-")
    try:
        with open(os.path.join(context, "Containerfile"), "w") as fh:
            fh.write(f"FROM {built['cfgsup']} AS cfgsup\nFROM {built['pybase']}\n"
                     "COPY --from=cfgsup /opt/cfgsup /opt/cfgsup\nENTRYPOINT [\"/opt/cfgsup/cfgsup\"]\n")
        yield podman_world.build(context, os.path.join(context, "Containerfile"),
                                 "localhost/cfgsup-test-nginx-sidecar:1")
    finally:
        shutil.rmtree(context, ignore_errors=True)


def infra_pid(podman, pod) -> int:
    infra = podman.text("pod", "inspect", "--format", "{{.InfraContainerID}}", pod)
    return int(podman.text("inspect", "--format", "{{.State.Pid}}", infra))


def get(pid, port, path="/"):
    """(status, body) of a GET to 127.0.0.1:port in the network namespace of process `pid`."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.sock = connect_in(pid, port)
        conn.request("GET", path)
        response = conn.getresponse()
        answer = (response.status, response.read().decode(errors="replace"))
        conn.close()
        return answer
    except (OSError, http.client.HTTPException):
        return None


def test_a_sidecar_reloads_nginx_by_hup_and_rejects_a_broken_config(podman, built, sidecar_image, shared_dir):
    volume = KubeletVolume(os.path.join(shared_dir, "conf"),
                           {"nginx.conf": NGINX_CONF, "default.conf": SITE.format(body="v1")})
    pod = podman.pod("pid,net")
    mounts = ["-v", f"{volume.path}:/etc/nginx/conf.d:ro", "--tmpfs", "/tmp:mode=1777", "--user", "101:101"]
    app = podman.start(built["pybase"], "/usr/sbin/nginx", "-e", "stderr", "-c", "/etc/nginx/conf.d/nginx.conf",
                       options=mounts, pod=pod)
    try:
        master = podman.wait_running(app)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{app.text()}") from None
    net = infra_pid(podman, pod)
    wait_until(lambda: get(net, 8080) == (200, "v1\n"), timeout=30, what="nginx serving v1")
    sidecar = podman.start(sidecar_image, "--watch", "/etc/nginx/conf.d", "--on-change", "signal",
                           "--target", "nginx", "--health-addr", "127.0.0.1:9102",
                           "--validate", "/usr/sbin/nginx -t -q -e stderr -c /etc/nginx/conf.d/nginx.conf",
                           options=mounts, pod=pod)
    sidecar.wait_line(r"INFO watching /etc/nginx/conf.d \(inotify\)", timeout=30)
    assert wait_until(lambda: (get(net, 9102, "/readyz") or (0,))[0] == 200, what="the sidecar ready")

    volume.write({"nginx.conf": NGINX_CONF, "default.conf": SITE.format(body="v2")})
    sidecar.wait_line(r"INFO sent SIGHUP for default\.conf")
    wait_until(lambda: all(get(net, 8080) == (200, "v2\n") for _ in range(5)), timeout=20,
               what="nginx serving only v2")
    assert psutil.Process(master).is_running() and podman.wait_running(app) == master  # same master

    volume.write({"nginx.conf": NGINX_CONF, "default.conf": "server { listen 8080; return; }\n"})
    sidecar.wait_line(r"ERROR validation rejected the change, nothing applied: exited with code 1")
    assert all(get(net, 8080) == (200, "v2\n") for _ in range(5))
    assert sidecar.count(r"sent SIGHUP") == 1
    podman.cmd("stop", "-t", "30", sidecar.container, timeout=60)
    assert sidecar.wait(timeout=30) == 0  # a sidecar's TERM ends it with 0, nginx stays
    assert psutil.Process(master).is_running()


def test_the_probe_pattern_restarts_the_app_container_once(podman, built, shared_dir):
    volume = KubeletVolume(os.path.join(shared_dir, "worker"), {"worker.toml": "concurrency = 4"})
    pod = podman.pod("pid,net")
    mounts = ["-v", f"{volume.path}:/etc/worker:ro", "--user", "65534:65534"]
    sidecar = podman.start(built["cfgsup"], "--watch", "/etc/worker", "--on-change", "probe",
                           "--target", "sleep", "--health-addr", "127.0.0.1:9102", options=mounts, pod=pod)
    sidecar.wait_line(r"INFO watching /etc/worker", timeout=30)
    # The app: a busybox container whose podman healthcheck reads the sidecar's /healthz (the
    # pod's network is shared), restarted by podman when it turns unhealthy, as the kubelet
    # restarts a container whose livenessProbe fails. Without systemd nothing runs the checks on
    # a timer: the test runs them, as the kubelet's probe would.
    name = podman.name()
    podman.containers.append(name)
    podman.cmd("run", "-d", "--pod", pod, "--name", name, *mounts,
               "--health-cmd", "wget -q -O /dev/null http://127.0.0.1:9102/healthz",
               "--health-retries", "1", "--health-interval", "disable", "--health-on-failure", "restart",
               built["busybox"], "sleep", "100000")

    def healthy() -> bool:
        return podman.cmd("healthcheck", "run", name, check=False, timeout=60).returncode == 0

    def app_pid() -> int:
        return int(podman.text("inspect", "--format", "{{.State.Pid}}", name))

    wait_until(healthy, timeout=30, what="the app healthy")
    first = app_pid()
    volume.write({"worker.toml": "concurrency = 8"})
    wait_until(lambda: not healthy(), timeout=30, what="the healthcheck failing after the change")
    # podman restarted the container: a new sleep, which the sidecar sees; healthy again.
    second = wait_until(lambda: (pid := app_pid()) not in (0, first) and pid, timeout=30,
                        what="the app container restarted")
    sidecar.wait_line(r"INFO saw the app's container restarted for worker\.toml", timeout=30)
    # Healthy again, and it stays so: the app is not restarted a second time.
    assert all(healthy() for _ in range(3)) and app_pid() == second


# The app of the webhook pattern: a reload endpoint on the pod's loopback (Prometheus's
# /-/reload stands in), saying on stdout what each POST named.
RELOAD_APP = """
import http.server, sys
class Reload(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        print("reload", self.path, self.headers.get("X-Cfgsup-Changed"), flush=True)
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
print("listening", flush=True)
http.server.HTTPServer(("127.0.0.1", 9090), Reload).serve_forever()
"""


def test_the_webhook_pattern_from_cfgsups_own_image(podman, built, shared_dir):
    """configmap-reload's job, from the cfgsup image itself (busybox, no Python): a change is
    validated, then POSTed to the app's reload URL over the pod's loopback; a change that fails
    validation is never sent."""
    volume = KubeletVolume(os.path.join(shared_dir, "prom"), {"prometheus.yml": "scrape_interval: 30s\n"})
    pod = podman.pod("net")  # no shared pid namespace: the reload goes over the network
    mounts = ["-v", f"{volume.path}:/etc/prometheus:ro", "--user", "65534:65534"]
    app = podman.start(built["pybase"], "python3", "-c", RELOAD_APP, options=mounts, pod=pod)
    app.wait_line(r"^listening$", timeout=30)
    sidecar = podman.start(built["cfgsup"], "--watch", "/etc/prometheus", "--on-change", "http",
                           "--webhook", "http://127.0.0.1:9090/-/reload", "--webhook-timeout", "10",
                           "--validate", "grep -q scrape_interval /etc/prometheus/prometheus.yml",
                           options=mounts, pod=pod)
    sidecar.wait_line(r"INFO watching /etc/prometheus \(inotify\)", timeout=30)

    volume.write({"prometheus.yml": "scrape_interval: 15s\n"})
    app.wait_line(r"^reload /-/reload prometheus\.yml$", timeout=30)
    sidecar.wait_line(r"INFO called the webhook\(s\) for prometheus\.yml", timeout=10)
    volume.write({"prometheus.yml": "broken: [\n"})  # fails the validator: never POSTed
    sidecar.wait_line(r"ERROR validation rejected the change, nothing applied: exited with code 1")
    mark = app.mark()
    volume.write({"prometheus.yml": "scrape_interval: 10s\n"})
    app.wait_line(r"^reload /-/reload prometheus\.yml$", timeout=30, start=mark)
    assert app.count(r"^reload ") == 2  # the rejected one was not
    podman.cmd("stop", "-t", "30", sidecar.container, timeout=60)
    assert sidecar.wait(timeout=30) == 0
