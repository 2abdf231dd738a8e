"""Row-level parsers and writers of every trace format.

Each parser is a generator over an open text file that yields, per data row, either a
:class:`RawRow` ``(line, time, prompt_tokens, output_tokens, domain, prompt_text)`` --
``time`` in seconds on the format's own clock -- or a :class:`BadRow` ``(line, problem)``.
:mod:`traces.loaders` turns those into :class:`traces.request.Request` streams and decides
what a bad row does.  Writers are the inverse, used for round-trip tests and for saving
synthetic workloads.

Formats (``FORMATS``):

* ``azure`` (Azure LLM inference 2023 and 2024): CSV ``TIMESTAMP,ContextTokens,GeneratedTokens``,
  timestamps ``YYYY-MM-DD HH:MM:SS[.fraction][+HH:MM|Z]`` (any number of fractional digits);
  times are seconds since midnight of the first row's date, so 100 ns digits survive.
* ``burstgpt``: CSV ``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type``,
  timestamps in seconds; failed requests have 0 response tokens.
* ``mooncake``: JSONL ``timestamp`` (milliseconds), ``input_length``, ``output_length``, ``hash_ids``.
* ``jsonl`` / ``csv`` (our generic format, docs/traces.md): ``arrival`` (seconds),
  ``prompt_tokens`` and/or ``prompt_text``, ``output_tokens``, optional ``domain``.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, NamedTuple

from traces.request import Request


class RawRow(NamedTuple):
    line: int
    time: float
    prompt_tokens: int
    output_tokens: int
    domain: str | None
    prompt_text: str | None


class BadRow(NamedTuple):
    line: int
    problem: str


class UnreadableLine(ValueError):
    """A line no row can be made of (a NUL byte, a broken quote): the whole file is refused."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line, self.problem = line, problem


Parsed = RawRow | BadRow
Parser = Callable[[IO[str]], Iterator[Parsed]]

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type")
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length")
GENERIC_COLUMNS = ("arrival", "prompt_tokens", "output_tokens", "domain", "prompt_text")
AZURE_EPOCH = dt.datetime(2023, 11, 16)  # date written by write_trace(..., "azure")
# Largest token count a row may give: no model's context comes near it, and it fits every integer
# column downstream (Parquet int64, numpy), where a larger one would overflow far from its line.
MAX_TOKEN_COUNT = 2**31 - 1


def estimate_tokens(text: str) -> int:
    """Rough prompt length when only text is given: one token per 4 UTF-8 bytes (typical BPE)."""
    return max(1, round(len(text.encode()) / 4))


def parse_length(value: Any, name: str, minimum: int = 0) -> int:
    """A token count: an integer in ``[minimum, MAX_TOKEN_COUNT]`` (``"12"``, ``12`` or ``12.0``)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} {value!r} is not an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"{name} {value!r} is not an integer") from None
    else:
        raise ValueError(f"{name} {value!r} is not an integer")
    if number < 0:
        raise ValueError(f"{name} is negative ({number})")
    if number < minimum:
        raise ValueError(f"{name} is {number}; expected at least {minimum}")
    if number > MAX_TOKEN_COUNT:
        raise ValueError(
            f"{name} {number} is not a plausible token count; expected at most {MAX_TOKEN_COUNT}"
        )
    return number


def parse_prompt_length(value: Any, name: str) -> int:
    """A prompt length: at least 1 (a request without a prompt token has nothing to decode from)."""
    return parse_length(value, name, minimum=1)


def parse_seconds(value: Any, name: str, negative: bool = True) -> float:
    """A finite number of seconds (string or JSON number); ``negative=False`` refuses times before 0."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name} {value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} {value!r} is not a finite number")
    if not negative and number < 0:
        raise ValueError(f"{name} {value!r} is negative; expected seconds since the trace start (>= 0)")
    return number


class DatetimeParser:
    """Parses Azure timestamps to seconds since midnight of the first date seen.

    Offsets (``+01:00``, ``Z``) are applied, so mixed offsets land on one UTC clock.
    """

    def __init__(self) -> None:
        self.reference_day: int | None = None
        self.days: dict[str, int] = {}

    def __call__(self, text: str) -> float:
        text = text.strip()
        problem = f"timestamp {text!r} is not 'YYYY-MM-DD HH:MM:SS[.fraction][+HH:MM]'"
        if len(text) < 19 or text[10] not in " T" or text[13] != ":" or text[16] != ":":
            raise ValueError(problem)
        day = self.days.get(text[:10])
        if day is None:
            try:
                day = dt.date.fromisoformat(text[:10]).toordinal()
            except ValueError:
                raise ValueError(problem) from None
            self.days[text[:10]] = day
        clock, offset = text[11:], 0
        if clock.endswith("Z"):
            clock = clock[:-1]
        elif len(clock) > 8 and clock[-6] in "+-" and clock[-3] == ":":
            sign = -1 if clock[-6] == "-" else 1
            if not (clock[-5:-3].isdigit() and clock[-2:].isdigit()):
                raise ValueError(problem)
            offset = sign * (int(clock[-5:-3]) * 3600 + int(clock[-2:]) * 60)
            clock = clock[:-6]
        hours, minutes, seconds = clock[0:2], clock[3:5], clock[6:]
        if not (hours.isdigit() and minutes.isdigit() and seconds[:2].isdigit()):
            raise ValueError(problem)
        if len(seconds) > 2 and (seconds[2] != "." or not seconds[3:].isdigit()):
            raise ValueError(problem)
        h, m, s = int(hours), int(minutes), float(seconds)
        if h > 23 or m > 59 or s >= 61:
            raise ValueError(problem)
        if self.reference_day is None:
            self.reference_day = day
        return (day - self.reference_day) * 86400 + h * 3600 + m * 60 + s - offset


