"""Every shipped example, run for real in a re-enacted pod (kubepod.py): the container's command
line verbatim from the manifest, as the uid, gid and groups it declares, with its volumes made
by the kubelet writer at their mountPath and a read-only root. A change is then applied the way
the kubelet applies it, and the test checks that the app picked it up.

A new example is one entry in EXPECTED: the check to run on its pod, what to put into its
ConfigMaps or Secrets first (placeholder data that no app could load), and the cfgsup warnings
the check provokes on purpose. An example without an entry fails.
"""
from __future__ import annotations

import base64
import dataclasses
import glob
import hashlib
import json
import os
import re
import ssl
import subprocess
from typing import Callable

import psutil
import pytest
import yaml

import kubepod
from conftest import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# prometheus-rules.yaml holds no pod: test_examples.py runs promtool on it.
EXAMPLES = sorted(p for p in glob.glob(os.path.join(ROOT, "examples", "*.yaml"))
                  if not p.endswith("prometheus-rules.yaml"))
LACKS = kubepod.missing()

# CI has root and installs the tools (.ci/run): there a missing one is a failure, not a skip.
pytestmark = pytest.mark.skipif(bool(LACKS) and not os.environ.get("CI"),
                                reason=f"running the examples for real needs {', '.join(LACKS)}")


def documents(path):
    with open(path) as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def standin(running, event, start=0, timeout=15.0) -> dict:
    match = running.wait_line(r'^standin (\{.*"event": "' + event + r'".*\})$', timeout=timeout, start=start)
    return json.loads(match.group(1))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def status(answer) -> int:
    return answer[0] if answer else 0


def steady(fetch, expected, times=5) -> bool:
    return all(fetch() == expected for _ in range(times))


def app_pid(container) -> int:
    """The host pid of the app cfgsup runs in the container (its stand-in's own pid is the
    container's view)."""
    return psutil.Process(container.pid1()).children()[0].pid


def in_volume(pod, volume, name) -> str:
    """A file as the app sees it in one of the pod's volumes (links followed, as the app does)."""
    with open(os.path.join(pod.volume_dirs[volume], name)) as fh:
        return fh.read()


def strings(pod, kind, name) -> dict[str, str]:
    return {k: v.decode() for k, v in pod.data[(kind, name)].items()}


# --- nginx-signal-validate.yaml ------------------------------------------------------------

def nginx_workers(master) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(master).children()}
    except psutil.NoSuchProcess:
        return set()


def check_nginx(pod):
    nginx = pod.container()
    log = nginx.running
    wait_until(lambda: pod.http(8080) == (200, "hello\n"), timeout=20, what="nginx serving the page")
    log.wait_line(r"INFO watching /etc/cfgsup/nginx \(inotify\)")
    wait_until(lambda: status(pod.http(9102, "/readyz")) == 200, what="/readyz 200")
    master = next(p.pid for p in psutil.Process(nginx.pid1()).children() if p.name() == "nginx")
    old_workers = nginx_workers(master)

    conf = strings(pod, "ConfigMap", "nginx-conf")
    conf["default.conf"] = conf["default.conf"].replace('"hello\\n"', '"hello again\\n"')
    assert pod.apply("ConfigMap", "nginx-conf", conf)
    log.wait_line(r"INFO sent SIGHUP for default\.conf")  # so `nginx -t` as uid 101 passed
    # The old workers finish gracefully and may answer once more with the old page.
    wait_until(lambda: not old_workers & nginx_workers(master), timeout=15, what="the old workers to exit")
    assert steady(lambda: pod.http(8080), (200, "hello again\n"))
    assert psutil.Process(master).is_running()  # reloaded in place, not restarted

    published = in_volume(pod, "conf", "default.conf")
    conf["default.conf"] = conf["default.conf"].replace("return 200", "return")  # invalid
    assert pod.apply("ConfigMap", "nginx-conf", conf)
    log.wait_line(r"ERROR validation rejected the change, nothing applied: exited with code 1")
    assert steady(lambda: pod.http(8080), (200, "hello again\n"))
    assert log.count(r"sent SIGHUP") == 1
    assert in_volume(pod, "conf", "default.conf") == published  # nginx never saw it

    # Deleting the pod: the kubelet's TERM must reach nginx as QUIT, its graceful stop.
    assert nginx.stop() == 0
    log.wait_line(r"signal 3 \(SIGQUIT\) received")
    assert not log.count(r"signal 15 \(SIGTERM\) received")
    assert not log.count(r"^\S+ \S+ \[(emerg|alert|crit)\]")  # nginx's own complaints


