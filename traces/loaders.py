"""Streaming trace loaders: a file in any :mod:`traces.formats` format -> sorted ``Request`` s.

``load_trace(path)`` returns a :class:`TraceReader`, an iterator of
:class:`traces.request.Request` sorted by arrival, in bounded memory:

1. a first pass parses and validates every row without keeping any, so a malformed row
   stops the load *before* the first request is handed out (``TraceFormatError`` naming
   the file, the line and the problem) or, with ``on_error="skip"``, is counted;
   it also finds the earliest timestamp and whether the timestamps are sorted;
2. a second pass streams the rows through the options.  Unsorted files are the one
   exception to bounded memory: they are sorted in memory (stable, by time) with a
   ``UserWarning``.

Options (all optional; applied in this order):

* ``start`` / ``end`` -- keep rows with ``start <= t < end``, ``t`` in seconds since the
  trace start (the earliest timestamp for ``azure``, whose stamps are wall-clock dates;
  the format's own zero for the others, which already count from the start -- override
  with ``rebase``);
* ``keep_failed`` -- rows with 0 output tokens (BurstGPT's failed requests) are dropped
  unless this is true; either way they are counted in ``report.failed``;
* ``sample`` -- keep each remaining row with this probability (Bernoulli thinning drawn
  from ``random.Random(seed)``, so a seed gives the same subset every time);
* ``rate_scale`` -- ``arrival = (t - start) / rate_scale``: 2 doubles the request rate;
* ``limit`` -- stop after this many requests;
* ``validate_first=False`` -- skip the first pass (half the parsing time): bad rows then
  stop the load mid-stream, and an out-of-order timestamp is an error instead of a sort.

Kept requests are numbered ``0, 1, 2, ...``; ``domain`` (if given) tags requests whose
row has no domain of its own.  ``reader.report`` counts rows, skipped and failed rows.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Literal

from traces.formats import (
    ALIASES,
    FORMATS,
    BadRow,
    Parser,
    RawRow,
    UnreadableLine,
    detect_format,
    estimate_tokens,
    format_rows,
    generic_parsers,
)
from traces.request import Request

OnError = Literal["raise", "skip"]
GZIP_MAGIC = b"\x1f\x8b"
# Reading strips a UTF-8 byte-order mark (spreadsheet exports write one) before the header is parsed.
READ_ENCODING = "utf-8-sig"


class TraceFormatError(ValueError):
    """A malformed trace row or file: ``"<file>: line <n>: <problem>"`` (``"<file>: <problem>"``
    for a problem of the whole file)."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, problem: str) -> None:
        where = f"{path}: line {line}: " if line is not None else f"{path}: "
        super().__init__(where + problem)
        self.path, self.line, self.problem = str(path), line, problem


class EmptyTraceError(ValueError):
    """A trace (or the part of it the options keep) with no requests: an error, not an empty run."""


class TraceOptionError(ValueError):
    """A load option out of range (``limit``, ``sample``, ``rate_scale``, the time window)."""


@dataclass
class LoadReport:
    """What a load did: ``rows`` valid data rows, ``skipped`` malformed rows skipped,
    ``failed`` rows with 0 output tokens in the window, ``yielded`` requests handed out."""

    path: str
    format: str
    rows: int = 0
    skipped: int = 0
    failed: int = 0
    yielded: int = 0
    unsorted: bool = False
    first_time: float = 0.0
    last_time: float = 0.0
    skipped_lines: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (``run.json`` records it)."""
        return asdict(self)


def is_gzip(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts with the gzip magic bytes (its name does not decide)."""
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def open_text(path: str | os.PathLike[str], mode: Literal["r", "w"] = "r") -> IO[str]:
    """Open a trace as UTF-8 text; ``newline=""`` keeps CSV quoting exact.

    Reading: gzip is recognised by its magic bytes, whatever the name; a ``.gz`` name on a file
    that is not gzip is refused (a download that went wrong, most often); a byte-order mark is
    dropped.  Writing: a ``.gz`` name compresses.
    """
    if mode == "w":
        if str(path).endswith(".gz"):
            return gzip.open(path, "wt", newline="", encoding="utf-8")  # noqa: SIM115 -- caller closes
        return open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 -- caller closes
    if is_gzip(path):
        return gzip.open(path, "rt", newline="", encoding=READ_ENCODING)  # noqa: SIM115 -- caller closes
    if str(path).endswith(".gz"):
        raise TraceFormatError(
            path, None, "named .gz but not gzip-compressed (no gzip magic bytes); rename or compress it"
        )
    return open(path, mode, newline="", encoding=READ_ENCODING)  # noqa: SIM115 -- caller closes


