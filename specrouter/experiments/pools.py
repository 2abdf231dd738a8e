"""Where search trials run: a local process pool (default) or a Ray cluster.

(*Executor* in this project means the backend's :mod:`backend.executor`; these are *pools*.)
Both pools take a list of picklable tasks and a top-level function, and return the
results **in task order**, so a search that feeds them the same tasks gets the same
answers whichever pool ran them (the determinism the search relies on).

* :class:`LocalPool` -- ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn``
  start method (no inherited threads or torch state); ``workers=1`` runs in-process.
* :class:`RayPool` -- ``ray.remote`` tasks on a local Ray started with ``workers`` CPUs,
  or on an existing cluster given ``address`` (``"auto"`` or ``"ray://host:10001"``).
  Ray is an optional extra: ``pip install -e '.[ray]'``.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol, TypeVar

Task = TypeVar("Task")
Result = TypeVar("Result")

POOL_NAMES = ("local", "ray")


class TrialPool(Protocol):
    name: str
    workers: int

    def map(self, function: Callable[[Any], Any], tasks: Sequence[Any]) -> list[Any]: ...

    def close(self) -> None: ...


class LocalPool:
    """A pool of ``workers`` local processes (``spawn``); ``workers=1`` runs inline."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._pool: ProcessPoolExecutor | None = None

    def map(self, function: Callable[[Any], Any], tasks: Sequence[Any]) -> list[Any]:
        if self.workers == 1 or len(tasks) <= 1:
            return [function(task) for task in tasks]
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
        return list(self._pool.map(function, tasks))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class RayPool:
    """Run tasks as Ray remote functions; results come back in task order."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        try:
            import ray
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "--pool ray needs Ray: install it with `pip install -e '.[ray]'` "
                "(or use the default --pool local)"
            ) from error
        self._ray = ray
        self._started_here = not ray.is_initialized()
        if self._started_here:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=max(1, workers or os.cpu_count() or 1),
                    include_dashboard=False,
                    log_to_driver=False,
                )
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self._remotes: dict[Callable[[Any], Any], Any] = {}

    def map(self, function: Callable[[Any], Any], tasks: Sequence[Any]) -> list[Any]:
        remote = self._remotes.get(function)
        if remote is None:
            remote = self._remotes[function] = self._ray.remote(num_cpus=1)(function)
        return list(self._ray.get([remote.remote(task) for task in tasks]))

    def close(self) -> None:
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()


def make_pool(name: str, workers: int | None = None, address: str | None = None) -> TrialPool:
    """``"local"`` or ``"ray"``; ``address`` only applies to Ray."""
    if name == "local":
        if address:
            raise ValueError("--address only applies to --pool ray")
        return LocalPool(workers)
    if name == "ray":
        return RayPool(workers, address)
    raise ValueError(f"unknown pool {name!r}: choose one of {', '.join(POOL_NAMES)}")
