"""A ladder of causal LMs that share one tokenizer, ordered by cost (target last).

``load_ladder`` reads local Hugging Face ``save_pretrained`` directories -- either a list of
paths, or one directory holding ``ladder.json`` = ``{"models": ["<subdir>", ...], ...}`` with
the sub-directories ordered by cost.  Before any weights are read it checks that every model's
tokenizer agrees with the first one's and refuses the ladder with an error naming the two models
and the first difference: speculative decoding across different tokenizers would silently
compare unrelated token ids.  Agreeing means the same vocabulary and special tokens *and* the
same ids for a probe text (whitespace runs, unicode, code, the special tokens written out),
decoded back to the same text: two tokenizers can share a vocabulary yet merge differently.
Every ``.safetensors`` file's header is checked against the file's size before loading, so a
truncated or corrupt file is refused by name.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoTokenizer

from backend.hf_compat import HFModel, load_causal_lm
from backend.ngram import NgramDrafter
from policies.contract import LadderInfo

LADDER_FILE = "ladder.json"
_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


class LadderError(ValueError):
    """A ladder that cannot be used: missing files, bad ladder.json, mismatched tokenizers."""


@dataclass
class Ladder:
    """Ordered models (cheapest first, target last) and their one shared tokenizer.

    ``vocab_size`` is the number of logits every level's distribution is cut to: the smallest
    embedding size in the ladder (models of one family sometimes pad their embeddings
    differently; ids past the tokenizer's vocabulary are never produced by it).  ``tokenizer``
    is None in token-id-only mode (tests with in-memory random models).

    ``lookup`` (optional) puts a model-free n-gram drafter (:mod:`backend.ngram`) at the
    bottom: the ladder's *members* are then ``[lookup] + models`` and member ``m >= 1`` is
    ``models[m - 1]``.  ``models``, ``names`` and ``params`` always describe the networks;
    ``size``, ``target`` and ``info`` count members (what routes and profiles index).
    """

    models: list[HFModel]
    names: tuple[str, ...]
    tokenizer: Any | None = None
    params: tuple[float, ...] | None = None
    eos_token_id: int | None = None
    vocab_size: int = field(default=0)
    lookup: NgramDrafter | None = None

    def __post_init__(self) -> None:
        if not self.models:
            raise LadderError("a ladder needs at least one model (the target)")
        if len(self.names) != len(self.models):
            raise LadderError(f"{len(self.names)} names for {len(self.models)} models")
        sizes = [int(model.config.vocab_size) for model in self.models]
        if self.vocab_size <= 0:
            self.vocab_size = min(sizes)
        if self.params is None:
            self.params = tuple(float(sum(p.numel() for p in model.parameters())) for model in self.models)
        for model in self.models:
            model.eval()

    @property
    def offset(self) -> int:
        """Members below the first network: 1 with a lookup drafter, else 0."""
        return 1 if self.lookup is not None else 0

    @property
    def size(self) -> int:
        """Members: the networks plus the lookup drafter, if any."""
        return len(self.models) + self.offset

    @property
    def target(self) -> int:
        return self.size - 1

    def network(self, member: int) -> HFModel:
        """The network of ladder member ``member`` (not the lookup drafter)."""
        if member < self.offset:
            raise ValueError(f"ladder member {member} is the model-free {self.names_of_members[member]!r}")
        return self.models[member - self.offset]

    @property
    def names_of_members(self) -> tuple[str, ...]:
        return ((self.lookup.name,) if self.lookup is not None else ()) + self.names

    def with_lookup(self, lookup: NgramDrafter | None) -> Ladder:
        """The same networks with ``lookup`` as the bottom member (None: without one)."""
        return dataclasses.replace(self, lookup=lookup)

    @property
    def device(self) -> torch.device:
        return next(self.models[-1].parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.models[-1].parameters()).dtype

    @property
    def info(self) -> LadderInfo:
        # The engine's lockstep loop runs one pass at a time: one device for the whole ladder.
        if self.lookup is None:
            return LadderInfo(self.names, self.params, devices=(0,) * len(self.names))
        params = (0.0, *self.params) if self.params is not None else None
        members = self.names_of_members
        return LadderInfo(members, params, model_free=(0,), devices=(0,) * len(members))


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise LadderError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def ladder_paths(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """Model directories of a ladder: a list of paths, or a directory with ``ladder.json``."""
    if isinstance(source, (str, Path)):
        root = Path(source)
        manifest = root / LADDER_FILE
        if not manifest.is_file():
            raise LadderError(f"{root}: no {LADDER_FILE}; pass a directory with one or a list of model paths")
        try:
            data = json.loads(manifest.read_text())
        except json.JSONDecodeError as err:
            raise LadderError(f"{manifest}: invalid JSON at line {err.lineno}: {err.msg}") from err
        names = data.get("models") if isinstance(data, dict) else None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise LadderError(f'{manifest}: key "models" must be a non-empty list of sub-directory names')
        paths = [root / name for name in names]
    else:
        paths = [Path(p) for p in source]
        if not paths:
            raise LadderError("an empty list of model paths is not a ladder")
    for path in paths:
        if not (path / "config.json").is_file():
            raise LadderError(f"{path}: not a Hugging Face model directory (no config.json)")
    return paths


def tokenizer_signature(tokenizer: Any) -> dict[str, Any]:
    """What must agree across a ladder: the token -> id map and every special token with its id."""
    special = {
        name: (str(token), tokenizer.convert_tokens_to_ids(str(token)))
        for name, token in sorted(tokenizer.special_tokens_map.items())
        if isinstance(token, str)
    }
    return {"vocab": dict(tokenizer.get_vocab()), "special": special}


def tokenizer_difference(first: dict[str, Any], second: dict[str, Any]) -> str | None:
    """A human-readable first difference between two signatures, or None when identical."""
    vocab_a, vocab_b = first["vocab"], second["vocab"]
    if len(vocab_a) != len(vocab_b):
        return f"vocabulary sizes differ ({len(vocab_a)} vs {len(vocab_b)} tokens)"
    for token, index in sorted(vocab_a.items(), key=lambda item: item[1]):
        if vocab_b.get(token) != index:
            return f"token {token!r} has id {index} in the first and {vocab_b.get(token)} in the second"
    special_a, special_b = first["special"], second["special"]
    for name in sorted(set(special_a) | set(special_b)):
        if special_a.get(name) != special_b.get(name):
            return f"special token {name}: {special_a.get(name)} vs {special_b.get(name)} (token, id)"
    return None


# Text every tokenizer of a ladder must encode to the same ids: runs of spaces, tabs and newlines,
# accents, CJK, an emoji, code, digits, the alphabet in one word (where merge rules show).
PROBE_TEXT = (
    "The quick brown fox  jumps\tover\n\nthe lazy dog.   naïve café — 東京 🚀 ½\r\n"
    "def f(x):\n    return x ** 2  # 0123456789\nabcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def probe_text(tokenizer: Any) -> str:
    """:data:`PROBE_TEXT` with the tokenizer's special tokens written out inside it."""
    specials = [str(token) for token in tokenizer.all_special_tokens]
    return PROBE_TEXT + " " + " x ".join(specials) + " end"


def probe_difference(reference: Any, other: Any, text: str) -> str | None:
    """How ``other`` encodes or decodes ``text`` differently from ``reference``, or None."""
    ids_a = reference(text, add_special_tokens=True)["input_ids"]
    ids_b = other(text, add_special_tokens=True)["input_ids"]
    if ids_a != ids_b:
        at = next((i for i, (a, b) in enumerate(zip(ids_a, ids_b)) if a != b), min(len(ids_a), len(ids_b)))
        return (
            f"the probe text encodes to different ids (first difference at position {at}: "
            f"{ids_a[at : at + 4]} vs {ids_b[at : at + 4]})"
        )
    text_a, text_b = reference.decode(ids_a), other.decode(ids_b)
    if text_a != text_b:
        return f"the probe ids decode to different text ({text_a[:40]!r}... vs {text_b[:40]!r}...)"
    return None


def check_tokenizers(paths: Sequence[Path]) -> Any:
    """Load every tokenizer (no weights) and refuse the ladder on the first mismatch; return one."""
    tokenizers = [AutoTokenizer.from_pretrained(str(path)) for path in paths]
    reference = tokenizer_signature(tokenizers[0])
    text = probe_text(tokenizers[0])
    for path, tokenizer in zip(paths[1:], tokenizers[1:]):
        difference = tokenizer_difference(reference, tokenizer_signature(tokenizer))
        if difference is None:
            difference = probe_difference(tokenizers[0], tokenizer, text)
        if difference is not None:
            raise LadderError(
                f"models {paths[0].name!r} ({paths[0]}) and {path.name!r} ({path}) have different "
                f"tokenizers: {difference}; a ladder must share one tokenizer"
            )
    return tokenizers[0]


def load_ladder(
    source: str | Path | Sequence[str | Path],
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
) -> Ladder:
    """Load a ladder from local paths; tokenizers are checked before any weights are read."""
    torch_dtype = resolve_dtype(dtype)
    paths = ladder_paths(source)
    tokenizer = check_tokenizers(paths)
    for path in paths:
        config = AutoConfig.from_pretrained(str(path))
        if int(config.vocab_size) < len(tokenizer):
            raise LadderError(
                f"{path}/config.json: vocab_size {config.vocab_size} is smaller than the tokenizer's "
                f"{len(tokenizer)} tokens"
            )
    for path in paths:
        for weights in sorted(path.glob("*.safetensors")):
            check_safetensors(weights)
    models = [_load_model(path, torch_dtype).to(device) for path in paths]
    return Ladder(
        models=models,
        names=tuple(path.name for path in paths),
        tokenizer=tokenizer,
        eos_token_id=tokenizer.eos_token_id,
    )


def check_safetensors(path: Path) -> None:
    """Refuse a ``.safetensors`` file whose header or tensor data do not fit in the file.

    The format is an 8-byte little-endian header length, a JSON header giving each tensor's
    ``data_offsets`` into the bytes that follow, then those bytes; a truncated download fails
    one of these checks, and the library's own error ("header too large") does not say which file.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise LadderError(f"{path}: not a safetensors file ({size} bytes, shorter than its header)")
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > size - 8:
            raise LadderError(
                f"{path}: truncated or corrupt safetensors file (header of {header_length} bytes in a "
                f"{size}-byte file); rebuild or re-copy it"
            )
        try:
            header = json.loads(handle.read(header_length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise LadderError(f"{path}: corrupt safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise LadderError(f"{path}: corrupt safetensors file (its header is not a JSON object)")
    data_bytes = size - 8 - header_length
    ends = [
        entry["data_offsets"][1]
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and len(entry.get("data_offsets", ())) == 2
    ]
    if ends and max(ends) > data_bytes:
        raise LadderError(
            f"{path}: truncated safetensors file (tensors need {max(ends)} bytes of data, the file has "
            f"{data_bytes}); rebuild or re-copy it"
        )


def _load_model(path: Path, dtype: torch.dtype) -> Any:
    """One model's weights; a file the libraries cannot read is refused naming the directory."""
    try:
        return load_causal_lm(str(path), dtype)
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        reason = f"{type(error).__name__}: {error}"
        raise LadderError(f"{path}: cannot load the model's weights ({reason})") from None
