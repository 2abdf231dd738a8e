"""Workloads in (trace loaders, synthetic generators) and records out (schemas, writers).

* :mod:`traces.request` -- :class:`Request`, the type every workload source yields;
* :mod:`traces.loaders` -- Azure 2023/2024, BurstGPT, Mooncake and the generic JSONL/CSV format;
* :mod:`traces.synthetic` -- Poisson / gamma / on-off arrivals, length distributions,
  domain mixes and regime-shift schedules;
* :mod:`traces.records` -- per-request and per-round result records, the incremental
  Parquet/CSV writer with run metadata, and :func:`traces.records.summarize`.

Submodules are imported explicitly (``from traces.records import RecordWriter``) so that
``import traces`` stays free of pyarrow.
"""

from traces.request import Request

__all__ = ["Request"]
