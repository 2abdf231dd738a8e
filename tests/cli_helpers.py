"""Helpers the command-line tests share (imported by the test modules beside it)."""

from __future__ import annotations

import pytest


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's one ``specrouter <command>: ...`` error line (no traceback; warnings may precede it)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("specrouter ")]
    assert len(lines) == 1, err
    return lines[0]
