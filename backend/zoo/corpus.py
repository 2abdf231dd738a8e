"""The training text of the default ladder: files that exist on every machine of this kind.

Two domains, both read from the local disk with no download:

* ``code``  -- the Python standard library's own sources (``<stdlib>/*.py``, top level only);
* ``prose`` -- licence texts under ``/usr/share/common-licenses`` and the Debian ``copyright``
  files under ``/usr/share/doc/*/``, de-duplicated by content (many packages ship the same text).

The split into training and held-out text is by *file*, decided by a hash of the file's path
relative to its root, so it does not depend on which other files exist: a file is held out when
``sha1(relative path) mod HELD_OUT_MODULUS == 0`` (about 1 in 10). Held-out files feed the evaluation
and the prompt corpus (``prompts.jsonl``); no model ever trains on them.
"""

from __future__ import annotations

import glob
import hashlib
import json
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DOMAINS: tuple[str, ...] = ("code", "prose")
HELD_OUT_MODULUS = 10
MAX_FILE_BYTES = 400_000  # skip generated giants (none in practice, but keeps one file from dominating)
PROMPT_CHUNK_CHARS = 2_000  # prompts.jsonl stores held-out text in chunks of about this size


@dataclass(frozen=True)
class SourceFile:
    """One text file of the corpus: its domain, a stable name (relative path) and its text."""

    domain: str
    name: str
    text: str

    @property
    def held_out(self) -> bool:
        return is_held_out(self.name)


def is_held_out(name: str) -> bool:
    """A file is held out when the SHA-1 of its stable name is 0 modulo ``HELD_OUT_MODULUS``."""
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % HELD_OUT_MODULUS == 0


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _read_text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data or len(data) > MAX_FILE_BYTES:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def code_files(root: Path | None = None) -> list[SourceFile]:
    """Top-level ``*.py`` files of the standard library, sorted by name."""
    base = root or stdlib_dir()
    found = []
    for path in sorted(base.glob("*.py")):
        text = _read_text(path)
        if text is not None:
            found.append(SourceFile("code", f"stdlib/{path.name}", text))
    return found


def prose_files(share: Path = Path("/usr/share")) -> list[SourceFile]:
    """Licence and copyright texts under ``share``, sorted by name, first copy of each content kept."""
    paths = sorted(glob.glob(str(share / "common-licenses" / "*"))) + sorted(
        glob.glob(str(share / "doc" / "*" / "copyright"))
    )
    seen: set[str] = set()
    found = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            continue
        text = _read_text(path)
        if text is None:
            continue
        digest = hashlib.sha1(text.encode()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        found.append(SourceFile("prose", str(path.relative_to(share)), text))
    return found


def load_corpus() -> list[SourceFile]:
    """Every corpus file, code first, each list sorted by name (a deterministic order)."""
    return code_files() + prose_files()


def corpus_digest(files: Iterable[SourceFile]) -> str:
    """SHA-256 over names and texts: two machines with the same digest trained on the same text."""
    hasher = hashlib.sha256()
    for item in files:
        hasher.update(item.domain.encode() + b"\0" + item.name.encode() + b"\0" + item.text.encode() + b"\0")
    return hasher.hexdigest()


def split(files: Iterable[SourceFile]) -> tuple[list[SourceFile], list[SourceFile]]:
    """(training files, held-out files)."""
    train: list[SourceFile] = []
    held: list[SourceFile] = []
    for item in files:
        (held if item.held_out else train).append(item)
    return train, held


def chunk_text(text: str, size: int = PROMPT_CHUNK_CHARS) -> list[str]:
    """Cut ``text`` into pieces of about ``size`` characters, at line ends where possible."""
    chunks: list[str] = []
    current: list[str] = []
    length = 0
    for line in text.splitlines(keepends=True):
        current.append(line)
        length += len(line)
        if length >= size:
            chunks.append("".join(current))
            current, length = [], 0
    if length >= size // 4:
        chunks.append("".join(current))
    return chunks


def write_prompt_corpus(held_out: Iterable[SourceFile], path: Path) -> dict[str, int]:
    """Write held-out text as JSON lines ``{"domain", "source", "text"}``; return chunks per domain."""
    counts = dict.fromkeys(DOMAINS, 0)
    with path.open("w", encoding="utf-8") as handle:
        for item in held_out:
            for piece in chunk_text(item.text):
                handle.write(json.dumps({"domain": item.domain, "source": item.name, "text": piece}) + "\n")
                counts[item.domain] += 1
    return counts
