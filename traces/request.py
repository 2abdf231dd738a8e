"""The one request type every workload source yields.

Trace loaders (:mod:`traces.loaders`) and synthetic generators (:mod:`traces.synthetic`)
both produce iterators of :class:`Request`, sorted by ``arrival``.  A ``NamedTuple`` keeps
construction to a single tuple allocation, so a multi-million-row trace streams cheaply.
"""

from __future__ import annotations

from typing import NamedTuple


class Request(NamedTuple):
    """One inference request of a workload.

    ``request_id`` -- position in the workload (0, 1, 2, ... after filtering);
    ``arrival`` -- seconds from the start of the trace (the first kept request may arrive
    later than 0 when a time window or sub-sampling drops earlier rows);
    ``prompt_tokens`` / ``output_tokens`` -- lengths (``output_tokens`` is the number of
    tokens the request generates, its output budget in a replay);
    ``domain`` -- optional tag (e.g. ``"code"``, ``"chat"``) whose acceptance behaviour the
    worlds may model differently; ``prompt_text`` -- optional text (traces hold lengths
    only; the backend materialises prompts from a corpus when it is absent).
    """

    request_id: int
    arrival: float
    prompt_tokens: int
    output_tokens: int
    domain: str | None = None
    prompt_text: str | None = None
