"""Every command README.md shows is run by a test: each one matches exactly one entry of
readme.SHOWN, and that entry names a test that exists and reads the command by its name
(readme.command or readme.argv), so what runs is the README's text itself. A new code block,
or a new command in one, without an entry fails here."""
from __future__ import annotations

import ast
import os
import re

import pytest

import readme

HERE = os.path.dirname(os.path.abspath(__file__))


def orphans(source=None) -> list[str]:
    """The commands of a README text that match no entry of SHOWN, or several."""
    found = []
    for line, command in readme.items(source):
        names = [name for name, (pattern, _test) in readme.SHOWN.items() if re.search(pattern, command)]
        if len(names) != 1:
            found.append(f"README.md line {line}: {command!r} matches {names or 'no entry'}")
    return found


def test_every_command_the_readme_shows_has_a_test():
    missing = orphans()
    assert not missing, ("every command the README shows is run by a test: give each one entry in "
                         "SHOWN (tests/readme.py) naming the test that runs it\n" + "\n".join(missing))


@pytest.mark.parametrize("name", sorted(readme.SHOWN))
def test_each_entry_names_a_test_that_runs_its_command(name):
    readme.command(name)  # exactly one command matches
    path, test = readme.SHOWN[name][1].split("::")
    with open(os.path.join(HERE, path)) as fh:
        module = ast.parse(fh.read())
    found = [node for node in module.body if isinstance(node, ast.FunctionDef) and node.name == test]
    assert found, f"{path} has no {test}"
    # The test names the command, and its module reads commands from the README (readme.command
    # or readme.argv), not from a copy of their text.
    assert any(isinstance(n, ast.Constant) and n.value == name for n in ast.walk(found[0])), \
        f"{path}::{test} does not name the README command {name!r}"
    assert any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "readme"
               and n.attr in ("command", "argv") for n in ast.walk(module)), f"{path} never reads the README"


def test_the_guard_catches_a_new_block():
    """One more cfgsup command, in a block of its own or in an indented one, is one more orphan."""
    for block in ("\n```\ncfgsup --watch /etc/new -- newapp\n```\n",
                  "\n- a list item:\n\n  ```\n  # comment\n  cfgsup -- other \\\n     --flag\n  ```\n"):
        assert len(orphans(readme.text() + block)) == len(orphans()) + 1, block


def test_commands_are_read_as_a_shell_reads_them():
    sample = ("```\n# a comment\ncfgsup --watch /a \\\n       --on-change signal \\\n       -- app x\n\n"
              "cfgsup -- b\n```\n\n  ```\n  FROM x\n  CMD [\"y\"]\n  ```\n")
    assert readme.items(sample) == [(3, "cfgsup --watch /a --on-change signal -- app x"),
                                    (7, "cfgsup -- b"), (11, 'FROM x\nCMD ["y"]\n')]


@pytest.mark.parametrize("line", ["cfgsup --watch $HOME -- app", "cfgsup -- app; rm x", "cfgsup --watch /e* -- a"])
def test_a_command_that_needs_the_shell_is_not_split_by_hand(monkeypatch, line):
    monkeypatch.setattr(readme, "command", lambda name: line)
    with pytest.raises(AssertionError, match="sh reads"):
        readme.argv("any")
