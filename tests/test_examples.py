"""The shipped Kubernetes manifests and Dockerfile: valid, and consistent with cfgsup's options."""
from __future__ import annotations

import glob
import json
import os
import re

import kubernetes_validate
import pytest
import yaml

from supervisor import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.yaml")))
RULES = os.path.join(ROOT, "examples", "prometheus-rules.yaml")
MANIFESTS = [p for p in EXAMPLES if p != RULES]  # the Kubernetes objects of the core API


def documents(path):
    with open(path) as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def parse_with_stand_in_paths(command, tmp_path):
    """cfgsup's own parse of a manifest's command line; a --stage SRC must exist at start, so it
    is pointed at a scratch directory of the same name (the mounts do not exist here)."""
    args = []
    for arg in command[1:]:
        if arg.startswith("--stage="):
            src, dest = arg[len("--stage="):].rsplit(":", 1)
            os.makedirs(str(tmp_path) + src, exist_ok=True)
            arg = f"--stage={tmp_path}{src}:{tmp_path}{dest}"
        args.append(arg)
    return cli.parse(["--allow-missing", *args])


def test_every_mode_has_an_example():
    modes = set()
    for path in EXAMPLES:
        for doc in documents(path):
            if doc["kind"] == "Deployment":
                spec = doc["spec"]["template"]["spec"]
                for container in [*spec.get("initContainers", []), *spec["containers"]]:
                    modes.update(a.split("=", 1)[1] for a in container["command"] if a.startswith("--on-change="))
    assert {"signal", "restart", "probe", "exit"} <= modes
    assert any("tls" in os.path.basename(p) for p in EXAMPLES)


@pytest.mark.parametrize("path", MANIFESTS, ids=os.path.basename)
def test_manifest_is_valid_kubernetes(path):
    for doc in documents(path):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=os.path.basename)
def test_manifest_uses_cfgsup_correctly(path, tmp_path):
    deployments = [d for d in documents(path) if d["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        everyone = [*pod.get("initContainers", []), *pod["containers"]]
        ours = [c for c in everyone if c["command"][0] == "cfgsup"]
        assert len(ours) == 1, "one cfgsup per pod: the entrypoint, or a sidecar"
        for container in ours:
            command = container["command"]
            # The options parse as cfgsup parses them (the mounts do not exist on this machine).
            settings = parse_with_stand_in_paths(command, tmp_path)
            assert not isinstance(settings, int), command
            if not settings.command:  # a sidecar: a native one, beside the app
                assert container in pod.get("initContainers", []) and container["restartPolicy"] == "Always"
                if settings.target:  # it must see the app's processes
                    assert pod.get("shareProcessNamespace") is True
                others = [c for c in everyone if c is not container]
                assert others and all(c["command"][0] != "cfgsup" for c in others)
                if settings.on_change == "probe":  # the app's livenessProbe asks cfgsup's /healthz
                    probes = [c["livenessProbe"]["httpGet"] for c in others if "livenessProbe" in c]
                    assert probes == [{"path": "/healthz", "port": settings.health_addr[1]}]
            # The kubelet's SIGKILL must not come before cfgsup's own escalation.
            assert pod["terminationGracePeriodSeconds"] > settings.stop_timeout
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            watched = [a.split("=", 1)[1] for a in command if a.startswith("--watch=")]
            stages = [a[len("--stage="):].rsplit(":", 1) for a in command if a.startswith("--stage=")]
            for watch in watched + [src for src, _dest in stages]:
                assert watch in mounts, f"{watch} is not a mounted volume"
                assert "subPath" not in mounts[watch], "subPath mounts never update"
            for src, dest in stages:
                source = volumes[mounts[src]["name"]]
                assert {"configMap", "secret", "projected"} & set(source), f"{src}: stage a mounted ConfigMap or Secret"
                assert dest in mounts and "emptyDir" in volumes[mounts[dest]["name"]], \
                    f"{dest}: the stage is an emptyDir, which outlives the container and keeps the last-known-good"
                assert not mounts[dest].get("readOnly"), f"{dest}: cfgsup writes the stage"
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            probes = [container.get(k) for k in ("readinessProbe", "livenessProbe") if container.get(k)]
            if settings.health_addr:
                assert settings.health_addr[0] == "0.0.0.0"
                assert ports.get("cfgsup") == settings.health_addr[1]
            for probe in probes:
                assert probe["httpGet"]["port"] == "cfgsup" and probe["httpGet"]["path"] in ("/healthz", "/readyz")
            if settings.on_change == "probe" and settings.command:
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            if settings.on_change == "restart" and settings.command:
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


PROMTOOL = __import__("shutil").which("promtool")

# For each alert, series under which it must fire and a moment it must not (promtool's unit-test
# format), so the rules are known to say what they mean, not only to parse.
SERIES = {
    'cfgsup_rollbacks_total{pod="shop-1"}': "0 0 1 1 1",
    'cfgsup_config_held{pod="shop-1"}': "1x15",
    'cfgsup_validation_rejections_total{pod="shop-1"}': "0 1 1",
    'cfgsup_child_restarts_total{pod="api-1"}': "0 2 4 6 8",
}
FIRES = {"CfgsupRolledBack": ("shop-1", "4m", "1m"), "CfgsupConfigHeldBack": ("shop-1", "12m", "5m"),
         "CfgsupValidationRejected": ("shop-1", "2m", "0m"), "CfgsupAppRestarting": ("api-1", "4m", "1m")}


def rule_tests(rule) -> str:
    checks = []
    for entry in rule["spec"]["groups"][0]["rules"]:
        pod, fires, quiet = FIRES[entry["alert"]]
        notes = {k: v.replace("{{ $labels.pod }}", pod) for k, v in entry["annotations"].items()}
        checks.append({"eval_time": fires, "alertname": entry["alert"], "exp_alerts": [
            {"exp_labels": {"pod": pod, **entry["labels"]}, "exp_annotations": notes}]})
        checks.append({"eval_time": quiet, "alertname": entry["alert"], "exp_alerts": []})
    return yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": [{"series": k, "values": v} for k, v in SERIES.items()],
        "alert_rule_test": checks}]})


