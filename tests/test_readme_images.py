"""The README's image commands ("In an image"), run as written, and what it says they give.

There is no Docker engine here: the `docker` the commands call is tests/shims/docker, which is
podman (CLI-compatible) in the session's podman world (tests/podman.py), offline. The commands
run in the build context the session fixtures built their images from (a copy of the checkout
with the bundle in dist/cfgsup and offline wheels in ./wheels), with the bases' default names
given to the same local images, so podman's layer cache serves every step and nothing is built
twice. Like the other container tests, these skip outside CI when podman is missing and always
run under CI=true.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shlex
import stat
from importlib.metadata import version

import pytest

import images
import readme
from conftest import Running, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
SHIMS = os.path.join(HERE, "shims")
# The bases the Dockerfiles name by default, and the local image that stands in for each.
STAND_INS = {"docker.io/library/python:3.12-slim": "pybase",
             "docker.io/library/debian:bookworm-slim": "pybase",
             "docker.io/library/busybox:1.36-musl": "busybox"}


@pytest.fixture(scope="session")
def docker(podman_world, built):
    """shell(line): `sh -c line` in the build context, with the `docker` shim first on PATH."""
    for name, key in STAND_INS.items():
        podman_world.cmd("tag", built[key], name)

    def shell(line) -> Running:
        env = {k: podman_world.env[k] for k in ("CONTAINERS_STORAGE_CONF", "CONTAINERS_CONF",
                                                 "CONTAINERS_REGISTRIES_CONF", "TMPDIR")}
        env["PATH"] = SHIMS + os.pathsep + os.environ["PATH"]
        running = Running(["sh", "-c", line], env=env, cwd=built["context"])
        podman_world.running.append(running)  # killed at the session's end if still there
        return running

    return shell


def container_of(podman, image) -> str:
    """The running container of `image` (the README's commands name none), removed at the end."""
    found = wait_until(lambda: podman.text("ps", "-q", "--filter", f"ancestor={image}").split(),
                       timeout=30, what=f"a container of {image}")
    assert len(found) == 1, found
    podman.containers.append(found[0])
    return found[0]


def inspect(podman, image, field):
    return json.loads(podman.text("image", "inspect", "--format", "{{json .Config.%s}}" % field, image))


def host_pid(podman, container) -> int:
    return int(podman.text("inspect", "--format", "{{.State.Pid}}", container))


def uid_of(pid) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(re.search(r"^Uid:\s+(\d+)", fh.read(), re.M).group(1))


def cmdline(pid) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().decode().split("\0")[:-1]


def test_dockerfile_example_builds_and_runs(docker, podman):
    line = readme.command("image-pip")  # docker build -f Dockerfile.example -t demo . && docker run --rm demo
    image = "localhost/" + shlex.split(line)[shlex.split(line).index("-t") + 1] + ":latest"
    running = docker(line)
    try:
        running.wait_line(r"^demo-app: started$", timeout=300)
        running.wait_line(r"^demo-app: read greeting \(6 bytes\)$")  # names its config files at start
        running.wait_line(r"INFO watching /etc/config \(inotify\)")
        # What the README says the image is: cfgsup from /opt/cfgsup-venv as the exec-form
        # entrypoint (PID 1, no shell), the demo as CMD, a non-root user (uid 10001).
        entrypoint = json.loads(readme.prose_code(r"^ENTRYPOINT \[\"cfgsup\"").split(" ", 1)[1])
        assert inspect(podman, image, "Entrypoint") == entrypoint
        assert inspect(podman, image, "Cmd") == ["/app/run"]
        container = container_of(podman, image)
        pid1 = host_pid(podman, container)
        assert cmdline(pid1)[1:] == ["/opt/cfgsup-venv/bin/cfgsup", *entrypoint[1:], "/app/run"]
        assert uid_of(pid1) == 10001
        mark = running.mark()
        podman.cmd("kill", "--signal", "HUP", container)
        running.wait_line(r"^demo-app: reloaded greeting \(6 bytes\)$", start=mark)  # and on SIGHUP
        podman.cmd("stop", "-t", "30", container, timeout=60)
        assert running.wait(timeout=30) == 0
        assert running.count(r"^demo-app: stopping$") == 1
    finally:
        running.kill_all()


def test_bundle_command_writes_what_the_readme_says(bundle_dir):
    """The bundle_dir fixture runs the README's command (images.BUNDLE), with DIST and BUILD,
    which the script documents, pointing into a temporary folder instead of dist/ and build/."""
    assert readme.command("bundle") == shlex.join(images.BUNDLE)
    executable = os.path.join(bundle_dir, "cfgsup")
    assert os.path.isfile(executable) and os.access(executable, os.X_OK)
    assert os.path.isfile(os.path.join(bundle_dir, "NEEDS"))
    dist = os.path.dirname(bundle_dir)
    assert glob.glob(os.path.join(dist, f"cfgsup-{version('cfgsup')}-linux-{os.uname().machine}.tar.gz"))
    size, unreadable = 0, []
    for folder, dirs, files in os.walk(bundle_dir):
        for name in dirs + files:
            mode = os.lstat(os.path.join(folder, name)).st_mode
            if not stat.S_ISLNK(mode):
                size += os.lstat(os.path.join(folder, name)).st_size if stat.S_ISREG(mode) else 0
                if not mode & stat.S_IROTH or (stat.S_ISDIR(mode) and not mode & stat.S_IXOTH):
                    unreadable.append(name)
    assert not unreadable, f"not world-readable, but the README says any uid runs it: {unreadable[:5]}"
    said = float(re.search(r"one-directory bundle \(about (\d+) MB\)", readme.text()).group(1))
    assert 0.75 * said <= size / 1e6 <= 1.25 * said, f"the bundle is {size / 1e6:.1f} MB; update the README"


def test_cfgsup_image_builds_and_runs(docker, podman):
    line = readme.command("image-cfgsup")
    bundle = readme.command("bundle")
    # Its first step is the bundle command: the bundle_dir fixture ran it, and the build
    # context holds its output in dist/cfgsup, as a checkout would after it.
    assert line.startswith(bundle + " && "), line
    build = docker(line[len(bundle) + 4:])
    assert build.wait(timeout=300) == 0, build.text()
    image = "localhost/cfgsup:latest"
    assert inspect(podman, image, "User") == "65534:65534"  # nobody
    assert inspect(podman, image, "Entrypoint") == ["/opt/cfgsup/cfgsup"]
    # "As an image of its own": the README's own example.
    example = readme.prose_code(r"^docker run --rm cfgsup -- ")
    run = docker(example)
    assert run.wait(timeout=60) == 0, run.text()
    assert "hi" in run.lines, run.text()


def test_copy_from_snippet_is_the_bundle_example():
    """The README says Dockerfile.bundle.example is the snippet, complete; test_containers.py
    builds that file and runs it."""
    snippet = readme.command("copy-from").splitlines()
    with open(os.path.join(readme.ROOT, "Dockerfile.bundle.example")) as fh:
        example = [line.strip() for line in fh if line.strip() and not line.startswith("#")]
    assert snippet[0] == "FROM your-app-image" and "FROM ${BASE}" in example
    assert snippet[-1] == 'CMD ["your-app"]' and example[-1].startswith("CMD [")
    assert re.search(r"^FROM \$\{CFGSUP\} AS cfgsup$", "\n".join(example), re.M)
    for line in snippet[1:-1]:
        assert line in example, line
