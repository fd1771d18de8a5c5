"""The commands README.md shows, as the tests that run them read them: straight from the README's
text, so a test and the README can never drift apart.

    items()          every command of every code block: (line number, text)
    command(name)    the one command SHOWN[name] names, as written (continuations joined)
    argv(name)       the same, split as sh splits it (and checked against sh itself)

A code block holds commands, one per line (a line ending in `\\` continues on the next one;
`#` lines are comments), or, when it starts with `FROM`, one Dockerfile as a whole.

SHOWN names each command and the test that runs it, as "file::test"; test_readme_commands.py
fails when a command has no entry, when an entry matches no command or several, and when the
test it names does not exist or does not read the command by its name.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")

SHOWN = {
    # name: (regex that matches exactly one command, the test that runs it)
    "headline": (r"^cfgsup --watch \S+ --on-change signal --signal HUP -- nginx ",
                 "test_readme_pods.py::test_headline_reloads_nginx_on_a_change"),
    "setup": (r"^python3 -m venv \.venv && \.venv/bin/pip install \. && .*\.venv/bin/cfgsup ",
              "test_readme_demo.py::test_install_and_run_demo"),
    "tests": (r"^python3 -m venv \.venv && \.venv/bin/pip install '\.\[test\]' && ",
              "test_readme.py::test_ci_runs_exactly_the_readme_test_command"),
    "pid1": (r"^cfgsup -- myapp",
             "test_readme_pods.py::test_pid1_only_reaps_forwards_and_stops"),
    "restart": (r"^cfgsup --watch \S+ -- myapp$",
                "test_readme_pods.py::test_restart_on_a_change"),
    "validate": (r"^cfgsup --watch \S+ --on-change signal .*--validate ",
                 "test_readme_pods.py::test_validate_then_signal"),
    "webhook": (r"^cfgsup --watch \S+ --on-change http --webhook ",
                "test_readme_pods.py::test_webhook_reloads_prometheus"),
    "stage": (r"^cfgsup --stage ",
              "test_readme_pods.py::test_stage_validates_the_candidate_and_rolls_back"),
    "benchmark": (r"^python benchmarks/run\.py ",
                  "test_benchmarks.py::test_benchmark_smoke_run"),
    "image-pip": (r"^docker build -f Dockerfile\.example ",
                  "test_readme_images.py::test_dockerfile_example_builds_and_runs"),
    "bundle": (r"^bash packaging/bundle\.sh$",
               "test_readme_images.py::test_bundle_command_writes_what_the_readme_says"),
    "image-cfgsup": (r"^bash packaging/bundle\.sh && docker build -f packaging/Containerfile ",
                     "test_readme_images.py::test_cfgsup_image_builds_and_runs"),
    "copy-from": (r"^FROM your-app-image\n",
                  "test_readme_images.py::test_copy_from_snippet_is_the_bundle_example"),
}


def text() -> str:
    with open(README) as fh:
        return fh.read()


def blocks(source: str | None = None) -> list[tuple[int, list[str]]]:
    """Every fenced code block, also indented ones (in lists): (line of its first content line,
    its lines without the fence's indentation)."""
    found, current, indent, start = [], None, "", 0
    for number, line in enumerate((source if source is not None else text()).splitlines(), 1):
        fence = re.match(r"^(\s*)```", line)
        if current is None and fence:
            current, indent, start = [], fence.group(1), number + 1
        elif current is not None and fence and fence.group(1) == indent:
            found.append((start, current))
            current = None
        elif current is not None:
            current.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
    assert current is None, f"README.md: the code block from line {start} is never closed"
    return found


def items(source: str | None = None) -> list[tuple[int, str]]:
    """Every command the README shows: (line number, command with its continuations joined)."""
    out = []
    for start, lines in blocks(source):
        if lines and lines[0].startswith("FROM "):
            out.append((start, "\n".join(lines) + "\n"))
            continue
        joined, first = "", None
        for number, line in enumerate(lines, start):
            if not joined and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if not joined:
                first = number
            part = line.strip() if joined else line.rstrip()
            if part.endswith("\\"):
                joined += part[:-1].rstrip() + " "
                continue
            out.append((first, joined + part))
            joined = ""
        assert not joined, f"README.md line {first}: a command ends in a continuation"
    return out


def matching(pattern: str, source: str | None = None) -> list[tuple[int, str]]:
    return [(n, cmd) for n, cmd in items(source) if re.search(pattern, cmd)]


def command(name: str) -> str:
    """The command SHOWN[name] names, exactly as the README has it (continuations joined)."""
    found = matching(SHOWN[name][0])
    assert len(found) == 1, f"README.md: {len(found)} commands match SHOWN[{name!r}], not one: {found}"
    return found[0][1]


def argv(name: str) -> list[str]:
    """The command's words. They must be what sh gives too: a command that needs the shell for
    more than quoting (a variable, a glob, `;` or `&&`) is run by sh, not split here."""
    line = command(name)
    words = shlex.split(line)
    shell = subprocess.run(["sh", "-c", "printf '%s\\0' " + line], env={}, cwd="/",
                           capture_output=True, timeout=10).stdout.decode().split("\0")[:-1]
    assert shell == words, f"README.md: sh reads {line!r} as {shell}, not as {words}"
    return words


def prose_code(pattern: str) -> str:
    """The one inline `code` span of the README's prose that matches `pattern`."""
    spans = [s for s in re.findall(r"`([^`\n]+)`", text()) if re.search(pattern, s)]
    assert len(set(spans)) == 1, f"README.md: inline code matching {pattern!r}: {spans}"
    return spans[0]