def _csv_rows(handle: IO[str], required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, int], list[str]]]:
    """Yield ``(line, column index by name, cells)``; checks the header names ``required``."""
    reader = csv.reader(handle)
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise UnreadableLine(reader.line_num, f"unreadable CSV header ({error})") from None
    if header is None:
        return
    header = [name.strip() for name in header]
    missing = [name for name in required if name not in header]
    if missing:
        raise ValueError(f"line 1: header {header} lacks column(s) {missing}")
    index = {name: i for i, name in enumerate(header)}
    while True:
        try:
            cells = next(reader, None)
        except csv.Error as error:  # a NUL byte or a quote left open: nothing after it parses
            raise UnreadableLine(reader.line_num, f"unreadable CSV ({error})") from None
        if cells is None:
            return
        if cells:
            yield reader.line_num, index, cells


def _csv_parser(required: tuple[str, ...], build: Callable[[dict[str, int], list[str]], RawRow]) -> Parser:
    def parse(handle: IO[str]) -> Iterator[Parsed]:
        width = 0
        for line, index, cells in _csv_rows(handle, required):
            width = width or len(index)
            if len(cells) != width:
                yield BadRow(line, f"expected {width} columns, found {len(cells)}")
                continue
            try:
                yield build(index, cells)._replace(line=line)
            except ValueError as error:
                yield BadRow(line, str(error))

    return parse


def parse_azure(handle: IO[str]) -> Iterator[Parsed]:
    timestamp = DatetimeParser()

    def build(index: dict[str, int], cells: list[str]) -> RawRow:
        return RawRow(
            0,
            timestamp(cells[index["TIMESTAMP"]]),
            parse_prompt_length(cells[index["ContextTokens"]], "ContextTokens"),
            parse_length(cells[index["GeneratedTokens"]], "GeneratedTokens"),
            None,
            None,
        )

    return _csv_parser(AZURE_COLUMNS, build)(handle)


def _build_burstgpt(index: dict[str, int], cells: list[str]) -> RawRow:
    return RawRow(
        0,
        parse_seconds(cells[index["Timestamp"]], "Timestamp", negative=False),
        parse_prompt_length(cells[index["Request tokens"]], "Request tokens"),
        parse_length(cells[index["Response tokens"]], "Response tokens"),
        None,
        None,
    )


def _generic_row(get: Callable[[str], Any], count_tokens: Callable[[str], int]) -> RawRow:
    """Build a generic-format row from a field getter (``None`` / ``""`` means absent)."""
    text = get("prompt_text")
    text = str(text) if text not in (None, "") else None
    tokens = get("prompt_tokens")
    if tokens in (None, ""):
        if text is None:
            raise ValueError("needs prompt_tokens or prompt_text")
        prompt = count_tokens(text)
    else:
        prompt = parse_prompt_length(tokens, "prompt_tokens")
    output = get("output_tokens")
    if output in (None, ""):
        raise ValueError("missing output_tokens")
    arrival = get("arrival")
    if arrival in (None, ""):
        raise ValueError("missing arrival")
    domain = get("domain")
    return RawRow(
        0,
        parse_seconds(arrival, "arrival", negative=False),
        prompt,
        parse_length(output, "output_tokens"),
        str(domain) if domain not in (None, "") else None,
        text,
    )


def _json_lines(handle: IO[str], build: Callable[[dict[str, Any]], RawRow]) -> Iterator[Parsed]:
    for line, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            yield BadRow(line, f"invalid JSON ({error.msg} at column {error.colno})")
            continue
        if not isinstance(record, dict):
            yield BadRow(line, f"expected a JSON object, found {type(record).__name__}")
            continue
        try:
            yield build(record)._replace(line=line)
        except ValueError as error:
            yield BadRow(line, str(error))


def _build_mooncake(record: dict[str, Any]) -> RawRow:
    missing = [key for key in MOONCAKE_KEYS if key not in record]
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    return RawRow(
        0,
        parse_seconds(record["timestamp"], "timestamp", negative=False) / 1000.0,
        parse_prompt_length(record["input_length"], "input_length"),
        parse_length(record["output_length"], "output_length"),
        None,
        None,
    )


