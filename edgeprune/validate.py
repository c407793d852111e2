"""What each numeric option may be: one table, checked where the CLI parses an option and where the API takes it.

The CLI's click types (:class:`edgeprune.cli._common.Number`) and the options
objects the API builds (``BudgetOptions``, ``FinetuneOptions``,
``ExportOptions``, ``DataOptions``, ``BenchSettings``, ``DeployOptions``) call
the same :func:`check`, so ``--speedup inf`` and ``prune_model(...,
speedup=float("inf"))`` are refused alike, before anything is loaded. NaN and
infinities are never a value: a comparison with NaN is always false, so a
plain range check lets it through (and ``--time-budget nan`` trained forever).

Example::

    from edgeprune.validate import check

    check("speedup", 1.5)             # 1.5
    check("speedup", float("inf"))    # OptionError: --speedup inf: expected a finite number above 1 ...
    check("calib_count", -1)          # OptionError: --calib-count -1: expected a whole number, 1 or more
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from edgeprune.errors import OptionError


@dataclass(frozen=True)
class Range:
    """The numbers an option takes: finite always, between ``lo`` and ``hi`` (open ends excluded)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    hint: str = ""  # what the number means, said after the range

    def describe(self) -> str:
        """``'a finite number above 1 and at most 1000'``, ``'a whole number from 1 to 20'``."""
        what = "a whole number" if self.integer else "a finite number"
        lo = None if self.lo is None else (f"above {_num(self.lo)}" if self.lo_open else f"{_num(self.lo)} or more")
        hi = None if self.hi is None else (f"below {_num(self.hi)}" if self.hi_open else f"at most {_num(self.hi)}")
        if lo and hi and not self.lo_open and not self.hi_open:
            text = f"{what} from {_num(self.lo)} to {_num(self.hi)}"
        elif lo and hi:
            text = f"{what} {lo} and {hi}"
        else:
            text = " ".join(p for p in (what, lo or hi) if p)
        return f"{text} ({self.hint})" if self.hint else text

    def fits(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))


_FRACTION = Range(0.0, 1.0, lo_open=True, hi_open=True)

# keyword (the API's, and the CLI's option with '-' for '_') -> its range
RANGES: dict[str, Range] = {
    # the closed loop (prune, deploy)
    "latency_budget": Range(0.0, None, lo_open=True, hint="the p50 in ms"),
    "speedup": Range(1.0, 1000.0, lo_open=True, hint="2 = twice as fast"),
    "max_rounds": Range(1, 20, integer=True),
    "tolerance": _FRACTION,
    "min_keep": Range(0.0, 1.0, lo_open=True, hint="a fraction of each group's channels"),
    "threads": Range(0, 256, integer=True, hint="0 = the runtime's default"),
    "ratio": Range(0.0, 1.0, hi_open=True, hint="the fraction of channels removed"),
    # data
    "val_fraction": _FRACTION,
    "limit": Range(1, None, integer=True),
    "seed": Range(0, 2**32 - 1, integer=True),
    # fine-tuning
    "epochs": Range(1, 1_000_000, integer=True),
    "steps": Range(1, 10**9, integer=True),
    "time_budget": Range(0.0, 60 * 24 * 7, lo_open=True, hint="minutes; at most a week"),
    "lr": Range(0.0, 10.0, lo_open=True),
    "batch_size": Range(1, 65536, integer=True),
    "temperature": Range(0.0, 1000.0, lo_open=True),
    "alpha": Range(0.0, 1.0),
    "patience": Range(1, None, integer=True),
    "cpu_threads": Range(1, 1024, integer=True),
    # export, the gate
    "max_accuracy_drop": Range(0.0, 100.0, hint="points of top-1 or mAP"),
    "calib_count": Range(1, 1_000_000, integer=True, hint="samples"),
    "verify_count": Range(1, 1_000_000, integer=True, hint="samples"),
    "accuracy_count": Range(1, 10**9, integer=True, hint="samples"),
    "min_agreement": Range(0.0, 1.0),
    # boards
    "runs": Range(1, 100000, integer=True),
    "warmup": Range(0, 100000, integer=True),
    "timeout": Range(5.0, 86400.0, hint="seconds"),
    "max_warmup_s": Range(0.0, 86400.0),
    "keep": Range(1, 1000, integer=True, hint="releases kept on the board"),
    "wait": Range(0.0, 3600.0, hint="seconds"),
    # a fleet of boards
    "parallel": Range(1, 256, integer=True, hint="boards at once"),
    "canary": Range(0, 100000, integer=True, hint="boards first, 0 = none"),
    # fine-tuning on several processes
    "nproc_per_node": Range(1, 1024, integer=True, hint="processes"),
}


def check(name: str, value: Any, *, option: str | None = None) -> Any:
    """``value`` when it fits ``RANGES[name]`` (None passes: not given), else :class:`OptionError`.

    ``option``: how the message names it (default ``--name-with-dashes``).
    """
    if value is None:
        return None
    rng = RANGES[name]
    if not rng.fits(value):
        shown = option or "--" + name.replace("_", "-")
        raise OptionError(f"{shown} {show_value(value)}: expected {rng.describe()}")
    return value


def check_all(**values: Any) -> None:
    """:func:`check` each keyword, e.g. ``check_all(speedup=s, tolerance=t)``."""
    for name, value in values.items():
        check(name, value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def show_value(value: Any) -> str:
    """A value as a message shows it: ``inf``, ``1e+09``, ``-1``, ``'x'``."""
    return f"{value:g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)
