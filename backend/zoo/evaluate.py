"""Held-out measurements recorded beside the weights: loss and fp16-vs-fp32 argmax agreement.

Evaluation windows are fixed: ``windows`` evenly spaced windows of ``context`` tokens per domain
from the held-out token stream, so every model and every build is scored on the same positions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def evaluation_windows(stream: np.ndarray, context: int, windows: int) -> torch.Tensor:
    """``windows`` evenly spaced windows of ``context + 1`` tokens from ``stream``."""
    if len(stream) < context + 2:
        raise ValueError(f"held-out stream of {len(stream)} tokens is shorter than one window of {context}")
    starts = np.linspace(0, len(stream) - context - 1, windows).astype(np.int64)
    return torch.from_numpy(np.stack([stream[s : s + context + 1].astype(np.int64) for s in starts]))


@torch.no_grad()
def held_out_loss(model: Any, streams: dict[str, np.ndarray], context: int, windows: int) -> dict[str, float]:
    """Mean next-token cross-entropy (nats) per domain."""
    result = {}
    for domain, stream in streams.items():
        batch = evaluation_windows(stream, context, windows)
        logits = model(input_ids=batch[:, :-1]).logits.float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        result[domain] = round(float(loss), 4)
    return result


@torch.no_grad()
def argmax_agreement(
    reference: Any, candidate: Any, streams: dict[str, np.ndarray], context: int, windows: int
) -> dict[str, float | int]:
    """Fraction of held-out positions where both models' argmax tokens agree."""
    agree = total = 0
    for stream in streams.values():
        inputs = evaluation_windows(stream, context, windows)[:, :-1]
        left = reference(input_ids=inputs).logits.argmax(-1)
        right = candidate(input_ids=inputs).logits.argmax(-1)
        agree += int((left == right).sum())
        total += left.numel()
    return {"agreement": agree / total, "positions": total}
