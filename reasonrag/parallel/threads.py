"""Running work items on N threads, with a lock around the components that are not thread-safe.

Threads pay off when the work waits: an API or served language model answers in seconds while this
process idles. The embedded policy, the reader and the encoder PRM keep caches in OrderedDicts and run
torch on the CPU, so they are not safe to call from two threads at once; `locked` serialises them (they
gain nothing from threads anyway), while components that declare `thread_safe = True` (the chat-model
policy, the LLM judge, the remote retriever) are called concurrently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from reasonrag.errors import InputError

T = TypeVar("T")
R = TypeVar("R")
W = TypeVar("W")

MAX_CONCURRENCY = 256


def check_concurrency(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CONCURRENCY:
        raise InputError(f"--concurrency must be an integer in 1..{MAX_CONCURRENCY}, got {n!r}")
    return n


class Locked:
    """`obj` with every method call made under one lock; attributes read through. Calls from many threads
    then run one at a time, as if from one thread."""

    thread_safe = True

    def __init__(self, obj: Any, lock: threading.RLock | None = None) -> None:
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_lock", lock or threading.RLock())

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._obj, name)
        if not callable(value):
            return value
        lock = self._lock

        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return value(*args, **kwargs)

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._obj, name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._obj(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Locked({self._obj!r})"


def locked(obj: Any, lock: threading.RLock | None = None) -> Any:
    """`obj` itself when it declares `thread_safe = True` (or is None), else `obj` behind a lock."""
    if obj is None or getattr(obj, "thread_safe", False) is True:
        return obj
    return Locked(obj, lock)


def map_unordered(
    work: Callable[[W, T], R],
    items: Iterable[T],
    make_worker: Callable[[], W],
    concurrency: int = 1,
) -> Iterator[tuple[T, R]]:
    """`(item, work(worker, item))` for every item, as each finishes, with `concurrency` threads.

    Each thread makes its own worker with `make_worker()` (once). At most `2 * concurrency` items are in
    flight, so a long item list is not all submitted at once. The first error stops the submissions and
    is raised here (after the items already running finish).
    """
    check_concurrency(concurrency)
    if concurrency == 1:
        worker = make_worker()
        for item in items:
            yield item, work(worker, item)
        return
    local = threading.local()

    def run(item: T) -> R:
        if not hasattr(local, "worker"):
            local.worker = make_worker()
        return work(local.worker, item)

    pending: dict[Future, T] = {}
    source = iter(items)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="reasonrag") as pool:
        try:
            for item in source:
                pending[pool.submit(run, item)] = item
                if len(pending) >= 2 * concurrency:
                    yield from _drain(pending, FIRST_COMPLETED)
            while pending:
                yield from _drain(pending, FIRST_COMPLETED)
        finally:
            for future in pending:
                future.cancel()


def _drain(pending: dict[Future, Any], when: str) -> Iterator[tuple[Any, Any]]:
    done, _ = wait(list(pending), return_when=when)
    for future in done:
        item = pending.pop(future)
        yield item, future.result()
