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


def documents(path):
    with open(path) as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def test_every_mode_has_an_example():
    modes = set()
    for path in EXAMPLES:
        for doc in documents(path):
            if doc["kind"] == "Deployment":
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    modes.update(a.split("=", 1)[1] for a in container["command"] if a.startswith("--on-change="))
    assert {"signal", "restart", "probe", "exit"} <= modes
    assert any("tls" in os.path.basename(p) for p in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_manifest_is_valid_kubernetes(path):
    for doc in documents(path):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_manifest_uses_cfgsup_correctly(path):
    deployments = [d for d in documents(path) if d["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for container in pod["containers"]:
            command = container["command"]
            assert command[0] == "cfgsup"
            # The options parse as cfgsup parses them (the mounts do not exist on this machine).
            settings = cli.parse(["--allow-missing", *command[1:]])
            assert not isinstance(settings, int), command
            # The kubelet's SIGKILL must not come before cfgsup's own escalation.
            assert pod["terminationGracePeriodSeconds"] > settings.stop_timeout
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            for watch in settings.watches:
                assert watch in mounts, f"{watch} is not a mounted volume"
                assert "subPath" not in mounts[watch], "subPath mounts never update"
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            probes = [container.get(k) for k in ("readinessProbe", "livenessProbe") if container.get(k)]
            if settings.health_addr:
                assert settings.health_addr[0] == "0.0.0.0"
                assert ports.get("cfgsup") == settings.health_addr[1]
            for probe in probes:
                assert probe["httpGet"]["port"] == "cfgsup" and probe["httpGet"]["path"] in ("/healthz", "/readyz")
            if settings.on_change == "probe":
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            if settings.on_change == "restart":
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


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
