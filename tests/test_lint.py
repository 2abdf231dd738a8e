"""ruff and mypy are part of the test command, so CI and the README run them the same way."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TYPED_PACKAGES = ["policies", "traces", "sim", "backend", "specrouter"]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean() -> None:
    if shutil.which("ruff") is None:
        pytest.fail("ruff is not installed: run `bash scripts/install.sh --dev`")
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean_on_typed_packages() -> None:
    result = run(sys.executable, "-m", "mypy", *TYPED_PACKAGES)
    assert result.returncode == 0, result.stdout + result.stderr