@pytest.mark.skipif(not PROMTOOL and not os.environ.get("CI"), reason="needs promtool (Debian package prometheus)")
def test_prometheus_rules_pass_promtool_and_fire_when_they_should(tmp_path):
    assert PROMTOOL, "CI installs promtool (.ci/run)"
    (rule,) = documents(RULES)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    (tmp_path / "tests.yaml").write_text(rule_tests(rule))
    import subprocess

    for args in (["check", "rules", "rules.yaml"], ["test", "rules", "tests.yaml"]):
        done = subprocess.run([PROMTOOL, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    names = {r["alert"] for r in rule["spec"]["groups"][0]["rules"]}
    assert names == {"CfgsupRolledBack", "CfgsupConfigHeldBack", "CfgsupValidationRejected", "CfgsupAppRestarting"}


def instructions_of(path):
    with open(os.path.join(ROOT, path)) as fh:
        text = fh.read().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


# file: (its final ENTRYPOINT, the default of its ARG BASE)
DOCKERFILES = {
    "Dockerfile.example": (["cfgsup", "--watch", "/etc/config", "--"], r"python:3\.\d+-slim"),
    "Dockerfile.bundle.example": (["/opt/cfgsup/cfgsup", "--watch", "/etc/config", "--"], r"debian:\w+-slim"),
    "packaging/Containerfile": (["/opt/cfgsup/cfgsup"], r"docker\.io/library/busybox:[\w.-]+"),
}


@pytest.mark.parametrize("path", DOCKERFILES)
def test_dockerfile_shape(path):
    expected_entrypoint, base_default = DOCKERFILES[path]
    instructions = instructions_of(path)
    args = dict(line[len("ARG "):].split("=", 1) for line in instructions if line.startswith("ARG ") and "=" in line)
    assert re.fullmatch(base_default, args["BASE"]), "the base is a build argument with this default"
    froms = [line for line in instructions if line.startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage"
    assert froms[-1] == "FROM ${BASE}"
    assert all(line.split()[1].startswith("${") for line in froms), "every stage from a build argument"
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    entrypoint = [line for line in instructions if line.startswith("ENTRYPOINT ")]
    assert len(entrypoint) == 1
    assert json.loads(entrypoint[0][len("ENTRYPOINT "):]) == expected_entrypoint
    cmd = [line for line in instructions if line.startswith("CMD ")]
    assert len(cmd) == 1 and isinstance(json.loads(cmd[0][len("CMD "):]), list)  # exec form too
    assert instructions.index(entrypoint[0]) > instructions.index(next(i for i in instructions if i.startswith("USER ")))
    # Self-contained: everything copied from the build context is in the checkout, or is the
    # bundle that packaging/bundle.sh writes.
    for line in instructions:
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                if not source.startswith("--") and source != "." and not source.startswith("dist/cfgsup"):
                    assert os.path.exists(os.path.join(ROOT, source)), f"{path}: {source} is not in the checkout"


def test_demo_app_is_executable():
    assert os.access(os.path.join(ROOT, "examples", "demo-app", "run"), os.X_OK)