# --- tls-secret-reload.yaml ----------------------------------------------------------------

def make_cert(work, name, expired=False) -> dict[str, bytes]:
    """A self-signed EC certificate and its key; `expired` ended in 2020."""
    key, cert = os.path.join(work, f"{name}.key"), os.path.join(work, f"{name}.crt")
    run = lambda *args: subprocess.run(args, check=True, capture_output=True, cwd=work, timeout=30)  # noqa: E731
    run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    if not expired:
        run("openssl", "req", "-x509", "-key", key, "-out", cert, "-days", "30", "-subj", f"/CN={name}")
    else:
        with open(os.path.join(work, "ca.cnf"), "w") as fh:
            fh.write("[ca]\ndefault_ca=self\n[self]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial\n"
                     "default_md=sha256\npolicy=any\n[any]\ncommonName=supplied\n")
        with open(os.path.join(work, "index.txt"), "w"), open(os.path.join(work, "serial"), "w") as fh:
            fh.write("01\n")
        run("openssl", "req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", f"{name}.csr")
        run("openssl", "ca", "-batch", "-notext", "-config", "ca.cnf", "-selfsign", "-keyfile", key,
            "-in", f"{name}.csr", "-out", cert, "-startdate", "20200101000000Z", "-enddate", "20200102000000Z")
    with open(cert, "rb") as c, open(key, "rb") as k:
        return {"tls.crt": c.read(), "tls.key": k.read()}


def der(pair) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pair["tls.crt"].decode())


def prepare_tls(objects, work):
    secret = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "web-tls")
    secret["data"] = {k: base64.b64encode(v).decode() for k, v in make_cert(work, "first").items()}


def check_tls(pod):
    web = pod.container()
    log = web.running
    first = {k: v for k, v in pod.data[("Secret", "web-tls")].items()}
    started = standin(log, "started")
    assert started["cert"] == sha256(der(first))
    app = app_pid(web)
    wait_until(lambda: pod.tls_certificate(8443) == der(first), what="web serving the first certificate")
    wait_until(lambda: status(pod.http(9102, "/readyz")) == 200, what="/readyz 200")

    second = make_cert(pod.work, "second")  # cert-manager renews it
    assert pod.apply("Secret", "web-tls", second)
    log.wait_line(r"INFO sent SIGHUP for tls\.crt, tls\.key")  # the validator could read it
    assert standin(log, "reloaded")["cert"] == sha256(der(second))
    assert steady(lambda: pod.tls_certificate(8443), der(second))
    assert psutil.Process(app).is_running()  # reloaded in place, not restarted

    expired = make_cert(pod.work, "expired", expired=True)
    assert pod.apply("Secret", "web-tls", expired)
    log.wait_line(r"ERROR validation rejected the change, nothing applied: exited with code 1")
    assert steady(lambda: pod.tls_certificate(8443), der(second))
    assert log.count(r"sent SIGHUP") == 1
    assert web.stop() == 0


# --- restart-readiness.yaml ----------------------------------------------------------------

