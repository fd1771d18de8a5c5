"""The README's cfgsup command lines, run for real as the one container of a re-enacted pod
(kubepod.py, as tests/test_examples_run.py runs the examples): the command exactly as the README
shows it, read from README.md itself (readme.py), as root (the README implies no other user), on
a read-only root. The pod around it is what the command implies: a ConfigMap at the watched path
(`--watch PATH`, or SRC of `--stage`), an emptyDir at DEST, emptyDirs where the app writes (nginx's
/run, /var/log/nginx and /var/lib/nginx, Prometheus's storage), and a stand-in for `myapp`. The
test then changes the ConfigMap the way the kubelet does and checks what the README says the
command does.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
from typing import Callable

import psutil
import pytest

import kubepod
import readme
from conftest import wait_until
from test_examples_run import (in_volume, nginx_workers, prometheus_config, standin, status, steady,
                               strings)

LACKS = kubepod.missing()
pytestmark = pytest.mark.skipif(bool(LACKS) and not os.environ.get("CI"),
                                reason=f"running the README's commands for real needs {', '.join(LACKS)}")

NGINX_WRITES = ("/run", "/var/log/nginx", "/var/lib/nginx")  # pid file, logs, temp dirs (as root)
SITE = 'server {\n    listen 8080;\n    location / { return 200 "hello\\n"; }\n}\n'
# For --stage: nginx's main config in the ConfigMap, including the site by a relative path, so
# the validator's `-c $CFGSUP_CANDIDATE/nginx.conf` checks the candidate's own site.
MAIN = "events {}\nhttp {\n    include /etc/nginx/mime.types;\n    include default.conf;\n}\n"
HEALTHY = ('server {\n    listen 8080;\n    location / { return 200 "hello\\n"; }\n'
           '    location /healthz { return 200 "ok\\n"; }\n}\n')
PROMETHEUS = ("global:\n  scrape_interval: 30s\nscrape_configs:\n  - job_name: prometheus\n"
              "    static_configs:\n      - targets: [\"127.0.0.1:9090\"]\n")
REJECTED = r"ERROR validation rejected the change"


def option(argv, flag) -> str | None:
    """The value of cfgsup's option `flag` in a command line (before its `--`)."""
    own = argv[:argv.index("--")] if "--" in argv else argv
    for i, arg in enumerate(own):
        if arg == flag:
            return own[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def deployment(argv, writable) -> dict:
    """A one-container pod for a command line: the ConfigMap `config` at the watched path (or
    at SRC of --stage), emptyDirs at DEST and at `writable`; uid 0."""
    stage = option(argv, "--stage")
    source, dests = (stage.split(":")[0], stage.split(":")[1:]) if stage else (option(argv, "--watch"), [])
    mounts = [{"name": "config", "mountPath": source, "readOnly": True}] if source else []
    volumes = [{"name": "config", "configMap": {"name": "config"}}] if source else []
    for i, path in enumerate([*dests, *writable]):
        mounts.append({"name": f"empty{i}", "mountPath": path})
        volumes.append({"name": f"empty{i}", "emptyDir": {}})
    container = {"name": "app", "command": argv, "volumeMounts": mounts}
    spec = {"securityContext": {"runAsUser": 0}, "containers": [container], "volumes": volumes}
    return {"metadata": {"name": "readme"}, "spec": {"template": {"spec": spec}}}


def nginx_master(container) -> int:
    return wait_until(lambda: next((p.pid for p in psutil.Process(container.pid1()).children()
                                    if p.name() == "nginx"), None), what="the nginx master")


def reloaded_in_place(pod, container, change, page):
    """Apply `change` to the ConfigMap; nginx serves `page` from its same master afterwards."""
    master = nginx_master(container)
    old_workers = nginx_workers(master)
    assert pod.apply("ConfigMap", "config", change)
    container.running.wait_line(r"INFO sent SIGHUP for default\.conf")
    # The old workers finish gracefully and may answer once more with the old page.
    wait_until(lambda: not old_workers & nginx_workers(master), timeout=15, what="the old workers to exit")
    assert steady(lambda: pod.http(8080), (200, page))
    assert nginx_master(container) == master  # reloaded, not restarted


# --- the checks, one per README command --------------------------------------------------

def check_headline(pod):
    nginx = pod.container()
    wait_until(lambda: pod.http(8080) == (200, "hello\n"), timeout=20, what="nginx serving the page")
    nginx.running.wait_line(r"INFO watching /etc/nginx/conf\.d \(inotify\)")
    site = strings(pod, "ConfigMap", "config")
    reloaded_in_place(pod, nginx, {"default.conf": site["default.conf"].replace("hello", "hello again")},
                      "hello again\n")
    assert nginx.stop() == 0


def check_pid1(pod):
    app = pod.container()
    log = app.running
    standin(log, "started")
    pid1 = app.pid1()
    with open(f"/proc/{pid1}/status") as fh:
        assert re.search(r"^NSpid:.*\s1$", fh.read(), re.M), "cfgsup is PID 1 of the container"
    child = psutil.Process(pid1).children()[0]
    assert child.cmdline()[-2:] == ["/standins/bin/myapp", "--flag"]  # the stand-in, run by its #! line
    app.signal(signal.SIGUSR1)  # forwarded
    assert standin(log, "signal")["signal"] == "SIGUSR1"
    # An orphan in the container's pid namespace is re-parented to cfgsup, which reaps it.
    subprocess.run(["nsenter", f"--target={pid1}", "--pid", "--", "sh", "-c", "sleep 1 & exit 0"],
                   check=True, timeout=10)
    sleepers = lambda: [p for p in psutil.Process(pid1).children() if p.name() == "sleep"]  # noqa: E731
    wait_until(sleepers, timeout=5, what="the orphan adopted by cfgsup")
    wait_until(lambda: not sleepers(), timeout=10, what="the orphan reaped (no zombie left)")
    mark = log.mark()
    assert app.stop() == 0  # the graceful stop: TERM to the app, which exits 0
    assert standin(log, "signal", start=mark)["signal"] == "SIGTERM"
    # The same command with an app that does not stop on TERM: the group gets SIGKILL once the
    # default timeout (10 s) has run out, and cfgsup exits as the app did.
    app.spec["env"] = [{"name": "STANDIN_IGNORE", "value": "TERM"}]
    log = app.start()
    standin(log, "started")
    assert app.stop() == 128 + signal.SIGKILL
    assert standin(log, "signal")["signal"] == "SIGTERM"
    log.wait_line(r"did not stop within 10s: SIGKILL to its group")


def check_restart(pod):
    app = pod.container()
    log = app.running
    first = standin(log, "started")
    assert "CFGSUP_CHANGED" not in first["env"]
    log.wait_line(r"INFO watching /etc/config \(inotify\)")
    mark = log.mark()
    assert pod.apply("ConfigMap", "config", {"app.conf": "v2\n"})
    assert standin(log, "signal", start=mark)["signal"] == "SIGTERM"
    second = standin(log, "started", start=mark)
    assert second["pid"] != first["pid"]
    assert second["env"]["CFGSUP_CHANGED"] == "app.conf"
    assert app.stop() == 0


def check_validate(pod):
    nginx = pod.container()
    log = nginx.running
    wait_until(lambda: pod.http(8080) == (200, "hello\n"), timeout=20, what="nginx serving the page")
    log.wait_line(r"INFO watching /etc/nginx/conf\.d \(inotify\)")
    site = strings(pod, "ConfigMap", "config")["default.conf"]
    reloaded_in_place(pod, nginx, {"default.conf": site.replace("hello", "hello again")}, "hello again\n")
    assert pod.apply("ConfigMap", "config", {"default.conf": site.replace("return 200", "return")})
    log.wait_line(r"ERROR validation rejected the change, nothing applied: exited with code 1")
    assert steady(lambda: pod.http(8080), (200, "hello again\n"))
    assert log.count(r"sent SIGHUP") == 1
    assert nginx.stop() == 0


def check_webhook(pod):
    prometheus = pod.container()
    log = prometheus.running
    wait_until(lambda: "scrape_interval: 30s" in prometheus_config(pod), timeout=30, what="Prometheus up")
    log.wait_line(r"INFO watching /etc/prometheus \(inotify\)")
    conf = strings(pod, "ConfigMap", "config")
    conf["prometheus.yml"] = conf["prometheus.yml"].replace("scrape_interval: 30s", "scrape_interval: 15s")
    assert pod.apply("ConfigMap", "config", conf)
    log.wait_line(r"INFO called the webhook\(s\) for prometheus\.yml", timeout=20)
    wait_until(lambda: "scrape_interval: 15s" in prometheus_config(pod), what="Prometheus reloaded")
    assert prometheus.stop() == 0


def check_stage(pod):
    nginx = pod.container()
    log = nginx.running
    dest_path = option(nginx.argv, "--stage").split(":")[1]
    dest = next(m["name"] for m in nginx.spec["volumeMounts"] if m["mountPath"] == dest_path)
    wait_until(lambda: pod.http(8080) == (200, "hello\n"), timeout=20, what="nginx serving the page")
    log.wait_line(r"INFO configuration \w+ passed probation", timeout=30)  # --min-uptime, --verify
    conf = strings(pod, "ConfigMap", "config")
    published = in_volume(pod, dest, "default.conf")
    # A broken candidate: rejected, and DEST (what nginx reads) never holds it. Had the validator
    # checked the live config instead of the candidate, it would have passed.
    assert pod.apply("ConfigMap", "config", {**conf, "default.conf": conf["default.conf"].replace("return 200", "return")})
    log.wait_line(r"ERROR validation rejected the change, nothing applied: exited with code 1")
    assert in_volume(pod, dest, "default.conf") == published
    assert steady(lambda: pod.http(8080), (200, "hello\n"))
    # A valid config that breaks the health check: published and loaded, then --verify fails
    # until --verify-timeout (default 30 s) and the last-known-good comes back by itself.
    broken = conf["default.conf"].replace('"hello\\n"', '"hello v2\\n"').replace('return 200 "ok\\n"', "return 500")
    assert pod.apply("ConfigMap", "config", {**conf, "default.conf": broken})
    log.wait_line(r"INFO sent SIGHUP for default\.conf")  # the validator passed the candidate
    wait_until(lambda: pod.http(8080) == (200, "hello v2\n"), timeout=15, what="nginx serving v2")
    log.wait_line(r"ERROR rolled back \w+ -> \w+: --verify did not succeed within 30s", timeout=50)
    wait_until(lambda: steady(lambda: pod.http(8080), (200, "hello\n")), timeout=15, what="the page back")
    assert in_volume(pod, dest, "default.conf") == published
    assert nginx.stop() == 0


@dataclasses.dataclass
class Command:
    check: Callable
    config: dict[str, str]  # the ConfigMap's data, at the watched path
    writable: tuple[str, ...] = ()  # emptyDirs where the app writes
    warnings: tuple[str, ...] = ()  # cfgsup WARNING/ERROR lines the check provokes on purpose
    needs: tuple[str, ...] = ()  # programs the command runs, beyond what every pod needs


COMMANDS = {
    "headline": Command(check_headline, {"default.conf": SITE}, NGINX_WRITES),
    "pid1": Command(check_pid1, {}, warnings=(r"WARNING pid \d+ did not stop within 10s",)),
    "restart": Command(check_restart, {"app.conf": "v1\n"}),
    "validate": Command(check_validate, {"default.conf": SITE}, NGINX_WRITES, (REJECTED,)),
    "webhook": Command(check_webhook, {"prometheus.yml": PROMETHEUS}, ("/prometheus",), needs=("prometheus",)),
    "stage": Command(check_stage, {"nginx.conf": MAIN, "default.conf": HEALTHY}, NGINX_WRITES,
                     (REJECTED, r"ERROR rolled back", r"WARNING the watched configuration is held back"),
                     needs=("curl",)),
}


@pytest.fixture
def run_readme_command(tmp_path):
    assert not LACKS, f"CI must provide {', '.join(LACKS)} (.ci/run installs the tools)"
    pods = []

    def run(name):
        spec = COMMANDS[name]
        lacks = [tool for tool in spec.needs if not shutil.which(tool, path=kubepod.PATH)]
        if lacks and not os.environ.get("CI"):
            pytest.skip(f"this README command needs {', '.join(lacks)}")
        assert not lacks, f"CI must provide {', '.join(lacks)} (.ci/run installs it)"
        argv = readme.argv(name)
        assert argv[0] == "cfgsup", argv
        configmap = {"kind": "ConfigMap", "metadata": {"name": "config"}, "data": spec.config}
        pod = kubepod.Pod(deployment(argv, spec.writable), [configmap], str(tmp_path / "pod"))
        pods.append(pod)
        pod.start()
        try:
            spec.check(pod)
        except AssertionError as exc:  # with what the container printed, which is what explains it
            output = "\n".join(f"[{i}] {line}" for c in pod.containers for i, r in enumerate(c.runs) for line in r.lines)
            raise AssertionError(f"{exc}\n--- `{readme.command(name)}` printed:\n{output}") from None
        lines = [line for c in pod.containers for r in c.runs for line in r.lines
                 if re.match(r"\[cfgsup \d+\] (WARNING|ERROR)", line)]
        unexpected = [line for line in lines if not any(re.search(p, line) for p in spec.warnings)]
        assert not unexpected, "\n".join(unexpected)

    yield run
    for pod in pods:
        pod.kill()


def test_headline_reloads_nginx_on_a_change(run_readme_command):
    run_readme_command("headline")


def test_pid1_only_reaps_forwards_and_stops(run_readme_command):
    run_readme_command("pid1")


def test_restart_on_a_change(run_readme_command):
    run_readme_command("restart")


def test_validate_then_signal(run_readme_command):
    run_readme_command("validate")


def test_webhook_reloads_prometheus(run_readme_command):
    run_readme_command("webhook")


def test_stage_validates_the_candidate_and_rolls_back(run_readme_command):
    run_readme_command("stage")
