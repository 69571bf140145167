"""The optimizer stays a pure package (SPEC §3): no web, database or service imports, and no HiGHS.

HiGHS (highspy, or scipy, whose optimize module bundles it) is banned because it clashes with the copy
linked into OR-Tools when both are loaded in one process; scipy is also only a dev dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "optimizer"
FORBIDDEN = {"fastapi", "starlette", "sqlmodel", "sqlalchemy", "alembic", "app", "highspy", "scipy"}


def _imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and _is_dynamic_import(node) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                roots.add(arg.value.split(".")[0])
    return roots


def _is_dynamic_import(node: ast.Call) -> bool:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id == "__import__"
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def test_package_exists_and_has_modules() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE.joinpath("__init__.py") in modules
    assert len(modules) >= 2


def test_no_forbidden_imports_in_source() -> None:
    offenders: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        roots = _imported_roots(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        offenders += [f"{path.relative_to(ROOT)} imports {name}" for name in sorted(roots & FORBIDDEN)]
    assert offenders == []


def test_scanner_detects_forbidden_imports() -> None:
    # The scanner itself must be able to fail, or the test above proves nothing.
    source = "import fastapi\nfrom app.db import x\nimport importlib\nimportlib.import_module('highspy')\n"
    assert _imported_roots(ast.parse(source)) & FORBIDDEN == {"fastapi", "app", "highspy"}


def test_importing_optimizer_loads_no_forbidden_module() -> None:
    code = (
        "import sys, optimizer\n"
        "import optimizer.check, optimizer.baselines, optimizer.__main__\n"
        f"bad = sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(FORBIDDEN)!r}))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