def check_restart(pod):
    api = pod.container()
    log = api.running
    settings = pod.data[("ConfigMap", "api-config")]["settings.yaml"]
    first = standin(log, "started")
    assert first["files"]["config"] == sha256(settings)
    wait_until(lambda: status(pod.http(9102, "/readyz")) == 200, what="/readyz 200 after --ready-delay")
    # The first config proves itself first (--min-uptime): a change meanwhile would wait for it.
    log.wait_line(r"INFO configuration \w+ passed probation", timeout=20)

    conf = strings(pod, "ConfigMap", "api-config")
    conf["settings.yaml"] = conf["settings.yaml"].replace("feature_x: false", "feature_x: true")
    mark = log.mark()
    assert pod.apply("ConfigMap", "api-config", conf)
    # From the stop signal until the new app has been up for --ready-delay, the Service skips it.
    wait_until(lambda: status(pod.http(9102, "/readyz")) == 503, timeout=5, what="/readyz 503 during the restart")
    assert standin(log, "signal", start=mark)["signal"] == "SIGTERM"
    second = standin(log, "started", start=mark)
    assert second["pid"] != first["pid"]
    assert second["files"]["config"] == sha256(conf["settings.yaml"].encode())
    assert second["env"]["CFGSUP_CHANGED"] == "settings.yaml"
    wait_until(lambda: status(pod.http(9102, "/readyz")) == 200, what="/readyz 200 again")
    assert status(pod.http(9102, "/healthz")) == 200
    assert api.stop() == 0


# --- probe-liveness.yaml -------------------------------------------------------------------

def check_probe(pod):
    worker = pod.container()
    log = worker.running
    standin(log, "started")
    app = app_pid(worker)
    wait_until(lambda: status(pod.http(9102, "/healthz")) == 200, what="/healthz 200")

    conf = strings(pod, "ConfigMap", "worker-config")
    conf["worker.toml"] = conf["worker.toml"].replace("concurrency = 4", "concurrency = 8")
    assert pod.apply("ConfigMap", "worker-config", conf)
    health = wait_until(lambda: (a := pod.http(9102, "/healthz")) and a[0] == 503 and a, what="/healthz 503")
    assert "worker.toml" in health[1]
    assert psutil.Process(app).is_running()
    assert not log.count(r'"event": "signal"')  # probe mode leaves the app alone

    # The livenessProbe fails, so the kubelet restarts the container: healthy again.
    assert worker.stop() == 0
    log = worker.start()
    standin(log, "started")
    wait_until(lambda: status(pod.http(9102, "/healthz")) == 200, timeout=15, what="/healthz 200 after the restart")


# --- exit-env-vars.yaml --------------------------------------------------------------------

def check_exit(pod):
    billing = pod.container()
    log = billing.running
    first = standin(log, "started")
    assert (first["env"]["CURRENCY"], first["env"]["RATE_LIMIT"]) == ("EUR", "100")

    conf = strings(pod, "ConfigMap", "billing-env")
    assert pod.apply("ConfigMap", "billing-env", {**conf, "CURRENCY": "USD"})
    assert billing.exit_code(timeout=20) == 0  # --change-exit-code=0, after a graceful stop
    assert standin(log, "signal")["signal"] == "SIGTERM"

    # restartPolicy Always: the kubelet starts the container again, with the new variables.
    log = billing.start()
    assert standin(log, "started")["env"]["CURRENCY"] == "USD"
    assert billing.stop() == 0


# --- verify-rollback.yaml -------------------------------------------------------------------

def metric(pod, name) -> float | None:
    answer = pod.http(9102, "/metrics")
    found = re.search(rf"^{name} (\S+)$", answer[1], re.M) if answer else None
    return float(found.group(1)) if found else None


def check_rollback(pod):
    shop = pod.container()
    log = shop.running
    wait_until(lambda: pod.http(8080) == (200, "shop v1\n"), timeout=20, what="the shop serving v1")
    log.wait_line(r"INFO configuration \w+ passed probation", timeout=20)
    site = strings(pod, "ConfigMap", "shop-nginx")
    # nginx accepts it, but the site's health check fails: --verify never succeeds.
    broken = dict(site, **{"site.conf": site["site.conf"].replace('return 200 "ok\\n"', "return 500")
                           .replace("shop v1", "shop v2")})
    assert broken["site.conf"] != site["site.conf"]
    assert pod.apply("ConfigMap", "shop-nginx", broken)
    log.wait_line(r"INFO sent SIGHUP for site\.conf", timeout=20)  # after the splay, and nginx -t
    log.wait_line(r"ERROR rolled back \w+ -> \w+: --verify did not succeed within 10s", timeout=30)
    wait_until(lambda: steady(lambda: pod.http(8080), (200, "shop v1\n")), timeout=15, what="v1 again")
    assert metric(pod, "cfgsup_rollbacks_total") == 1 and metric(pod, "cfgsup_config_held") == 1
    # A new container (the emptyDir outlives it) starts on the last-known-good as well.
    assert shop.stop() == 0
    log = shop.start()
    log.wait_line(r"WARNING the watched configuration is held back")
    wait_until(lambda: pod.http(8080) == (200, "shop v1\n"), timeout=20, what="the restarted shop on v1")
    assert shop.stop() == 0


