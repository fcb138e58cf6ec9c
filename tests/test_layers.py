"""The tree shows the architecture, and CI keeps it: import-linter's contracts (in
pyproject.toml) hold, no import circle exists, and both checks really catch a breach."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp
import pytest

from conftest import ROOT

SERVER = ROOT / "server"
PYPROJECT = ROOT / "pyproject.toml"


def lint_imports(*, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    # Wide enough that no contract's name is wrapped in the report.
    env = {**os.environ, "COLUMNS": "300"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
               "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True))", str(PYPROJECT)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)


def circles(imports: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        # Iterative Tarjan: deep import chains must not hit the recursion limit.
        work = [(module, iter(sorted(imports.get(module, ()))))]
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(imports.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1 or node in imports.get(node, ()):
                        found.append(sorted(group))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    return found


def package_imports() -> dict[str, set[str]]:
    graph = grimp.build_graph("popin")
    return {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}


def test_the_import_contracts_hold() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 kept, 0 broken" in result.stdout, result.stdout


def test_no_import_circle() -> None:
    assert circles(package_imports()) == []


def test_the_circle_finder_finds_circles() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"a"}}) == [["a"]]
    assert circles({"a": {"b"}, "b": set()}) == []


BREACHES = [
    # (module to edit, import added, the contract that must break)
    ("core/session.py", "from ..live import hub", "popin: cli, web shell"),
    ("core/rules/engine.py", "import asyncio", "the core does no network"),
    ("core/visitor/facts.py", "from .. import session", "core: tools, session"),
    ("core/rules/templates.py", "from . import forms", "rules: index, campaign files"),
    ("stores/sqlite.py", "from ..features import exports", "popin: cli, web shell"),
    ("features/lift.py", "from .appointments import links", "features do not import"),
    ("web/api/routes.py", "from ..admin import auth", "the web shell's parts"),
    ("core/wire/events.py", "from ... import cli", "popin: cli, web shell"),
]


@pytest.mark.parametrize(("module", "line", "contract"), BREACHES)
def test_a_breach_breaks_its_contract(tmp_path: Path, module: str, line: str,
                                      contract: str) -> None:
    copy = tmp_path / "popin"
    shutil.copytree(SERVER, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = lint_imports(pythonpath=tmp_path)
    assert result.returncode != 0, result.stdout
    broken = [text for text in result.stdout.splitlines() if text.endswith("BROKEN")]
    assert any(text.startswith(contract) for text in broken), result.stdout


def test_every_package_is_installed_and_its_init_only_describes() -> None:
    listed = set(tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["packages"])
    found = {"popin", *("popin." + ".".join(init.parent.relative_to(SERVER).parts)
                        for init in SERVER.rglob("*/__init__.py"))}
    assert listed == found
    for init in SERVER.rglob("*/__init__.py"):
        body = ast.parse(init.read_text()).body
        described = ast.get_docstring(ast.Module(body=body, type_ignores=[]))
        assert described, f"{init}: say what the package holds"
        assert all(isinstance(node, ast.Expr | ast.ImportFrom) or (
            isinstance(node, ast.Assign) and [getattr(target, "id", "") for target in
                                              node.targets] == ["__all__"])
            for node in body), f"{init} may only describe its package or re-export"


def test_every_module_says_what_it_is_for() -> None:
    for module in SERVER.rglob("*.py"):
        if module.name != "__main__.py":
            assert ast.get_docstring(ast.parse(module.read_text())), f"{module}: no docstring"