def undecodable_line(path: str | os.PathLike[str]) -> tuple[int, str]:
    """Line number and description of the first line that is not UTF-8.

    Text decoding works on blocks, so the decoder's own error cannot say which line; this second,
    binary read (only on the error path) can.
    """
    opener = gzip.open if is_gzip(path) else open
    with opener(path, "rb") as handle:
        for line, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                byte = raw[error.start]
                return line, f"not UTF-8 text (byte 0x{byte:02x} at column {error.start + 1}); a binary file?"
    return 1, "not UTF-8 text"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the file's bytes as stored (``run.json`` records which trace a run read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_format(path: str | os.PathLike[str], fmt: str) -> str:
    """``"auto"`` -> the format named by the file's first non-empty line; aliases resolved."""
    if fmt != "auto":
        name = ALIASES.get(fmt, fmt)
        if name not in FORMATS:
            raise ValueError(f"unknown trace format {fmt!r}; expected 'auto' or one of {sorted(FORMATS)}")
        return name
    try:
        with open_text(path) as handle:
            for line in handle:
                if line.strip():
                    return detect_format(line, str(path))
    except UnicodeDecodeError:
        raise TraceFormatError(path, *undecodable_line(path)) from None
    except (OSError, EOFError, zlib.error) as error:
        raise TraceFormatError(path, 1, f"corrupt gzip data ({error})") from None
    raise EmptyTraceError(f"{path}: empty trace: the file has no lines")


