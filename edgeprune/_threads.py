"""Run the pruner's many small tensor ops on one intra-op thread.

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
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TypeVar

F = TypeVar("F", bound=Callable)


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
