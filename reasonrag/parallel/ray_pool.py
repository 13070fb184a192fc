"""Running work items on a Ray cluster: one actor per worker, each holding its own agent.

`--ray` starts a local cluster (this machine's cores); `--ray-address ADDR` joins a running one
(`ray start --head` on one machine, `ray start --address ...` on the others). Every actor builds its
worker once with `make_worker()` (a picklable function: it loads the corpus and the models itself), then
takes items one at a time; results come back as they finish. An actor runs torch on as many threads as it
has CPUs (one by default): float32 results then equal those of a local run on that many threads
(`OMP_NUM_THREADS=1`) to the bit, and differ from a run on more threads in the last digits only. Ray is the optional extra `reasonrag[ray]`
and is imported only here, when asked for.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from reasonrag.errors import InputError, MissingDependencyError

T = TypeVar("T")
R = TypeVar("R")
W = TypeVar("W")

INSTALL_RAY = 'pip install "reasonrag[ray]"'
MAX_WORKERS = 4096


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: `address` None starts a local cluster; `workers` None means one per CPU."""

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0

    def __post_init__(self) -> None:
        if self.workers is not None and (
            isinstance(self.workers, bool) or not 1 <= int(self.workers) <= MAX_WORKERS
        ):
            raise InputError(f"--workers must be an integer in 1..{MAX_WORKERS}, got {self.workers!r}")
        if not self.cpus_per_worker > 0:
            raise InputError(f"CPUs per worker must be positive, got {self.cpus_per_worker}")


def import_ray() -> Any:
    """The `ray` module, or a one-line MissingDependencyError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(f"--ray needs Ray: {INSTALL_RAY}") from None
    return ray


def start(options: RayOptions) -> Any:
    """Connect to (or start) the cluster; returns the ray module. A cluster already joined is reused."""
    ray = import_ray()
    if options.address:  # asked to join ADDR: nothing listening there is an error, joined elsewhere or not
        probe_address(options.address)
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # no C++ retry chatter on a terminal
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        with _quiet_stderr():  # Ray's C++ client logs each failed try to join; our error is one line
            if options.address:
                ray.init(address=options.address, **kwargs)
            else:
                ray.init(num_cpus=options.workers or os.cpu_count() or 1, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at {options.address}" if options.address else "on this machine"
        raise InputError(f"could not start or join a Ray cluster {where}: {exc}") from None
    return ray


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send the process's standard error (file descriptor 2, where C++ code writes) nowhere for a while."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor 2 (captured, embedded): nothing to quiet
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def probe_address(address: str, timeout: float = 5.0) -> None:
    """A one-line InputError unless something listens at a HOST:PORT address: joining an address where no
    cluster runs would otherwise wait on Ray's reconnect loop for minutes. "auto" and addresses without a
    port are left to Ray, which fails fast on them."""
    import socket

    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise InputError(
            f"no Ray cluster answers at {address} ({why}): start one with `ray start --head` there, or "
            "use --ray for a local one"
        ) from None


def worker_error(message: str) -> Exception:
    """The error a worker died of, from Ray's report of it: our own error (same class, same one line) when it
    was one, else a ReasonRAGError quoting the report's last line."""
    import re

    from reasonrag import errors

    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in reversed(lines):
        found = re.match(r"^reasonrag\.errors\.(\w+): (.*)$", line)
        cls = getattr(errors, found.group(1), None) if found else None
        if isinstance(cls, type) and issubclass(cls, errors.ReasonRAGError):
            return cls(found.group(2))
    last = lines[-1] if lines else "no reason given"
    return errors.ReasonRAGError(f"a Ray worker died: {last[:300]}", code="RAY_WORKER")


def planned_workers(options: RayOptions, n_items: int) -> int:
    """How many actors `map_unordered` starts for `n_items` items: `workers`, else one per cluster CPU."""
    ray = start(options)
    cpus = ray.cluster_resources().get("CPU", 1)
    n = options.workers or max(1, int(cpus // options.cpus_per_worker))
    return max(1, min(n, n_items))


def map_unordered(
    work: Callable[[W, T], R],
    items: Iterable[T],
    make_worker: Callable[[], W],
    options: RayOptions,
) -> Iterator[tuple[T, R]]:
    """`(item, work(worker, item))` for every item, as each finishes, on Ray actors (see the module doc)."""
    ray = start(options)
    items = list(items)
    if not items:
        return
    n = planned_workers(options, len(items))

    @ray.remote(num_cpus=options.cpus_per_worker, max_restarts=0)
    class Worker:
        def __init__(self, factory: Callable[[], Any], threads: int) -> None:
            try:  # torch on the worker's own CPUs only (as Ray's OMP_NUM_THREADS asks), said explicitly
                import torch

                torch.set_num_threads(threads)
            except ImportError:
                pass
            self.worker = factory()

        def run(self, fn: Callable[[Any, Any], Any], position: int, item: Any) -> tuple[int, Any]:
            return position, fn(self.worker, item)

    from ray.util import ActorPool

    threads = max(1, int(options.cpus_per_worker))
    actors = [Worker.remote(make_worker, threads) for _ in range(n)]
    pool = ActorPool(actors)
    try:
        for position, result in pool.map_unordered(
            lambda actor, job: actor.run.remote(work, *job), list(enumerate(items))
        ):
            yield items[position], result
    except ray.exceptions.RayTaskError as exc:  # an item failed: its own error, as if it ran here
        cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
        if cause is not None:
            raise cause from None
        raise
    except ray.exceptions.RayActorError as exc:  # a worker could not start (a missing model, say)
        raise worker_error(str(getattr(exc, "error_msg", "") or exc)) from None
    finally:
        for actor in actors:
            ray.kill(actor)