# --- sidecar-signal.yaml -------------------------------------------------------------------

def check_sidecar_signal(pod):
    sidecar, nginx = pod.container("cfgsup"), pod.container("nginx")
    log = sidecar.running
    wait_until(lambda: pod.http(8080) == (200, "hello from the sidecar example\n"), timeout=20,
               what="nginx serving the page")
    log.wait_line(r"INFO watching /etc/nginx/conf\.d \(inotify\)")
    wait_until(lambda: status(pod.http(9102, "/readyz")) == 200, what="the sidecar's /readyz 200")
    master = nginx.pid1()
    old_workers = nginx_workers(master)
    conf = strings(pod, "ConfigMap", "web-nginx")
    conf["default.conf"] = conf["default.conf"].replace("hello from", "hello again from")
    assert pod.apply("ConfigMap", "web-nginx", conf)
    log.wait_line(r"INFO sent SIGHUP for default\.conf")  # nginx -t passed in the sidecar
    wait_until(lambda: not old_workers & nginx_workers(master), timeout=15, what="the old workers to exit")
    assert steady(lambda: pod.http(8080), (200, "hello again from the sidecar example\n"))
    assert psutil.Process(master).is_running()  # the master reloaded: found and signalled
    conf["default.conf"] = conf["default.conf"].replace("return 200", "return")  # invalid
    assert pod.apply("ConfigMap", "web-nginx", conf)
    log.wait_line(r"ERROR validation rejected the change, nothing applied: exited with code 1")
    assert steady(lambda: pod.http(8080), (200, "hello again from the sidecar example\n"))
    assert sidecar.stop() == 0  # TERM: a sidecar exits 0, and leaves nginx alone
    assert psutil.Process(master).is_running()
    assert nginx.stop() == 0


# --- sidecar-probe.yaml --------------------------------------------------------------------

def check_sidecar_probe(pod):
    sidecar, worker = pod.container("cfgsup"), pod.container("worker")
    log = sidecar.running
    first = standin(worker.running, "started")
    wait_until(lambda: status(pod.http(9102, "/healthz")) == 200, what="/healthz 200")
    log.wait_line(r"INFO watching")
    conf = strings(pod, "ConfigMap", "worker-config")
    conf["worker.toml"] = conf["worker.toml"].replace("concurrency = 4", "concurrency = 8")
    assert pod.apply("ConfigMap", "worker-config", conf)
    health = wait_until(lambda: (a := pod.http(9102, "/healthz")) and a[0] == 503 and a, what="/healthz 503")
    assert "worker.toml" in health[1]
    # The livenessProbe fails, so the kubelet restarts the worker container; once its new process
    # runs, the sidecar says healthy again (and the kubelet does not restart it a second time).
    assert worker.stop() == 0
    second = standin(worker.start(), "started")
    assert second["files"]["config"] == sha256(conf["worker.toml"].encode()) != first["files"]["config"]
    log.wait_line(r"INFO saw the app's container restarted for worker\.toml")
    assert status(pod.http(9102, "/healthz")) == 200
    assert sidecar.stop() == 0 and worker.stop() == 0


# --- sidecar-webhook.yaml ------------------------------------------------------------------

