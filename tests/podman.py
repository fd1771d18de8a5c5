"""podman for tests and benchmarks: its own storage, config and temp folder, runc, cgroupfs, no
network, and a teardown that removes every container, pod, image and folder it made.

    with Podman() as pm:                       # or Podman().close() in a finally
        pm.import_rootfs(tar, "localhost/x:1")
        pm.run("localhost/x:1", "true")        # --rm --network none; CompletedProcess
        running = pm.start("localhost/x:1", "sleep", "60")   # attached, lines as they come
        pod = pm.pod()                          # shares pid and net; pm.start(..., pod=pod)

What this machine needs is in shared/notes/containers.md: runc (crun refuses hybrid cgroups),
cgroupfs, the file events logger, rlimits at or below the hard limits (no CAP_SYS_RESOURCE),
`--network none` (the default bridge changes the host), storage in a temporary folder.
"""
from __future__ import annotations

import itertools
import os
import resource
import shutil
import subprocess
import tempfile

TIMEOUT = 180.0  # any one podman command; builds included


def unavailable() -> str | None:
    """Why containers cannot run here, or None."""
    for tool, package in (("podman", "podman"), ("runc", "runc"), ("buildah", "buildah"),
                          ("busybox", "busybox-static"), ("mmdebstrap", "mmdebstrap"),
                          ("catatonit", "catatonit")):
        if not shutil.which(tool):
            return f"{tool} is not installed (Debian package {package}; .ci/run installs it)"
    if os.geteuid() != 0:
        return "podman tests run as root (rootless podman needs subuids and a user session)"
    return None


