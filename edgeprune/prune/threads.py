"""Kept for imports written before the helpers moved to :mod:`edgeprune._threads`.

They moved so that :mod:`edgeprune.models` can use them without importing
:mod:`edgeprune.prune` (which imports models: a cycle).
"""

from edgeprune._threads import one_thread, single_threaded

__all__ = ["one_thread", "single_threaded"]
