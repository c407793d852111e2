"""Threads: the pruner's many small tensor ops on one intra-op thread; many boards at once, bounded.

Tracing, scoring and slicing a model is thousands of small ops. With
PyTorch's default two OpenMP threads on a 2-core machine that another
process is also using, each op waits for a descheduled thread at the OpenMP
barrier: pruning yolo-small (128 px) took 10 s with 2 threads and 0.26 s with
one, measured here under load. One thread is never much slower for this work.

Example::

    with one_thread():
        prune_(model, plan)

    @single_threaded
    def prune_model(...): ...

Many boards (``bench``, ``ship`` and ``deploy`` to several targets) go
through :func:`fan_out`: at most ``parallel`` boards at once (``--parallel``,
default :data:`DEFAULT_PARALLEL`), each board's outcome returned in order, a
canary wave first when asked (``--canary K``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

# Lazy imports: the imports inside functions below load torch, which importing this module does not;
# they load only when a function that needs them runs.

F = TypeVar("F", bound=Callable)
T = TypeVar("T")
R = TypeVar("R")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Set ``torch.set_num_threads(1)`` inside the block, then restore the caller's setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def single_threaded(fn: F) -> F:
    """Decorator: run ``fn`` inside :func:`one_thread`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with one_thread():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# -- many boards at once ------------------------------------------------------------------------

DEFAULT_PARALLEL = 4  # boards worked on at once: 200 boards never open 200 SSH sessions
CANARY_FAILED = "not started: canary failed"


class NotStarted:
    """The outcome of a board the fan-out never started (a canary failed first); ``str()`` says why."""

    def __init__(self, reason: str = CANARY_FAILED) -> None:
        self.reason = reason

    def __str__(self) -> str:
        return self.reason

    def __repr__(self) -> str:
        return f"NotStarted({self.reason!r})"


def fan_out(
    items: Sequence[T],
    fn: Callable[[T], R],
    *,
    parallel: int = DEFAULT_PARALLEL,
    canary: int = 0,
    passed: Callable[[R], bool] | None = None,
    name: str = "edgeprune",
) -> list[R | NotStarted]:
    """``fn(item)`` for every item, at most ``parallel`` at once; the outcomes in the order of ``items``.

    ``fn`` returns each board's outcome, an error included (bench, ship and
    deploy catch their board's ``EdgePruneError`` and return it), so one
    board's failure never stops the others. ``canary=K``: the first K items
    run first (still at most ``parallel`` at once); the rest start only if
    every canary's outcome ``passed`` (default: not an exception), else each
    of them is a :class:`NotStarted` and nothing is done to it. One item, or
    ``parallel=1``, runs in the calling thread.

    Example::

        outcomes = fan_out(boards, ship_one, parallel=3, canary=2)
        [str(o) for o in outcomes if isinstance(o, NotStarted)]   # ['not started: canary failed', ...]
    """
    if parallel < 1 or canary < 0:
        raise ValueError(f"parallel={parallel}, canary={canary}: parallel >= 1 and canary >= 0")
    ok = passed or (lambda o: not isinstance(o, BaseException))
    waves = [list(items[:canary]), list(items[canary:])] if canary else [list(items)]
    outcomes: list[R | NotStarted] = []
    for i, wave in enumerate(waves):
        if i and not all(ok(o) for o in outcomes):  # a canary failed: the rest are never touched
            outcomes.extend(NotStarted() for _ in wave)
            continue
        if len(wave) <= 1 or parallel == 1:
            outcomes.extend(fn(item) for item in wave)
            continue
        with ThreadPoolExecutor(max_workers=min(parallel, len(wave)), thread_name_prefix=name) as pool:
            outcomes.extend(pool.map(fn, wave))
    return outcomes
