"""The training text of the default ladder: files that exist on every machine of this kind.

Two domains, both read from the local disk with no download:

* ``code``  -- the Python standard library's own sources (``<stdlib>/*.py``, top level only);
* ``prose`` -- licence texts under ``/usr/share/common-licenses`` and the Debian ``copyright``
  files under ``/usr/share/doc/*/``, de-duplicated by content (many packages ship the same text).

The split into training and held-out text is by *file*, decided by a hash of the file's path
relative to its root, so it does not depend on which other files exist: a file is held out when
``sha1(relative path) mod HELD_OUT_MODULUS == 0`` (about 1 in 10). Held-out files feed the evaluation
and the prompt corpus (``prompts.jsonl``); no model ever trains on them.

The prompt corpus has a third domain built from the same held-out text, ``edit``: "edit this code /
revise this passage" prompts whose natural continuation copies a span of the prompt (see
:func:`edit_prompt`). It is a prompt domain only: ``DOMAINS`` (what the models train and are evaluated
on) stays ``code`` and ``prose``; ``PROMPT_DOMAINS`` lists all three.
"""

from __future__ import annotations

import builtins
import glob
import hashlib
import json
import keyword
import re
import sysconfig
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

DOMAINS: tuple[str, ...] = ("code", "prose")
HELD_OUT_MODULUS = 10
MAX_FILE_BYTES = 400_000  # skip generated giants (none in practice, but keeps one file from dominating)
PROMPT_CHUNK_CHARS = 2_000  # prompts.jsonl stores held-out text in chunks of about this size
EDIT_DOMAIN = "edit"
PROMPT_DOMAINS: tuple[str, ...] = (*DOMAINS, EDIT_DOMAIN)
EDIT_UNIT_CHARS = 200  # the passage an edit prompt revises: whole lines, at most this many characters
EDIT_MAX_LINE_CHARS = 100  # a longer line ends the passage (keeps every edit prompt under ~450 tokens)
EDIT_REVISIONS = 8  # at most this many revised copies after the original (the first renames, the
# others repeat it): as many as fit in EDIT_MAX_TOKENS, so a window of the prompt and its continuation
# stay inside the revisions
EDIT_MAX_TOKENS = 448  # an edit prompt plus a 64-token continuation fits the models' 512-token context
EDIT_SEPARATORS = {"code": "# revised:\n", "prose": "\nRevised:\n\n"}
_CODE_NAME = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]{2,}\b")
_PROSE_WORD = re.compile(r"\b[a-z]{4,}\b")
_NOT_RENAMED = frozenset(keyword.kwlist) | frozenset(dir(builtins)) | {"self", "cls"}


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


def edit_passage(piece: str) -> str | None:
    """The first whole lines of ``piece`` (at most ``EDIT_UNIT_CHARS``), or ``None`` when too short.

    Leading blank lines are skipped, a line longer than ``EDIT_MAX_LINE_CHARS`` ends the passage,
    trailing blank lines are dropped; a passage needs two non-blank lines and a quarter of the size.
    """
    lines = piece.splitlines(keepends=True)
    while lines and not lines[0].strip():
        lines.pop(0)
    kept: list[str] = []
    length = 0
    for line in lines:
        if len(line) > EDIT_MAX_LINE_CHARS or length + len(line) > EDIT_UNIT_CHARS:
            break
        kept.append(line)
        length += len(line)
    while kept and not kept[-1].strip():
        kept.pop()
    passage = "".join(line.rstrip() + "\n" for line in kept)
    if sum(1 for line in kept if line.strip()) < 2 or len(passage) < EDIT_UNIT_CHARS // 4:
        return None
    return passage


def revise(passage: str, domain: str) -> str:
    """``passage`` with one small edit: code renames its most frequent identifier ``x`` to ``new_x``
    (keywords, builtins, ``self``, ``cls`` excepted); prose writes its most frequent lower-case
    word of four or more letters in capitals. Ties go to the first occurrence; no candidate: unchanged."""
    pattern = _CODE_NAME if domain == "code" else _PROSE_WORD
    names = [m.group(0) for m in pattern.finditer(passage) if m.group(0) not in _NOT_RENAMED]
    if not names:
        return passage
    counts = Counter(names)
    chosen = max(counts, key=lambda name: (counts[name], -names.index(name)))
    replacement = f"new_{chosen}" if domain == "code" else chosen.upper()
    return re.sub(rf"\b{re.escape(chosen)}\b", replacement, passage)


def utf8_bytes(text: str) -> int:
    """Bytes of ``text`` in UTF-8: an upper bound on its tokens under any byte-level BPE."""
    return len(text.encode("utf-8"))


def edit_prompt(
    piece: str,
    domain: str,
    count_tokens: Callable[[str], int] = utf8_bytes,
    max_tokens: int = EDIT_MAX_TOKENS,
) -> str | None:
    """An "edit this code / revise this passage" prompt from a held-out chunk of ``domain``.

    The passage (:func:`edit_passage`), then up to ``EDIT_REVISIONS`` times a separator line (a
    comment ``# revised:`` for code, a ``Revised:`` heading for prose) and the revised passage
    (:func:`revise`; every revision is the same): as many as keep the prompt within ``max_tokens``
    by ``count_tokens`` (the ladder's tokenizer; by default UTF-8 bytes, an upper bound), at least
    one, else ``None``. Past the first copy, every position's continuation is a span already in the
    text: a window of the prompt longer than one revision contains what follows it.
    """
    passage = edit_passage(piece)
    if passage is None:
        return None
    revised = revise(passage, domain)
    for revisions in range(EDIT_REVISIONS, 0, -1):
        text = passage + (EDIT_SEPARATORS[domain] + revised) * revisions
        if count_tokens(text) <= max_tokens:
            return text
    return None


def prompt_records(
    held_out: Iterable[SourceFile], count_tokens: Callable[[str], int] = utf8_bytes
) -> list[dict[str, str]]:
    """The prompt corpus: every held-out chunk (file order), then one ``edit`` prompt per chunk
    that has a passage (:func:`edit_prompt`), in the same order. Only held-out files are accepted."""
    files = list(held_out)
    for item in files:
        if not item.held_out:
            raise ValueError(f"{item.name}: not a held-out file; the prompt corpus takes held-out text only")
    records = [
        {"domain": item.domain, "source": item.name, "text": piece}
        for item in files
        for piece in chunk_text(item.text)
    ]
    edits = [(r["source"], edit_prompt(r["text"], r["domain"], count_tokens)) for r in records]
    records += [{"domain": EDIT_DOMAIN, "source": source, "text": text} for source, text in edits if text]
    return records


def write_prompt_corpus(
    held_out: Iterable[SourceFile], path: Path, count_tokens: Callable[[str], int] = utf8_bytes
) -> dict[str, int]:
    """Write held-out text as JSON lines ``{"domain", "source", "text"}`` (:func:`prompt_records`;
    ``count_tokens``: see :func:`edit_prompt`); return chunks per domain."""
    counts = dict.fromkeys(PROMPT_DOMAINS, 0)
    with path.open("w", encoding="utf-8") as handle:
        for record in prompt_records(held_out, count_tokens):
            handle.write(json.dumps(record) + "\n")
            counts[record["domain"]] += 1
    return counts