class Podman:
    """One podman world in a temporary folder. Every name it hands out starts with `prefix`."""

    def __init__(self, prefix: str = "cfgsup-test"):
        self.root = tempfile.mkdtemp(prefix="cfgsup-podman-")
        self.prefix = prefix
        self._names = itertools.count(1)
        self.running: list = []  # conftest.Running of start()
        self.containers: list[str] = []  # every name handed to run/start, for removal
        self.pods: list[str] = []
        self.env = self._configure()

    def _configure(self) -> dict:
        hard_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        hard_nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        nofile = min(hard_nofile, 1048576) if hard_nofile != resource.RLIM_INFINITY else 1048576
        nproc = min(hard_nproc, 32768) if hard_nproc != resource.RLIM_INFINITY else 32768
        paths = {name: os.path.join(self.root, name) for name in ("graph", "run", "libpod", "tmp")}
        for path in paths.values():
            os.makedirs(path)
        storage = os.path.join(self.root, "storage.conf")
        with open(storage, "w") as fh:
            fh.write(f'[storage]\ndriver = "overlay"\ngraphroot = "{paths["graph"]}"\n'
                     f'runroot = "{paths["run"]}"\n')
        containers = os.path.join(self.root, "containers.conf")
        with open(containers, "w") as fh:
            fh.write("[containers]\n"
                     f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
                     'netns = "none"\n'
                     "[engine]\n"
                     'runtime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
                     f'tmp_dir = "{paths["libpod"]}"\n')
        registries = os.path.join(self.root, "registries.conf")
        with open(registries, "w") as fh:
            fh.write("unqualified-search-registries = []\n")  # never look anything up
        env = dict(os.environ)
        env.update(CONTAINERS_STORAGE_CONF=storage, CONTAINERS_CONF=containers,
                   CONTAINERS_REGISTRIES_CONF=registries, TMPDIR=paths["tmp"])
        return env

    def name(self, kind: str = "c") -> str:
        return f"{self.prefix}-{kind}{next(self._names)}"

    # ---- running podman --------------------------------------------------------------------
    def cmd(self, *args, timeout: float = TIMEOUT, check: bool = True, input: bytes | None = None):
        """`podman ARGS`, output captured; raises with podman's stderr when check fails."""
        proc = subprocess.run(["podman", *args], env=self.env, input=input, capture_output=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}:\n"
                                 + proc.stderr.decode(errors="replace")[-3000:])
        return proc

    def text(self, *args, **kw) -> str:
        return self.cmd(*args, **kw).stdout.decode(errors="replace").strip()

    def run(self, image: str, *command: str, options=(), timeout: float = 60.0):
        """`podman run --rm` to the end; CompletedProcess with .returncode of the container."""
        name = self.name()
        self.containers.append(name)
        return self.cmd("run", "--rm", "--name", name, "--network", "none", *options, image, *command,
                        timeout=timeout, check=False)

    def start(self, image: str, *command: str, options=(), pod: str | None = None, name=None):
        """An attached `podman run`, with the container's output as lines (conftest.Running).
        `.container` is its name; it is removed in close()."""
        from conftest import Running  # here: conftest imports this module's fixtures' module

        name = name or self.name()
        self.containers.append(name)
        net = ["--pod", pod] if pod else ["--network", "none"]
        running = Running(["podman", "run", "--rm", "--name", name, *net, *options, image, *command],
                          env={k: self.env[k] for k in ("CONTAINERS_STORAGE_CONF", "CONTAINERS_CONF",
                                                          "CONTAINERS_REGISTRIES_CONF", "TMPDIR")})
        running.container = name
        self.running.append(running)
        return running

    def remove(self, names, pods=()) -> None:
        """Remove these containers and pods at once (no stop timeout), running or not."""
        if names:
            self.cmd("rm", "-f", "-t", "0", "--ignore", *names, check=False, timeout=60)
        if pods:
            self.cmd("pod", "rm", "-f", "-t", "0", "--ignore", *pods, check=False, timeout=60)

    def wait_running(self, running: Running, timeout: float = 30.0) -> int:
        """The host pid of the container's PID 1, once it is up."""
        from conftest import wait_until

        def pid():
            out = self.cmd("inspect", "--format", "{{.State.Pid}}", running.container,
                           check=False).stdout.decode().strip()
            return int(out) if out.isdigit() and int(out) > 0 else 0

        return wait_until(pid, timeout=timeout, interval=0.05, what=f"{running.container} running")

    def pod(self, share: str = "pid,net") -> str:
        """A pod whose containers share `share` namespaces (its infra container holds them)."""
        name = self.name("pod")
        self.pods.append(name)
        self.cmd("pod", "create", "--name", name, "--share", share, "--network", "none")
        return name

    # ---- images ----------------------------------------------------------------------------
    def import_rootfs(self, source: str, image: str, changes=("ENV PATH=/bin:/usr/bin:/sbin",)) -> str:
        """An image from a root file system: a folder, or a tar file (faster than a pipe)."""
        opts = [arg for change in changes for arg in ("--change", change)]
        if os.path.isdir(source):
            tar = subprocess.run(["tar", "-C", source, "-c", "."], capture_output=True, check=True,
                                 timeout=TIMEOUT).stdout
            self.cmd("import", *opts, "-", image, input=tar)
        else:
            self.cmd("import", *opts, source, image)
        return image

    def build(self, context: str, containerfile: str, image: str, build_args: dict | None = None) -> str:
        """`podman build` without network and without pulling: every FROM is a local image.
        (Not --layers=false: with it, podman 4.3 deletes an image that a stage merely names.)"""
        args = [a for k, v in (build_args or {}).items() for a in ("--build-arg", f"{k}={v}")]
        self.cmd("build", "--pull=never", "--network", "none", "-q",
                 "-f", containerfile, "-t", image, *args, context)
        return image

    # ---- teardown --------------------------------------------------------------------------
    def close(self) -> None:
        """Remove every container, pod and image, unmount what is left, delete the folder."""
        for running in self.running:
            running.kill_all()
        for args in (("pod", "rm", "-af", "-t", "0"), ("rm", "-af", "-t", "0"),
                     ("rmi", "-af"), ("system", "reset", "-f")):
            try:
                self.cmd(*args, check=False, timeout=60)
            except subprocess.TimeoutExpired:
                pass
        self._unmount()
        shutil.rmtree(self.root, ignore_errors=True)

    def _unmount(self) -> None:
        try:
            with open("/proc/self/mounts") as fh:
                points = [line.split()[1] for line in fh]
        except OSError:
            return
        for point in sorted((p for p in points if p.startswith(self.root)), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
