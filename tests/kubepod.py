"""A Kubernetes pod from a shipped manifest, re-enacted on this machine (root, util-linux):

- **Volumes** are made as the kubelet makes them, in a work dir on the host: ConfigMap and
  Secret volumes by the kubelet writer (kubelet.py) with `defaultMode`, item modes, the 0777
  volume dir and, with `fsGroup`, the group ownership, group read bits and setgid the kubelet
  gives; emptyDirs as fresh 0777 dirs (02777 and the fsGroup with one). `apply()` changes a
  ConfigMap or Secret the way `kubectl apply` does, and the kubelet writer projects it.
- **The network**: a pause process holds the pod's own network namespace (only `lo`), so the
  example's ports are its own; the test reaches them with sockets made in that namespace.
- **Each container** gets a private mount namespace (`unshare --mount`) and a pid namespace of
  its own (or the pause's with `shareProcessNamespace`), so its command is PID 1 as in a
  container. Its root (rootfs.py) is a read-only tmpfs made of the host's system dirs (Debian's
  nginx and openssl), the Python that runs cfgsup, this checkout and the volumes at their
  mountPath: nothing else is writable, so /tmp, /run, /var/lib/nginx are read-only unless a
  volume is mounted there (a root that is not declared read-only gets a writable /tmp).
- **The command line is the manifest's, verbatim**, run through `setpriv` with the uid, gid and
  groups the securityContext declares (gid 0 without runAsGroup, as containerd and CRI-O give a
  uid that is not in the image's /etc/passwd; fsGroup and supplementalGroups as supplementary
  groups; no_new_privs for `allowPrivilegeEscalation: false`), in the env the kubelet gives
  (PATH, HOSTNAME, HOME, env and envFrom), with its stdio pipes handed to that uid as runc
  hands them (so /dev/stdout can be opened). `cfgsup` on PATH runs this checkout; an app that
  is not on this machine (`/app/web`) is the stand-in of that name from tests/standins/.
"""
from __future__ import annotations

import base64
import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading

import psutil

from conftest import Running, wait_until
from kubelet import KubeletVolume
from rootfs import root_steps, runtime_dirs

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
POD_PY = os.path.join(HERE, "pod.py")
STANDINS = os.path.join(HERE, "standins")
PATH = "/standins/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS = ("unshare", "nsenter", "setpriv", "nginx", "openssl")
CLONE_NEWNET = 0x40000000


def missing() -> list[str]:
    """What this machine lacks to run a pod: root and the tools, by name."""
    lacks = [] if os.geteuid() == 0 else ["root"]
    return lacks + [tool for tool in TOOLS if not shutil.which(tool, path=PATH)]


def object_data(obj) -> dict[str, bytes]:
    if obj["kind"] == "Secret":
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
        return data
    data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return data


def projection(source, data) -> tuple[dict[str, bytes], dict[str, int], int]:
    """A configMap/secret volume source over an object's data: (payload, item modes, defaultMode)."""
    default = source.get("defaultMode", 0o644)
    items = source.get("items")
    if not items:
        return dict(data), {}, default
    absent = [item["key"] for item in items if item["key"] not in data]
    assert not absent, f"items name keys the object does not have: {absent} (the kubelet would not start the pod)"
    payload = {item["path"]: data[item["key"]] for item in items}
    return payload, {item["path"]: item["mode"] for item in items if "mode" in item}, default


