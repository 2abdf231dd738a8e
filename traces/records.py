"""Result records both worlds write, and the writer / reader for them.

* :class:`RequestRecord` -- one per finished request (arrival, first token, finish, lengths,
  domain; derived TTFT, TPOT, E2E as defined in :mod:`traces.summary`).
* :class:`RoundRecord` -- one per speculation round: chain, lookaheads, per-level
  proposed / accepted counts and pass time, committed target tokens.
  :func:`round_record_from_feedback` builds it from a :class:`policies.contract.RoundFeedback`
  so the simulator and the backend record rounds the same way.
* :class:`RecordWriter` -- a context manager writing ``requests.parquet`` and
  ``rounds.parquet`` (and ``.csv`` copies by option) *incrementally*: rows are buffered as
  plain tuples and flushed as one Parquet row group every ``flush_every`` rows, so memory
  stays bounded and an interrupted run keeps what it flushed (the context manager closes
  the files -- Parquet footer included -- on any exception; a CSV copy also survives a
  hard kill).  ``run.json`` beside them holds the config, seed, package versions, machine,
  the git commit (and whether the tree was dirty), row counts and whether the run completed.
* :func:`read_records` reads a run directory back (Parquet, or CSV when only CSV exists).

Recording rounds is the hot path (~1.4M rounds per simulated trace replay): the writer
accepts plain tuples in field order, and ``record_rounds=False`` turns it off entirely.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from policies.contract import RoundFeedback
from traces.summary import SLO, format_summary, summarize

__all__ = [
    "SLO",
    "RecordWriter",
    "Records",
    "RequestRecord",
    "RoundRecord",
    "format_summary",
    "read_records",
    "round_record_from_feedback",
    "run_environment",
    "summarize",
]

PACKAGES: tuple[str, ...] = (
    "specrouter", "numpy", "scipy", "simpy", "torch", "transformers", "pyarrow", "tqdm",
)  # fmt: skip


class RequestRecord(NamedTuple):
    """One finished request; times in seconds on the run's clock (trace start = 0)."""

    request_id: int
    arrival: float
    first_token: float
    finish: float
    prompt_tokens: int
    output_tokens: int
    domain: str | None = None

    @property
    def ttft(self) -> float:
        """Time to first token, ``first_token - arrival``."""
        return self.first_token - self.arrival

    @property
    def tpot(self) -> float:
        """Mean time per output token after the first, ``(finish - first_token) / (n - 1)``; NaN if n <= 1."""
        steps = self.output_tokens - 1
        return (self.finish - self.first_token) / steps if steps > 0 else float("nan")

    @property
    def e2e(self) -> float:
        """End-to-end latency, ``finish - arrival``."""
        return self.finish - self.arrival


class RoundRecord(NamedTuple):
    """One speculation round of one request.

    ``chain`` is the route's chain written ``"0>2>3"`` (ladder indices, target last) and
    ``chain_models`` the same as a tuple; ``proposed`` / ``accepted`` / ``pass_seconds`` /
    ``passes`` have one entry per chain level (``proposed[0] == 0`` for the drafter;
    ``pass_seconds[j]`` is the summed wall time of level ``j``'s forward passes).
    ``committed`` is the number of target tokens the round added to the output.
    """

    request_id: int
    time: float
    latency: float
    chain: str
    chain_models: tuple[int, ...]
    lookaheads: tuple[int, ...]
    proposed: tuple[int, ...]
    accepted: tuple[int, ...]
    pass_seconds: tuple[float, ...]
    passes: tuple[int, ...]
    committed: int
    domain: str | None = None


_CHAIN_TEXT: dict[tuple[int, ...], str] = {}


def chain_text(chain: tuple[int, ...]) -> str:
    """``(0, 2, 3) -> "0>2>3"`` (cached: a run uses few distinct chains)."""
    text = _CHAIN_TEXT.get(chain)
    if text is None:
        text = _CHAIN_TEXT[chain] = ">".join(map(str, chain))
    return text


def round_record_from_feedback(feedback: RoundFeedback) -> RoundRecord:
    """Build the round record of a finished round (the one conversion both worlds use).

    ``pass_seconds[j] = Σ seconds`` over level ``j``'s passes; ``committed`` is the target's
    ``emitted``.  Written with ``zip(*levels)`` because it runs once per simulated round.
    """
    route = feedback.route
    _, proposed, accepted, emitted, passes = zip(*feedback.levels)
    return RoundRecord(
        feedback.request_id,
        feedback.started,
        feedback.finished - feedback.started,
        chain_text(route.chain),
        route.chain,
        route.lookaheads,
        proposed,
        accepted,
        tuple([sum([timing[3] for timing in level]) for level in passes]),
        tuple(map(len, passes)),
        emitted[-1],
        feedback.domain,
    )


