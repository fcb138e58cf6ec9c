"""The README is executed: every shell block a newcomer would run is run here, in the
README's order, by one bash session in a fresh home folder, and any line that fails fails
the test.

How it is run, and the only ways it differs from a person at a terminal:

- The home folder is new (HOME points into the test's temporary folder) and holds a
  "clone": a folder whose `.venv` is this test run's own virtual environment. `popin` is
  not on PATH until the README says how to get it there.
- The two heavy install commands run in an equivalent form that reuses that environment:
  `bash scripts/serve` runs `.venv/bin/popin serve` without reinstalling first;
  `bash scripts/test` runs pytest on this suite with `--collect-only` (running the whole
  suite from inside itself would never end), without apt-get or pip.
- A line that starts a server (`bash scripts/serve`, `popin serve`) starts it in the
  background on a free port, after stopping the one before (a person presses Ctrl-C), and
  every `127.0.0.1:8000` in the lines after it names that port.
- Placeholders are filled the way the README tells a person to fill them: `KEY=pk_...`
  with the token the last `popin keys create` printed, `KEY_ID` with the first id of the
  last `popin keys list`, a bare `CURSOR` with the cursor the last `popin audiences
  export` printed, `METRICS_TOKEN=...` with the metrics_token of the popin.toml that
  `popin init` wrote; `popin admin set-password` "asks twice" and is answered twice.
- `curl` fails on an HTTP error (the session defines it as `curl --fail-with-body`), so a
  401 or 404 fails the line as a person would see it fail.

Every other line runs exactly as printed. A shell block this test does not know how to
run fails it, as does a placeholder it cannot fill."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT, free_port, wait_for_port

README = (ROOT / "README.md").read_text()
VENV = Path(sys.prefix)
# Blocks that are not for a newcomer, with the reason; matched on their whole text.
NOT_FOR_A_NEWCOMER = {
    ".venv/bin/python bench/sockets.py --json bench/results/sockets.json   # --quick: a smoke "
    "run": "a developer's five-minute benchmark; tests/test_bench.py runs it with --quick",
}
TOKEN = re.compile(r"token \(shown once, keep it secret\): (\S+)")
CURSOR = re.compile(r"next cursor: (\S+)")
PASSWORD = "a long dashboard password"


def shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README, re.DOTALL)


def commands_of(block: str) -> list[str]:
    """The block's commands, as bash will read them: a line ending in a backslash, or
    inside an open quote, goes on to the next; comments and blank lines are left out
    unless inside a command."""
    found: list[str] = []
    current: list[str] = []
    quote = ""
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current.append(line)
        code, index = line, 0
        while index < len(line):
            char = line[index]
            if quote:
                if char == quote:
                    quote = ""
                elif char == "\\" and quote == '"':
                    index += 1
            elif char in "'\"":
                quote = char
            elif char == "\\":
                index += 1
            elif char == "#" and (index == 0 or line[index - 1].isspace()):
                code = line[:index]
                break
            index += 1
        if not quote and not code.rstrip().endswith("\\"):
            found.append("\n".join(current))
            current = []
    assert not current, f"a command does not end: {current}"
    return found


class Session:
    """One bash, fed one command at a time, that keeps its folder and variables from one
    command to the next as a terminal does; each command's output goes to files."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.logs = home.parent / "session"
        self.logs.mkdir()
        self.count = 0
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, cwd=home, env=env, text=True,
            # No terminal: `getpass` reads the answers from standard input.
            start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.send("set -o pipefail; curl() { command curl --silent --show-error "
                  '--fail-with-body "$@"; }')

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def send(self, script: str, timeout: float = 120) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{script}\necho __done__ $?\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line.startswith("__done__"):
                return line.split()[1]

    def run(self, command: str, answers: str = "") -> tuple[int, str, str]:
        self.count += 1
        given, out, err = (self.logs / f"{self.count}.{name}" for name in ("in", "out", "err"))
        given.write_text(answers)
        code = self.send(f"{{\n{command}\n}} <{given} >{out} 2>{err}")
        return int(code), out.read_text(), err.read_text()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)
        self.reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def test_every_shell_block_of_the_readme_runs_in_a_fresh_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    clone = home / "popin"
    clone.mkdir(parents=True)
    (clone / ".venv").symlink_to(VENV)
    path = os.pathsep.join(part for part in os.environ["PATH"].split(os.pathsep)
                           if Path(part).resolve() != (VENV / "bin").resolve())
    env = {name: value for name, value in os.environ.items()
           if name not in ("VIRTUAL_ENV", "POPIN_CONFIG", "PYTHONPATH")}
    env |= {"HOME": str(home), "PATH": path, "PYTHONUNBUFFERED": "1"}
    session = Session(clone, env)
    outputs: list[tuple[str, str, str]] = []
    servers: list[int] = []
    port = 8000
    ran: list[str] = []

    def stop_servers() -> None:
        while servers:
            pid = servers.pop()
            os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"the server {pid} did not stop on Ctrl-C")

    def serve(command: str) -> None:
        nonlocal port
        stop_servers()
        port = free_port()
        pid_file = tmp_path / f"server-{port}.pid"
        log = tmp_path / f"server-{port}.log"
        session.send(f"{command} --port {port} </dev/null >{log} 2>&1 &\necho $! >{pid_file}")
        servers.append(int(pid_file.read_text()))
        try:
            wait_for_port(port, timeout=30)
        except TimeoutError:
            raise AssertionError(f"{command!r} did not start:\n{log.read_text()}") from None

    def last(pattern: re.Pattern[str], what: str) -> str:
        for out, err, _command in reversed(outputs):
            found = pattern.findall(out + err)
            if found:
                return str(found[-1])
        raise AssertionError(f"nothing printed {what} before it was needed")

    def fill(command: str) -> str:
        if command.startswith("KEY=pk_..."):
            command = command.replace("pk_...", last(TOKEN, "a token (popin keys create)"), 1)
        if command.startswith("METRICS_TOKEN=..."):
            config = tomllib.loads((home / "shop" / "popin.toml").read_text())
            command = command.replace("...", config["metrics_token"], 1)
        if "KEY_ID" in command:
            listed = next(out for out, _err, said in reversed(outputs)
                          if said.startswith("popin keys list"))
            command = command.replace("KEY_ID", listed.split()[0])
        if re.search(r"(?<![$\w])CURSOR(?![\w=])", command):
            command = re.sub(r"(?<![$\w])CURSOR(?![\w=])",
                             last(CURSOR, "a cursor (popin audiences export)"), command)
        command = command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        unfilled = re.findall(r"=\.\.\.|pk_\.\.\.|\b[A-Z]+_ID\b", command)
        assert not unfilled, f"no way to fill {unfilled} in {command!r}"
        return command

    try:
        for block in shell_blocks():
            if block.strip() in NOT_FOR_A_NEWCOMER:
                continue
            for command in commands_of(block):
                ran.append(command)
                if command == "bash scripts/serve":
                    # Equivalent form: the same `popin serve`, without reinstalling first.
                    serve(".venv/bin/popin serve")
                    continue
                if command == "bash scripts/test":
                    # Equivalent form: pytest as scripts/test runs it, collecting only.
                    command = (f"(cd {ROOT} && {VENV}/bin/python -m pytest --collect-only "
                               "-q -p no:cacheprovider)")
                elif command.startswith("popin serve"):
                    serve(command)
                    continue
                else:
                    command = fill(command)
                answers = (f"{PASSWORD}\n{PASSWORD}\n"
                           if command.startswith("popin admin set-password") else "")
                code, out, err = session.run(command, answers)
                outputs.append((out, err, command))
                assert code == 0, (f"README line failed (exit {code}):\n{command}\n"
                                   f"--- out:\n{out}\n--- err:\n{err}")
    finally:
        stop_servers()
        session.close()

    # What a newcomer was told along the way.
    said = {command: out + err for out, err, command in outputs}
    init = next(text for command, text in said.items() if command.startswith("popin init"))
    assert 'data-site="shop"></script>' in init and "Next:" in init
    identify = next(text for command, text in said.items() if "/api/v1/identify" in command)
    assert '"new_visitor":true' in identify
    events = next(text for command, text in said.items() if "/api/v1/events" in command)
    assert '"status":"applied"' in events, "the API examples work in the README's order"
    assert any(command.startswith("popin keys revoke") for command in said)
    assert (home / "shop" / "popin.toml").is_file() and (home / "shop" / "popin.db").is_file()
    assert len(ran) >= 30


def test_the_placeholders_say_where_their_value_comes_from() -> None:
    """A person fills them from what the README says next to them."""
    lines = [line for block in shell_blocks() for line in block.splitlines()]
    for placeholder, hint in (("KEY=pk_...", "popin keys create"),
                              ("METRICS_TOKEN=...", "metrics_token in popin.toml")):
        for line in (line for line in lines if line.startswith(placeholder)):
            comment = line.split("#", 1)[1] if "#" in line else ""
            before = lines[lines.index(line) - 1]
            assert hint in comment or hint.split()[0] in before, line
    assert "KEY_ID" in README and "first column of `popin keys list`" in README
    assert "--since CURSOR   # the cursor the last" in README


@pytest.mark.parametrize(("block", "expected"), [
    ("a \\\n  b\nc # d\n", ["a \\\n  b", "c # d"]),
    ("x '{\n  \"a\": 1}'\n# note\n\ny", ["x '{\n  \"a\": 1}'", "y"]),
    ("# the site's user\nz  # it's fine", ["z  # it's fine"]),
])
def test_commands_are_split_as_bash_reads_them(block: str, expected: list[str]) -> None:
    assert commands_of(block) == expected
