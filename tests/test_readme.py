"""The README's set-up commands: they install into a virtual environment they create themselves
(a Debian or Ubuntu system Python refuses `pip install`, PEP 668), and CI runs exactly the
README's test command."""
from __future__ import annotations

import os
import re
import shlex

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(*parts):
    with open(os.path.join(ROOT, *parts)) as fh:
        return fh.read()


def command_after(text, lead):
    """The one-line command in the first code block after the paragraph that starts with `lead`."""
    match = re.search(re.escape(lead) + r".*?\n```\n(.*?)\n```", text, re.S)
    assert match, f"no code block after {lead!r}"
    lines = match.group(1).splitlines()
    assert len(lines) == 1, "a set-up command is one line, to be copied whole"
    return lines[0]


def steps(command):
    return [shlex.split(step) for step in command.split(" && ")]


README = read("README.md")
INSTALL = command_after(README, "Install and run it")
TESTS = command_after(README, "Run the whole test suite")


def test_ci_runs_exactly_the_readme_test_command():
    lines = [line.strip() for line in read(".ci", "run").splitlines()]
    assert TESTS in lines


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