class TraceReader(Iterator[Request]):
    """Iterator of the requests of one trace file (see the module docstring for the options)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        format: str = "auto",
        *,
        start: float | None = None,
        end: float | None = None,
        limit: int | None = None,
        rate_scale: float = 1.0,
        sample: float = 1.0,
        seed: int = 0,
        on_error: OnError = "raise",
        keep_failed: bool = False,
        domain: str | None = None,
        rebase: bool | None = None,
        validate_first: bool = True,
        count_tokens: Callable[[str], int] = estimate_tokens,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such trace file")
        if not rate_scale > 0:
            raise TraceOptionError(f"rate_scale must be > 0, got {rate_scale}")
        if not 0 < sample <= 1:
            raise TraceOptionError(f"sample must be in (0, 1], got {sample}")
        if limit is not None and limit < 1:
            raise TraceOptionError(f"limit must be >= 1, got {limit}")
        if start is not None and end is not None and end <= start:
            raise TraceOptionError(f"empty time window: end {end} <= start {start}")
        if on_error not in ("raise", "skip"):
            raise TraceOptionError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.format = resolve_format(self.path, format)
        self.parser: Parser = FORMATS[self.format]
        if count_tokens is not estimate_tokens and self.format in ("jsonl", "csv"):
            jsonl_parser, csv_parser = generic_parsers(count_tokens)
            self.parser = csv_parser if self.format == "csv" else jsonl_parser
        self.start, self.end, self.limit = start, end, limit
        self.rate_scale, self.sample, self.seed = rate_scale, sample, seed
        self.on_error, self.keep_failed, self.domain = on_error, keep_failed, domain
        self.rebase = self.format == "azure" if rebase is None else rebase
        self.validate_first = validate_first
        self.report = LoadReport(str(self.path), self.format)
        self._requests: Iterator[Request] | None = None

    def __iter__(self) -> TraceReader:
        return self

    def __next__(self) -> Request:
        if self._requests is None:
            self._requests = self._generate()
        return next(self._requests)

    def _rows(self) -> Iterator[RawRow | BadRow]:
        last_line = 0
        with open_text(self.path) as handle:
            try:
                for row in self.parser(handle):
                    last_line = row.line
                    yield row
            except UnicodeDecodeError:  # a subclass of ValueError: before the header case
                raise TraceFormatError(self.path, *undecodable_line(self.path)) from None
            except UnreadableLine as error:
                raise TraceFormatError(self.path, error.line, error.problem) from None
            except ValueError as error:  # header problems: "line 1: ..."
                raise TraceFormatError(self.path, 1, str(error).removeprefix("line 1: ")) from error
            except (OSError, EOFError, zlib.error) as error:  # truncated or corrupt gzip stream
                raise TraceFormatError(self.path, last_line + 1, f"corrupt gzip data ({error})") from None

    def _scan(self) -> tuple[float, bool]:
        """First pass: validate, count, find the earliest time and whether times are sorted."""
        report = self.report
        earliest, previous, ordered = float("inf"), float("-inf"), True
        for row in self._rows():
            if isinstance(row, BadRow):
                if self.on_error == "raise":
                    raise TraceFormatError(self.path, row.line, row.problem)
                report.skipped += 1
                if len(report.skipped_lines) < 20:
                    report.skipped_lines.append(row.line)
                continue
            report.rows += 1
            if row.time < previous:
                ordered = False
            previous = row.time
            earliest = min(earliest, row.time)
        if report.rows == 0:
            detail = f"all {report.skipped} data rows are malformed" if report.skipped else "no data rows"
            raise EmptyTraceError(f"{self.path}: empty trace: {detail}")
        return earliest, ordered

    def _checked_rows(self) -> Iterator[RawRow]:
        """Single pass (``validate_first=False``): bad rows and disorder are found while streaming."""
        previous = float("-inf")
        for row in self._rows():
            if isinstance(row, BadRow):
                if self.on_error == "raise":
                    raise TraceFormatError(self.path, row.line, row.problem)
                self.report.skipped += 1
                if len(self.report.skipped_lines) < 20:
                    self.report.skipped_lines.append(row.line)
                continue
            if row.time < previous:
                raise TraceFormatError(
                    self.path, row.line, "timestamp earlier than the previous row; load with "
                    "validate_first=True to sort the trace",
                )  # fmt: skip
            previous = row.time
            self.report.rows += 1
            yield row

    def _generate(self) -> Iterator[Request]:
        report = self.report
        rows: Iterator[RawRow | BadRow]
        origin: float | None = None
        if not self.validate_first:
            rows = self._checked_rows()
        else:
            earliest, ordered = self._scan()
            origin = earliest if self.rebase else 0.0
            if ordered:
                rows = self._rows()
            else:
                report.unsorted = True
                warnings.warn(
                    f"{self.path}: timestamps are not sorted; sorting {report.rows} rows in memory",
                    UserWarning,
                    stacklevel=3,
                )
                kept = [row for row in self._rows() if isinstance(row, RawRow)]
                kept.sort(key=lambda row: row.time)
                rows = iter(kept)
        shift = self.start or 0.0
        rng = random.Random(self.seed)
        next_id = 0
        for row in rows:
            if isinstance(row, BadRow):
                continue
            if origin is None:
                origin = row.time if self.rebase else 0.0
                report.first_time = row.time - origin
            t = row.time - origin
            report.last_time = t
            if self.start is not None and t < self.start:
                continue
            if self.end is not None and t >= self.end:
                break
            if row.output_tokens == 0:
                report.failed += 1
                if not self.keep_failed:
                    continue
            if self.sample < 1.0 and rng.random() >= self.sample:
                continue
            yield Request(
                next_id,
                (t - shift) / self.rate_scale,
                row.prompt_tokens,
                row.output_tokens,
                row.domain if row.domain is not None else self.domain,
                row.prompt_text,
            )
            next_id += 1
            report.yielded = next_id
            if next_id == self.limit:
                break
        if report.skipped:
            warnings.warn(
                f"{self.path}: skipped {report.skipped} malformed rows (lines {report.skipped_lines[:5]}...)",
                UserWarning,
                stacklevel=3,
            )
        if report.rows == 0:
            detail = f"all {report.skipped} data rows are malformed" if report.skipped else "no data rows"
            raise EmptyTraceError(f"{self.path}: empty trace: {detail}")
        if next_id == 0:
            raise EmptyTraceError(
                f"{self.path}: no requests left after the options (rows {report.rows}, window "
                f"[{self.start}, {self.end}), failed dropped {report.failed}, sample {self.sample})"
            )


def load_trace(path: str | os.PathLike[str], format: str = "auto", **options: object) -> TraceReader:
    """Stream a trace file as sorted :class:`Request` s; see :class:`TraceReader` for ``options``."""
    return TraceReader(path, format, **options)  # type: ignore[arg-type]


def write_trace(requests: Iterable[Request], path: str | os.PathLike[str], format: str = "auto") -> int:
    """Write ``requests`` (an iterable of :class:`Request`) in ``format``; returns the count.

    ``"auto"`` picks by suffix: ``.jsonl`` -> generic JSONL, ``.csv`` -> generic CSV.
    ``.gz`` compresses.  Streams: nothing is held in memory.
    """
    name = str(path).removesuffix(".gz")
    if format == "auto":
        format = "jsonl" if name.endswith(".jsonl") else "csv" if name.endswith(".csv") else ""
        if not format:
            raise ValueError(f"{path}: cannot pick a format from the suffix; pass format=")
    count = 0

    def counted() -> Iterator[Request]:
        nonlocal count
        for request in requests:
            count += 1
            yield request

    with open_text(path, "w") as handle:
        handle.writelines(format_rows(counted(), format))
    return count
