"""The embedded model zoo: the default ladder shipped in ``backend/zoo/default`` and the build that makes it.

``default_ladder_dir()`` is where the shipped ladder lives; ``specrouter zoo build`` (``backend.zoo.build``)
reproduces it from text on the local disk. Importing this package is cheap: torch and transformers are
imported only by the build modules.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_LADDER_DIR = Path(__file__).resolve().parent / "default"


def default_ladder_dir() -> Path:
    """Directory of the shipped default ladder (``ladder.json``, one sub-directory per model, prompts)."""
    return DEFAULT_LADDER_DIR


__all__ = ["DEFAULT_LADDER_DIR", "default_ladder_dir"]