_INTS = pa.list_(pa.int64())
REQUEST_SCHEMA = pa.schema(
    [
        ("request_id", pa.int64()),
        ("arrival", pa.float64()),
        ("first_token", pa.float64()),
        ("finish", pa.float64()),
        ("prompt_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("domain", pa.string()),
    ]
)
ROUND_SCHEMA = pa.schema(
    [
        ("request_id", pa.int64()),
        ("time", pa.float64()),
        ("latency", pa.float64()),
        ("chain", pa.string()),
        ("chain_models", _INTS),
        ("lookaheads", _INTS),
        ("proposed", _INTS),
        ("accepted", _INTS),
        ("pass_seconds", pa.list_(pa.float64())),
        ("passes", _INTS),
        ("committed", pa.int64()),
        ("domain", pa.string()),
    ]
)
TUPLE_SEPARATOR = ">"  # per-level fields in CSV are written "4>1"; an empty tuple is ""


def package_versions() -> dict[str, str | None]:
    """Installed versions (read from package metadata, without importing anything heavy)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@cache
def source_revision() -> dict[str, Any]:
    """The git commit of the code that ran and whether tracked files differed from it.

    ``{"commit": None, "dirty": None}`` outside a git checkout (an installed wheel) or without git.
    Cached: the code does not change during a run, and run.json is rewritten at start and end.
    """
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def run_environment() -> dict[str, Any]:
    """Machine and software description recorded in every ``run.json``."""
    return {
        "source": source_revision(),
        "packages": package_versions(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0],
        },
    }


class _Table:
    """Buffered incremental writer of one record table (Parquet, optionally CSV)."""

    def __init__(self, base: Path, schema: pa.Schema, write_csv: bool) -> None:
        self.schema = schema
        self.rows: list[Sequence[Any]] = []
        self.count = 0
        self.parquet = pq.ParquetWriter(base.with_suffix(".parquet"), schema)
        self.csv_file: IO[str] | None = None
        if write_csv:
            self.csv_file = base.with_suffix(".csv").open("w", newline="")
            self.csv_writer = csv.writer(self.csv_file)
            self.csv_writer.writerow(schema.names)

    def flush(self) -> None:
        if not self.rows:
            return
        columns = list(zip(*self.rows))
        if len(columns) != len(self.schema):
            widths = sorted({len(row) for row in self.rows})
            raise ValueError(
                f"record rows have {widths} fields; expected {len(self.schema)}: {self.schema.names}"
            )
        arrays = [pa.array(col, type=field.type) for col, field in zip(columns, self.schema)]
        self.parquet.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        if self.csv_file is not None:
            self.csv_writer.writerows(_csv_row(row) for row in self.rows)
            self.csv_file.flush()
        self.count += len(self.rows)
        self.rows = []

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.parquet.close()
            if self.csv_file is not None:
                self.csv_file.close()


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, tuple | list):
        return TUPLE_SEPARATOR.join(map(str, value))
    return value


def _csv_row(row: Sequence[Any]) -> list[Any]:
    return [_csv_cell(v) for v in row]


class RecordWriter:
    """Write a run's request and round records plus ``run.json`` into ``out_dir``.

    ``run_metadata`` (config, seed, policy, ...) must be JSON-serialisable (other objects are
    written with ``str``).  ``add_request`` / ``add_round`` take records or plain tuples in
    the record's field order; ``flush_every`` rows are buffered per table before a row group
    is written.  ``record_rounds=False`` makes ``add_round`` a no-op and writes no round file.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        run_metadata: Mapping[str, Any] | None = None,
        *,
        write_csv: bool = False,
        record_rounds: bool = True,
        flush_every: int = 65_536,
    ) -> None:
        if flush_every < 1:
            raise ValueError(f"RecordWriter: flush_every must be >= 1, got {flush_every}")
        self.out_dir = Path(out_dir)
        self.run_metadata = dict(run_metadata or {})
        self.write_csv = write_csv
        self.record_rounds = record_rounds
        self.flush_every = flush_every
        self.requests: _Table | None = None
        self.rounds: _Table | None = None
        self.started = ""

    def __enter__(self) -> RecordWriter:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.requests = _Table(self.out_dir / "requests", REQUEST_SCHEMA, self.write_csv)
        if self.record_rounds:
            self.rounds = _Table(self.out_dir / "rounds", ROUND_SCHEMA, self.write_csv)
        self._write_run_json("running")
        return self

    def add_request(self, record: Sequence[Any]) -> None:
        table = self._table(self.requests)
        table.rows.append(record)
        if len(table.rows) >= self.flush_every:
            table.flush()

    def add_requests(self, records: Iterable[Sequence[Any]]) -> None:
        for record in records:
            self.add_request(record)

    def add_round(self, record: Sequence[Any]) -> None:
        if not self.record_rounds:
            return
        table = self._table(self.rounds)
        table.rows.append(record)
        if len(table.rows) >= self.flush_every:
            table.flush()

    def add_feedback(self, feedback: RoundFeedback) -> None:
        """Record a finished round straight from its feedback."""
        if self.record_rounds:
            self.add_round(round_record_from_feedback(feedback))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for table in (self.requests, self.rounds):
            if table is not None:
                table.close()
        status = "complete" if exc_type is None else f"interrupted: {exc_type.__name__}"
        self._write_run_json(status)

    def _table(self, table: _Table | None) -> _Table:
        if table is None:
            raise RuntimeError("RecordWriter is not open: use it as `with RecordWriter(...) as writer:`")
        return table

    def _write_run_json(self, status: str) -> None:
        counts = {
            "requests": self.requests.count if self.requests else 0,
            "rounds": self.rounds.count if self.rounds else 0,
        }
        document = {
            **self.run_metadata,
            **run_environment(),
            "status": status,
            "started": self.started,
            "written": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "rows": counts,
        }
        path = self.out_dir / "run.json"
        path.write_text(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")


class Records(NamedTuple):
    """A run read back: its request records, round records (empty if not recorded) and run.json."""

    requests: list[RequestRecord]
    rounds: list[RoundRecord]
    metadata: dict[str, Any]


def read_records(run_dir: str | os.PathLike[str], *, rounds: bool = True) -> Records:
    """Read ``requests`` / ``rounds`` (Parquet preferred, CSV otherwise) and ``run.json`` from a run dir."""
    base = Path(run_dir)
    if not base.is_dir():
        raise FileNotFoundError(f"read_records: {base} is not a directory")
    meta_path = base / "run.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    requests = [RequestRecord(*row) for row in _read_table(base / "requests", REQUEST_SCHEMA, required=True)]
    round_rows = _read_table(base / "rounds", ROUND_SCHEMA, required=False) if rounds else []
    return Records(requests, [RoundRecord(*row) for row in round_rows], meta)


def _read_table(base: Path, schema: pa.Schema, required: bool) -> list[tuple[Any, ...]]:
    parquet, csv_path = base.with_suffix(".parquet"), base.with_suffix(".csv")
    if parquet.exists():
        table = pq.read_table(parquet)
        columns = [table.column(name).to_pylist() for name in schema.names]
        list_columns = {i for i, f in enumerate(schema) if pa.types.is_list(f.type)}
        return [
            tuple(tuple(v) if i in list_columns else v for i, v in enumerate(row)) for row in zip(*columns)
        ]
    if csv_path.exists():
        return _read_csv(csv_path, schema)
    if required:
        raise FileNotFoundError(f"read_records: neither {parquet.name} nor {csv_path.name} in {base.parent}")
    return []


def _parse_cell(text: str, field: pa.Field) -> Any:
    kind = field.type
    if pa.types.is_list(kind):
        item = float if pa.types.is_floating(kind.value_type) else int
        return tuple(item(v) for v in text.split(TUPLE_SEPARATOR)) if text else ()
    if pa.types.is_string(kind):
        return text or None
    return float(text) if pa.types.is_floating(kind) else int(text)


def _read_csv(path: Path, schema: pa.Schema) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != schema.names:
            raise ValueError(f"{path}: line 1: header {header} is not {schema.names}")
        for line, row in enumerate(reader, start=2):
            try:
                rows.append(tuple(_parse_cell(text, field) for text, field in zip(row, schema, strict=True)))
            except ValueError as error:
                raise ValueError(f"{path}: line {line}: {error}") from error
    return rows