def generic_parsers(count_tokens: Callable[[str], int] = estimate_tokens) -> tuple[Parser, Parser]:
    """The generic JSONL and CSV parsers, with ``count_tokens`` for rows that only give text."""

    def parse_jsonl(handle: IO[str]) -> Iterator[Parsed]:
        return _json_lines(handle, lambda record: _generic_row(record.get, count_tokens))

    def build_csv(index: dict[str, int], cells: list[str]) -> RawRow:
        return _generic_row(lambda name: cells[index[name]] if name in index else None, count_tokens)

    required = ("arrival", "output_tokens")
    return parse_jsonl, _csv_parser(required, build_csv)


_GENERIC_JSONL, _GENERIC_CSV = generic_parsers()
FORMATS: dict[str, Parser] = {
    "azure": parse_azure,
    "burstgpt": _csv_parser(("Timestamp", "Request tokens", "Response tokens"), _build_burstgpt),
    "mooncake": lambda handle: _json_lines(handle, _build_mooncake),
    "jsonl": _GENERIC_JSONL,
    "csv": _GENERIC_CSV,
}
ALIASES = {"azure2023": "azure", "azure2024": "azure", "generic-jsonl": "jsonl", "generic-csv": "csv"}


def detect_format(first_line: str, name: str) -> str:
    """Pick a format from the first non-empty line (CSV header or first JSON object)."""
    stripped = first_line.strip()
    if stripped.startswith("{"):
        try:
            keys = set(json.loads(stripped))
        except (json.JSONDecodeError, TypeError):
            keys = set()
        if "input_length" in keys:
            return "mooncake"
        if "arrival" in keys or "output_tokens" in keys:
            return "jsonl"
        raise ValueError(f"{name}: line 1: cannot tell the JSONL format from keys {sorted(keys)}")
    try:
        header = {cell.strip() for cell in next(csv.reader([stripped]), [])}
    except csv.Error as error:
        raise ValueError(f"{name}: line 1: unreadable CSV header ({error})") from None
    if set(AZURE_COLUMNS) <= header:
        return "azure"
    if {"Timestamp", "Request tokens", "Response tokens"} <= header:
        return "burstgpt"
    if "arrival" in header:
        return "csv"
    raise ValueError(
        f"{name}: line 1: unrecognised header {stripped[:120]!r}; pass format= one of {sorted(FORMATS)}"
    )


def format_rows(requests: Iterable[Request], fmt: str) -> Iterator[str]:
    """Lines (newline included, header first for CSV) of ``requests`` written in format ``fmt``."""
    fmt = ALIASES.get(fmt, fmt)
    if fmt in ("azure", "burstgpt", "csv"):
        header = {"azure": AZURE_COLUMNS, "burstgpt": BURSTGPT_COLUMNS, "csv": GENERIC_COLUMNS}[fmt]
        yield ",".join(header) + "\n"
    for r in requests:
        if fmt == "azure":
            ticks = round(r.arrival * 1e7)  # 100 ns resolution, as in the Azure release
            stamp = AZURE_EPOCH + dt.timedelta(microseconds=ticks // 10)
            fraction = f"{stamp.microsecond:06d}{ticks % 10}"
            yield f"{stamp:%Y-%m-%d %H:%M:%S}.{fraction},{r.prompt_tokens},{r.output_tokens}\n"
        elif fmt == "burstgpt":
            total = r.prompt_tokens + r.output_tokens
            yield f"{r.arrival!r},ChatGPT,{r.prompt_tokens},{r.output_tokens},{total},Conversation log\n"
        elif fmt == "mooncake":
            blocks = list(range(math.ceil(r.prompt_tokens / 512)))
            moon = {"timestamp": round(r.arrival * 1000), "input_length": r.prompt_tokens}
            yield json.dumps({**moon, "output_length": r.output_tokens, "hash_ids": blocks}) + "\n"
        elif fmt == "jsonl":
            record: dict[str, Any] = {
                "arrival": r.arrival,
                "prompt_tokens": r.prompt_tokens,
                "output_tokens": r.output_tokens,
            }
            if r.domain is not None:
                record["domain"] = r.domain
            if r.prompt_text is not None:
                record["prompt_text"] = r.prompt_text
            yield json.dumps(record, ensure_ascii=False) + "\n"
        elif fmt == "csv":
            cells = (repr(r.arrival), r.prompt_tokens, r.output_tokens, r.domain or "", r.prompt_text or "")
            yield _csv_line(cells)
        else:
            raise ValueError(f"unknown trace format {fmt!r}; expected one of {sorted(FORMATS)}")


class _LineBuffer:
    def write(self, text: str) -> str:
        return text


_CSV_WRITER = csv.writer(_LineBuffer())  # "\r\n" terminator: fields with \r or \n get quoted


def _csv_line(cells: Iterable[Any]) -> str:
    return str(_CSV_WRITER.writerow(cells))
