"""The re-enacted pod (kubepod.py) gives a container what the kubelet and the runtime give it, no
more: the declared uid, gid and groups, the kubelet's modes and ownership on its volumes, a
read-only root where only volumes can be written, its own pid and network namespaces. The
example runs (test_examples_run.py) are only as honest as this."""
from __future__ import annotations

import base64
import importlib.metadata
import os
import re

import pytest

import kubepod

LACKS = kubepod.missing()
pytestmark = pytest.mark.skipif(bool(LACKS) and not os.environ.get("CI"),
                                reason=f"a test pod needs {', '.join(LACKS)}")

SCRIPT = r"""
echo "ids=$(id -u) $(id -g) $(id -G)"
echo "pid=$$"
echo "nnp=$(grep NoNewPrivs /proc/self/status | cut -f2)"
echo "links=$(grep -c : /proc/net/dev)"
echo "secret=$(stat -c '%a %u:%g' /etc/creds/..data/token) dir=$(stat -c '%a %u:%g' /etc/creds)"
echo "item=$(stat -Lc '%a %u:%g' /etc/app/conf/nested/a.conf) $(cat /etc/app/conf/nested/a.conf)"
echo "plain=$(stat -Lc '%a %u:%g' /etc/plain/a.conf)"
for path in /run/x /tmp/x /var/lib/x /etc/x /etc/creds/x /usr/x /x /dev/x; do
  if touch "$path" 2>/dev/null; then echo "writable=$path"; fi
done
touch /scratch/x && echo "scratch=$(stat -c '%u:%g' /scratch/x)"
touch /dev/shm/x && echo "shm=$(ls /dev/shm)"
echo "env=$HOSTNAME $HOME $FROM_MAP $LITERAL"
"""


def manifest():
    return {
        "metadata": {"name": "probe-pod"},
        "spec": {"template": {"spec": {
            "terminationGracePeriodSeconds": 5,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 101, "runAsGroup": 102,
                                "fsGroup": 2000, "supplementalGroups": [3000]},
            "containers": [{
                "name": "probe", "command": ["sh", "-c", SCRIPT],
                "env": [{"name": "LITERAL", "value": "lit"},
                        {"name": "FROM_MAP", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "a.conf"}}}],
                "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
                "volumeMounts": [{"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
                                 {"name": "conf", "mountPath": "/etc/app/conf", "readOnly": True},
                                 {"name": "plain", "mountPath": "/etc/plain", "readOnly": True},
                                 {"name": "scratch", "mountPath": "/scratch"}],
            }],
            "volumes": [
                {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
                {"name": "conf", "configMap": {"name": "conf", "items": [
                    {"key": "a.conf", "path": "nested/a.conf", "mode": 0o600}]}},
                {"name": "plain", "configMap": {"name": "conf"}},
                {"name": "scratch", "emptyDir": {}},
            ],
        }}},
    }


def objects():
    return [{"kind": "Secret", "metadata": {"name": "creds"},
             "data": {"token": base64.b64encode(b"s3cret").decode()}},
            {"kind": "ConfigMap", "metadata": {"name": "conf"}, "data": {"a.conf": "v1"}}]


@pytest.fixture
def pod(tmp_path):
    assert not LACKS, f"CI must provide {', '.join(LACKS)} (.ci/run installs the tools)"
    made = kubepod.Pod(manifest(), objects(), str(tmp_path / "pod"))
    yield made
    made.kill()


def facts(pod) -> dict[str, list[str]]:
    pod.start()
    container = pod.container()
    assert container.exit_code(timeout=20) == 0, container.running.text()
    found: dict[str, list[str]] = {}
    for line in container.running.lines:
        key, _, value = line.partition("=")
        found.setdefault(key, []).append(value)
    return found


def test_a_container_gets_what_the_kubelet_gives_and_no_more(pod):
    assert not os.path.exists("/etc/app") and not os.path.exists("/etc/creds")
    seen = facts(pod)
    assert seen["ids"] == ["101 102 102 2000 3000"]  # runAsGroup, then fsGroup and supplementalGroups
    assert seen["pid"] == ["1"]  # the command is the container's first process
    assert seen["nnp"] == ["1"]  # allowPrivilegeEscalation: false
    assert seen["links"] == ["1"]  # the pod's own network namespace: only lo
    # fsGroup: the kubelet's root-owned files get the group and group read, dirs setgid.
    assert seen["secret"] == ["440 0:2000 dir=2777 0:2000"]
    assert seen["item"] == ["640 0:2000 v1"]  # item path and mode, plus group read
    assert seen["plain"] == ["644 0:2000"]
    # Read-only root: nothing but the emptyDir can be written, not even /tmp or /run.
    assert "writable" not in seen, seen.get("writable")
    assert seen["scratch"] == ["101:2000"]  # setgid emptyDir: new files get the fsGroup
    assert seen["shm"] == ["x"]  # a /dev/shm of its own: empty but for what it wrote
    assert seen["env"] == ["probe-pod / v1 lit"]
    assert not os.path.exists("/etc/app") and not os.path.exists("/etc/creds")  # host untouched


def test_a_change_is_projected_by_the_kubelet_writer(pod):
    before = os.readlink(os.path.join(pod.volume_dirs["plain"], "..data"))
    assert not pod.apply("ConfigMap", "conf", {"a.conf": "v1"})  # unchanged: nothing written
    assert pod.apply("ConfigMap", "conf", {"a.conf": "v2"})
    assert os.readlink(os.path.join(pod.volume_dirs["plain"], "..data")) != before
    assert facts(pod)["item"] == ["640 0:2000 v2"]


def test_cfgsup_alone_is_this_checkout(tmp_path):
    """A container whose command is cfgsup itself (sidecar mode has no app after `--`)."""
    assert not LACKS, f"CI must provide {', '.join(LACKS)} (.ci/run installs the tools)"
    spec = manifest()
    spec["spec"]["template"]["spec"]["containers"][0]["command"] = ["cfgsup", "--version"]
    pod = kubepod.Pod(spec, objects(), str(tmp_path / "pod"))
    try:
        pod.start()
        container = pod.container()
        assert container.exit_code(timeout=20) == 0, container.running.text()
        assert container.running.wait_line(re.escape(importlib.metadata.version("cfgsup")))
    finally:
        pod.kill()
