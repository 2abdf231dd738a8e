"""docs/design.md §2: imports flow specrouter -> sim, backend -> policies, traces; never back.

The rule is checked statically, by parsing every module's import statements, so it also
catches imports inside functions and modules the test suite never executes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "policies": {"torch", "simpy", "sim", "backend", "specrouter", "transformers"},
    "traces": {"torch", "simpy", "sim", "backend", "specrouter", "transformers"},
    "sim": {"torch", "backend", "specrouter", "transformers"},
    "backend": {"simpy", "sim", "specrouter"},
}


def imported_roots(source: str) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_roots(path.read_text()) & FORBIDDEN[package]
        found.extend(f"{path.relative_to(ROOT)} imports {name}" for name in sorted(bad))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_dependency_direction(package: str) -> None:
    assert (ROOT / package / "__init__.py").exists()
    assert violations(package) == []


def test_checker_catches_a_forbidden_import() -> None:
    source = "import numpy\ndef f():\n    import torch.nn as nn\nfrom simpy import Environment\n"
    assert imported_roots(source) & FORBIDDEN["policies"] == {"torch", "simpy"}
    assert imported_roots("from . import sibling\n") == set()
