"""Session fixtures for the bundle and real containers, built once per test run.

    bundle_dir    packaging/bundle.sh's output folder (CFGSUP_TEST_BUNDLE: use a prebuilt one)
    podman_world  one tests.podman.Podman for the session; everything in it goes at the end
    built         tests.images.build_all's dict of image names
    podman        podman_world, plus removal of the containers a test started, at its end

Outside CI a missing podman, runc or root skips these tests with the reason; under CI=true they
always run, and a missing tool fails them. CFGSUP_TEST_CACHE=DIR keeps the mmdebstrap tar there
between runs (for development; CI builds everything from scratch).
"""
from __future__ import annotations

import os
import shutil
import sysconfig
import tempfile

import pytest

import images
from podman import Podman, unavailable

CI = bool(os.environ.get("CI"))


def skip_or_fail(reason: str):
    if CI:
        pytest.fail(f"{reason} (under CI the container tests always run: .ci/run installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def bundle_dir():
    prebuilt = os.environ.get("CFGSUP_TEST_BUNDLE")
    if prebuilt:
        yield os.path.abspath(prebuilt)
        return
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        skip_or_fail("the bundle needs a Python built with a shared libpython (PyInstaller)")
    out = tempfile.mkdtemp(prefix="cfgsup-bundle-")
    try:
        yield images.bundle(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="session")
def podman_world():
    reason = unavailable()
    if reason:
        skip_or_fail(reason)
    world = Podman()
    try:
        yield world
    finally:
        world.close()


@pytest.fixture(scope="session")
def built(podman_world, bundle_dir):
    work = tempfile.mkdtemp(prefix="cfgsup-images-")
    try:
        yield images.build_all(podman_world, work, bundle_dir, cache=os.environ.get("CFGSUP_TEST_CACHE"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def podman(podman_world):
    marks = len(podman_world.containers), len(podman_world.pods)
    yield podman_world
    podman_world.remove(podman_world.containers[marks[0]:], podman_world.pods[marks[1]:])