def prometheus_config(pod) -> str:
    answer = pod.http(9090, "/api/v1/status/config")
    return json.loads(answer[1])["data"]["yaml"] if answer and answer[0] == 200 else ""


def check_sidecar_webhook(pod):
    sidecar, prometheus = pod.container("cfgsup"), pod.container("prometheus")
    log = sidecar.running
    wait_until(lambda: "scrape_interval: 30s" in prometheus_config(pod), timeout=30, what="Prometheus up")
    log.wait_line(r"INFO watching /etc/prometheus \(inotify\)")
    conf = strings(pod, "ConfigMap", "prometheus-config")
    conf["prometheus.yml"] = conf["prometheus.yml"].replace("scrape_interval: 30s", "scrape_interval: 15s")
    assert pod.apply("ConfigMap", "prometheus-config", conf)
    log.wait_line(r"INFO called the webhook\(s\) for prometheus\.yml", timeout=20)
    wait_until(lambda: "scrape_interval: 15s" in prometheus_config(pod), what="Prometheus reloaded")
    conf["prometheus.yml"] = conf["prometheus.yml"].replace("scrape_configs:", "scrape_configs: [")
    assert pod.apply("ConfigMap", "prometheus-config", conf)
    log.wait_line(r"ERROR validation rejected the change, nothing applied: exited with code 1")
    assert log.count(r"called the webhook") == 1
    assert "scrape_interval: 15s" in prometheus_config(pod)
    assert sidecar.stop() == 0 and prometheus.stop() == 0


@dataclasses.dataclass
class Example:
    check: Callable
    prepare: Callable | None = None  # (objects, work dir): real data for placeholder objects
    warnings: tuple[str, ...] = ()  # cfgsup WARNING/ERROR lines the check provokes on purpose


REJECTED = r"ERROR validation rejected the change"
EXPECTED = {
    "nginx-signal-validate.yaml": Example(check_nginx, warnings=(REJECTED,)),
    "tls-secret-reload.yaml": Example(check_tls, prepare=prepare_tls, warnings=(REJECTED,)),
    "restart-readiness.yaml": Example(check_restart),
    "sidecar-signal.yaml": Example(check_sidecar_signal, warnings=(REJECTED,)),
    "sidecar-probe.yaml": Example(check_sidecar_probe),
    "sidecar-webhook.yaml": Example(check_sidecar_webhook, warnings=(REJECTED,)),
    "verify-rollback.yaml": Example(check_rollback, warnings=(r"ERROR rolled back", r"WARNING the watched configuration is held back")),
    "probe-liveness.yaml": Example(check_probe),
    "exit-env-vars.yaml": Example(check_exit),
}


@pytest.fixture
def pods():
    assert not LACKS, f"CI must provide {', '.join(LACKS)} (.ci/run installs the tools)"
    started = []
    yield started
    for pod in started:
        pod.kill()


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_works_as_written(path, tmp_path, pods):
    example = EXPECTED.get(os.path.basename(path))
    assert example, f"{os.path.basename(path)} has no entry in EXPECTED: say how to check it for real"
    docs = documents(path)
    objects = [d for d in docs if d["kind"] in ("ConfigMap", "Secret")]
    if example.prepare:
        example.prepare(objects, str(tmp_path))
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert len(deployments) == 1, "one Deployment per example (give EXPECTED a way to name the others)"
    pod = kubepod.Pod(deployments[0], objects, str(tmp_path / "pod"))
    pods.append(pod)
    pod.start()
    try:
        example.check(pod)
    except AssertionError as exc:  # with what the containers printed, which is what explains it
        output = "\n".join(f"{c.name}[{i}]: {line}" for c in pod.containers
                           for i, run in enumerate(c.runs) for line in run.lines)
        raise AssertionError(f"{exc}\n--- container output:\n{output}") from None
    lines = [line for c in pod.containers for run in c.runs for line in run.lines
             if re.match(r"\[cfgsup \d+\] (WARNING|ERROR)", line)]
    unexpected = [line for line in lines if not any(re.search(p, line) for p in example.warnings)]
    assert not unexpected, "\n".join(unexpected)
