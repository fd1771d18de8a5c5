"""The README's set-up commands: they install into a virtual environment they create themselves
(a Debian or Ubuntu system Python refuses `pip install`, PEP 668), and CI runs exactly the
README's test command."""
from __future__ import annotations

import os
import shlex

import readme

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(*parts):
    with open(os.path.join(ROOT, *parts)) as fh:
        return fh.read()


def steps(command):
    return [shlex.split(step) for step in command.split(" && ")]


README = read("README.md")
INSTALL = readme.command("setup")  # test_readme_demo.py runs it
TESTS = readme.command("tests")  # .ci/run runs it: CI is this command


def test_setup_commands_are_one_line_each_to_be_copied_whole():
    for command in (INSTALL, TESTS):
        assert [command] in [lines for _start, lines in readme.blocks()], command


def test_ci_runs_exactly_the_readme_test_command():
    lines = [line.strip() for line in read(".ci", "run").splitlines()]
    assert readme.command("tests") in lines


def test_every_readme_setup_command_makes_and_uses_its_own_venv():
    for command in (INSTALL, TESTS):
        first, *rest = steps(command)
        assert first == ["python3", "-m", "venv", ".venv"], command
        for argv in rest:
            # Only the venv's pip, python and cfgsup: a bare `pip` or `python` is the system's.
            assert argv[0] not in ("pip", "pip3", "python", "python3", "cfgsup"), command
            if argv[0].startswith(".venv/"):
                assert argv[0] in (".venv/bin/pip", ".venv/bin/python", ".venv/bin/cfgsup"), command
        assert any(argv[:2] == [".venv/bin/pip", "install"] for argv in rest), command


def test_the_demo_runs_cfgsup_from_the_venv():
    assert steps(INSTALL)[-1][0] == ".venv/bin/cfgsup"


def test_readme_names_the_debian_package_venv_needs():
    setup = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
    assert "python3-venv" in setup