def connect_in(pid: int, port: int, timeout: float = 2.0) -> socket.socket:
    """A TCP connection to 127.0.0.1:port in the network namespace of process `pid`."""
    result = {}

    def inside():  # setns moves only this thread; the socket stays in the pod's namespace
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            result["sock"] = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except OSError as exc:
            result["error"] = exc
        finally:
            os.close(fd)

    thread = threading.Thread(target=inside, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    if "sock" not in result:
        raise result.get("error") or TimeoutError(f"connect to port {port}")
    return result["sock"]


class Container:
    def __init__(self, pod: Pod, spec: dict):
        self.pod, self.spec, self.name = pod, spec, spec["name"]
        self.argv = [*spec.get("command", []), *spec.get("args", [])]
        assert self.argv, f"{self.name}: the test needs the container's command in the manifest"
        self.running: Running | None = None
        self.runs: list[Running] = []

    def identity(self) -> tuple[int, int, list[str]]:
        """(uid, gid, setpriv's options) from the pod's and the container's securityContext."""
        pod_sc = self.pod.spec.get("securityContext") or {}
        sc = {**pod_sc, **(self.spec.get("securityContext") or {})}
        uid, gid = sc.get("runAsUser"), sc.get("runAsGroup", 0)
        assert uid is not None, f"{self.name}: declare runAsUser (the image's user is not known here)"
        assert not (sc.get("runAsNonRoot") and uid == 0), "runAsNonRoot with uid 0: the kubelet refuses"
        groups = [g for g in [pod_sc.get("fsGroup"), *pod_sc.get("supplementalGroups", [])] if g is not None]
        options = [f"--reuid={uid}", f"--regid={gid}"]
        options.append("--groups=" + ",".join(map(str, groups)) if groups else "--clear-groups")
        if sc.get("allowPrivilegeEscalation") is False:
            options.append("--no-new-privs")
        return uid, gid, options

    def env(self) -> dict[str, str]:
        env = {"PATH": PATH, "HOSTNAME": self.pod.name, "HOME": "/"}
        for source in self.spec.get("envFrom", []):
            ref = source.get("configMapRef") or source.get("secretRef")
            kind = "ConfigMap" if "configMapRef" in source else "Secret"
            for key, value in self.pod.data[(kind, ref["name"])].items():
                env[source.get("prefix", "") + key] = value.decode()
        for var in self.spec.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            elif "fieldRef" in var["valueFrom"]:
                field = var["valueFrom"]["fieldRef"]["fieldPath"]
                assert field in ("metadata.name", "metadata.namespace"), f"fieldRef {field} is not re-enacted"
                env[var["name"]] = self.pod.name if field == "metadata.name" else "default"
            else:
                ref = var["valueFrom"].get("configMapKeyRef") or var["valueFrom"]["secretKeyRef"]
                kind = "ConfigMap" if "configMapKeyRef" in var["valueFrom"] else "Secret"
                env[var["name"]] = self.pod.data[(kind, ref["name"])][ref["key"]].decode()
        return env

    def mounts(self) -> list[tuple[str, str, bool]]:
        mounts = [(m["mountPath"], self.pod.volume_dirs[m["name"]], bool(m.get("readOnly")))
                  for m in self.spec.get("volumeMounts", [])]
        declared = {path for path, _src, _ro in mounts}
        if not (self.spec.get("securityContext") or {}).get("readOnlyRootFilesystem") and "/tmp" not in declared:
            mounts.append(("/tmp", self.pod.scratch(f"{self.name}-writable-tmp", 0o1777), False))
        mounts += [(d, d, True) for d in runtime_dirs()]
        mounts.append(("/standins/bin", self.pod.bin_dir, True))
        app = self.argv[self.argv.index("--") + 1] if "--" in self.argv else self.argv[0]
        if os.path.isabs(app) and not os.path.exists(app):
            mounts.append((app, self.pod.standin(app), True))
        elif not os.path.isabs(app) and not shutil.which(app, path=PATH.replace("/standins/bin", self.pod.bin_dir)):
            self.pod.standin(app)  # into the bin dir on PATH
        return mounts

    def start(self) -> Running:
        uid, gid, options = self.identity()
        spec = {"root": self.pod.scratch(f"{self.name}-root-{len(self.runs)}", 0o755),
                "steps": root_steps(self.mounts()), "env": self.env(), "stdio_owner": [uid, gid],
                "argv": [shutil.which("setpriv", path=PATH), *options, "--", *self.argv]}
        spec_path = os.path.join(self.pod.work, f"{self.name}-{len(self.runs)}.json")
        with open(spec_path, "w") as fh:
            json.dump(spec, fh)
        ns = f"/proc/{self.pod.pause_pid}/ns"
        shared = bool(self.pod.spec.get("shareProcessNamespace"))
        args = ["nsenter", f"--net={ns}/net", *([f"--pid={ns}/pid"] if shared else []),
                "unshare", "--mount", "--fork", *([] if shared else ["--pid"]),
                sys.executable, POD_PY, "run", spec_path]
        self.running = Running(args)
        self.runs.append(self.running)
        return self.running

    def pid1(self) -> int | None:
        """The host pid of the container's first process (cfgsup), under nsenter and unshare."""
        try:
            proc = psutil.Process(self.running.pid)
            while proc.name() in ("nsenter", "unshare"):
                kids = proc.children()
                if not kids:
                    return None
                proc = kids[0]
            return proc.pid
        except psutil.NoSuchProcess:
            return None

    def signal(self, signo):
        os.kill(wait_until(self.pid1, timeout=10, what=f"{self.name}'s first process"), signo)

    def exit_code(self, timeout) -> int:
        code = self.running.wait(timeout=timeout)
        return 128 - code if code < 0 else code

    def stop(self) -> int:
        """What the kubelet does: TERM, terminationGracePeriodSeconds, then KILL."""
        self.signal(signal.SIGTERM)
        try:
            return self.exit_code(self.pod.spec.get("terminationGracePeriodSeconds", 30))
        except subprocess.TimeoutExpired:
            self.running.kill_all()
            return 137


class Pod:
    def __init__(self, deployment: dict, objects: list[dict], work: str):
        self.name = deployment["metadata"]["name"]
        self.spec = deployment["spec"]["template"]["spec"]
        self.work = work
        self.data = {(o["kind"], o["metadata"]["name"]): object_data(o) for o in objects
                     if o["kind"] in ("ConfigMap", "Secret")}
        self.bin_dir = self.scratch("standins-bin", 0o755)
        with open(os.path.join(self.bin_dir, "cfgsup"), "w") as fh:
            # What `python -m supervisor` does, from this checkout.
            fh.write(f"#!{sys.executable}\nimport runpy, sys\nsys.path.insert(0, {ROOT!r})\n"
                     "runpy.run_module('supervisor', run_name='__main__', alter_sys=True)\n")
        os.chmod(os.path.join(self.bin_dir, "cfgsup"), 0o755)
        fs_group = (self.spec.get("securityContext") or {}).get("fsGroup")
        self.volumes: dict[str, tuple[str, str, KubeletVolume]] = {}
        self.volume_dirs: dict[str, str] = {}
        for vol in self.spec.get("volumes", []):
            path = os.path.join(work, "volumes", vol["name"])
            if "emptyDir" in vol:
                os.makedirs(path)
                os.chmod(path, 0o777)
                if fs_group is not None:
                    os.chown(path, -1, fs_group)
                    os.chmod(path, 0o2777)
            else:
                assert "configMap" in vol or "secret" in vol, f"volume {vol['name']}: only configMap, secret and emptyDir are re-enacted"
                kind, source = ("ConfigMap", vol["configMap"]) if "configMap" in vol else ("Secret", vol["secret"])
                name = source.get("name") or source["secretName"]
                if (kind, name) not in self.data:  # optional: an empty volume; else no pod at all
                    assert source.get("optional"), f"{kind} {name} is not in the manifest (the pod would not start)"
                    self.data[(kind, name)] = {}
                payload, modes, default = projection(source, self.data[(kind, name)])
                self.volumes[vol["name"]] = (kind, name, KubeletVolume(
                    path, payload, mode=default, modes=modes, fs_group=fs_group, root_mode=0o777))
            self.volume_dirs[vol["name"]] = path
        # Native sidecars (initContainers with restartPolicy Always) start first and keep running,
        # as the kubelet does; init containers that run to completion are not re-enacted.
        inits = self.spec.get("initContainers", [])
        assert all(c.get("restartPolicy") == "Always" for c in inits), \
            "only native sidecars (restartPolicy: Always) among initContainers are re-enacted"
        self.containers = [Container(self, c) for c in [*inits, *self.spec["containers"]]]
        self.pause: Running | None = None
        self.pause_pid = None

    def scratch(self, name, mode) -> str:
        path = os.path.join(self.work, name)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
        return path

    def standin(self, app) -> str:
        """Copy the stand-in for `app` into the bin dir, run by this Python; its path."""
        source = os.path.join(STANDINS, os.path.basename(app))
        assert os.path.isfile(source), f"{app} is not on this machine and tests/standins/ has no stand-in for it"
        target = os.path.join(self.bin_dir, os.path.basename(app))
        with open(source) as src, open(target, "w") as dst:
            dst.write(f"#!{sys.executable}\n" + src.read().split("\n", 1)[1])
        os.chmod(target, 0o755)
        return target

    def apply(self, kind, name, data: dict[str, str | bytes]) -> bool:
        """Replace a ConfigMap's or Secret's data; the kubelet writer projects it into every volume
        made from it. True when some volume was written (an unchanged payload writes nothing)."""
        self.data[(kind, name)] = {k: v.encode() if isinstance(v, str) else v for k, v in data.items()}
        wrote = False
        for vol in self.spec.get("volumes", []):
            if vol["name"] in self.volumes and self.volumes[vol["name"]][:2] == (kind, name):
                source = vol.get("configMap") or vol["secret"]
                payload, _modes, _default = projection(source, self.data[(kind, name)])
                wrote |= self.volumes[vol["name"]][2].write(payload)
        return wrote

    def container(self, name=None) -> Container:
        return next(c for c in self.containers if name in (None, c.name))

    def start(self):
        self.pause = Running(["unshare", "--net", "--pid", "--fork", sys.executable, POD_PY, "pause"])
        self.pause.wait_line(r"^pause ready$")
        self.pause_pid = psutil.Process(self.pause.pid).children()[0].pid
        for container in self.containers:
            container.start()

    def kill(self):
        for container in self.containers:
            for running in container.runs:
                running.kill_all()
        if self.pause:
            self.pause.kill_all()

    def connect(self, port, timeout=2.0) -> socket.socket:
        """A TCP connection to 127.0.0.1:port in the pod's network namespace."""
        return connect_in(self.pause_pid, port, timeout)

    def http(self, port, path="/") -> tuple[int, str] | None:
        """(status, body) of a GET in the pod, or None when nothing answers."""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.sock = self.connect(port)
            conn.request("GET", path)
            response = conn.getresponse()
            result = response.status, response.read().decode("utf-8", "replace")
            conn.close()
            return result
        except (OSError, http.client.HTTPException):
            return None

    def tls_certificate(self, port) -> bytes | None:
        """The DER certificate a TLS server in the pod presents, or None when none answers."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with context.wrap_socket(self.connect(port)) as tls:
                return tls.getpeercert(binary_form=True)
        except (OSError, ssl.SSLError):
            return None
