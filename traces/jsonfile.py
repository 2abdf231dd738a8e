"""Reading the project's JSON documents (configs, scenarios, profiles) with errors that say where."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_document(path: str | Path, error: type[Exception]) -> Any:
    """Parse the JSON file at ``path``; a syntax error raises ``error`` naming the file and line."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise error(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from err
