from __future__ import annotations

import subprocess
import sys

from specrouter.cli import main


def test_help_lists_commands(capsys) -> None:
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_demo_prints_a_policy_comparison(capsys) -> None:
    assert main(["demo", "--requests", "3"]) == 0
    out = capsys.readouterr().out
    assert "target-only" in out and "speed-up" in out


def test_console_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "specrouter", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "specrouter" in result.stdout
