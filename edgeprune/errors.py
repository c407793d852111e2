"""One exception tree for everything edgeprune reports to a user.

The CLI turns any :class:`EdgePruneError` into one line ``error: ...`` and a
non-zero exit (with ``--json``: ``{"ok": false, "error": {"kind", "message",
...details}}`` on stdout). Anything else is a bug: one line naming the
exception and asking for a report, the traceback with ``--debug``. Messages
name the thing (board, host, layer, file) and, where there is one, the fix.

Example::

    raise ProfileError("device_profiles/x.toml: key 'memory.bandwidth_gbps': expected a number, got 'fast'")
    raise PruneError("3 groups differ ...", details={"groups": [...every group...]})
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from typing import Any


class EdgePruneError(Exception):
    """Base of every error edgeprune raises on purpose.

    ``exit_code`` is the CLI's; ``kind`` names the class of failure for
    machines (``--json``); ``details`` holds what does not fit in one line
    (every group, every file) and goes into the JSON error object.
    """

    exit_code = 1
    kind = "error"

    def __init__(self, message: str = "", *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = dict(details or {})

    def to_json(self) -> dict[str, Any]:
        """The ``error`` object of a ``--json`` failure."""
        return {"kind": self.kind, "message": str(self), **self.details}

    def json_result(self) -> dict[str, Any]:
        """Keys a ``--json`` failure prints beside ``ok`` and ``error`` (a partial report)."""
        return {}


class OptionError(EdgePruneError, ValueError):
    """An option's value is out of its range, NaN or infinite (exit 2, as a usage mistake on the CLI)."""

    exit_code = 2
    kind = "usage"


class ProfileError(EdgePruneError):
    """A device profile or targets file is missing, malformed or unknown."""

    kind = "profile"


class ModelError(EdgePruneError):
    """A model cannot be found, loaded, or does not fit its architecture."""

    kind = "model"


class PruneError(EdgePruneError):
    """A channel plan cannot be applied to a model."""

    kind = "prune"


class ExportError(EdgePruneError):
    """A conversion, quantization or verification step failed."""

    kind = "export"


class TransportError(EdgePruneError):
    """A board cannot be reached, refused us, or a transfer failed."""

    kind = "transport"


class AgentError(EdgePruneError):
    """The on-device agent failed or sent back something we cannot trust."""

    kind = "agent"


class BenchmarkModelError(AgentError):
    """A phone's ``benchmark_model`` (LiteRT's binary, run over adb) is missing, failed, or printed
    something we cannot trust."""

    kind = "benchmark-model"


class ShipError(EdgePruneError):
    """Shipping to a board failed or was refused; the board's current release is unchanged."""

    kind = "ship"


class ShipCheckError(ShipError):
    """The artifact loaded on the board gave outputs that do not match the host's reference."""

    kind = "ship-check"

    exit_code = 2


class BudgetError(EdgePruneError):
    """A latency budget or speedup cannot be met on the target (exit 4: measured, not met).

    ``result``: what was written anyway (prune's summary), printed beside the
    error with ``--json`` so that a pipeline sees every round.
    """

    exit_code = 4

    kind = "budget"

    def __init__(self, message: str = "", *, details: dict[str, Any] | None = None,
                 result: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.result = dict(result or {})

    def json_result(self) -> dict[str, Any]:
        return self.result


class PreprocessError(EdgePruneError):
    """The model scores far below what its data allows with the preprocessing given: probably the wrong one."""

    exit_code = 2
    kind = "preprocessing"


class MissingDependencyError(EdgePruneError):
    """An optional dependency is not installed; the message names the extra."""

    kind = "missing-dependency"

    def __init__(self, module: str, extra: str, purpose: str = "") -> None:
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"the Python package '{module}' is not installed{what}; "
            f"install it with: pip install 'edgeprune[{extra}]'"
        )


class NotBuiltError(EdgePruneError):
    """A stage that this version of edgeprune does not have yet."""

    exit_code = 3
    kind = "not-built"


class OutputError(EdgePruneError):
    """An output file or folder cannot be written (permissions, a full disk, not a folder)."""

    kind = "output"


def did_you_mean(
    name: str, choices: Iterable[str], *, n: int = 2, cutoff: float = 0.5, quote: bool = False, prefix: str = ""
) -> str:
    """``"did you mean a or b?"`` for the choices close to ``name``, else ``""``.

    The one place edgeprune suggests a near name; callers add their own
    fallback (e.g. the list of known names) when this is empty. ``quote``
    puts each name in single quotes; ``prefix`` goes before each (a key's table).

    Example::

        did_you_mean("mobilenet2", ["resnet18", "mobilenetv2"])   # 'did you mean mobilenetv2?'
        did_you_mean("bandwith", ["bandwidth_gbps"], n=1, cutoff=0.6, quote=True, prefix="memory.")
        # "did you mean 'memory.bandwidth_gbps'?"
    """
    near = difflib.get_close_matches(name, list(choices), n=n, cutoff=cutoff)
    shown = [f"'{prefix}{c}'" if quote else f"{prefix}{c}" for c in near]
    return f"did you mean {' or '.join(shown)}?" if near else ""


def require(module: str, extra: str, purpose: str = ""):
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``extra``.

    Example::

        ort = require("onnxruntime", "onnx", "running ONNX models")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # only a missing package, not a broken one
        if exc.name and module.split(".")[0] != exc.name.split(".")[0]:
            raise
        raise MissingDependencyError(module, extra, purpose) from None


class DataError(EdgePruneError):
    """Data that cannot feed the model: empty, undecodable, misfit shapes or labels, not fetched."""

    kind = "data"


class AccuracyDropError(EdgePruneError):
    """A model lost more accuracy against its original than ``--max-accuracy-drop`` allows."""

    exit_code = 2
    kind = "accuracy-drop"

    def __init__(self, message: str, report=None) -> None:
        super().__init__(message)
        self.report = report

    def json_result(self) -> dict:
        """``--json``: the whole report (export or fine-tune) beside the error."""
        rep = self.report
        if rep is None:
            return {}
        return rep.to_dict() if hasattr(rep, "to_dict") else dict(rep)


class GateError(AccuracyDropError):
    """The deployed model is further below its original than ``--max-accuracy-drop`` allows; nothing shipped."""

    kind = "accuracy-gate"


class AgreementError(ExportError):
    """An artifact agrees with the original model less than required; ``report`` has every figure."""

    exit_code = 2
    kind = "agreement"

    def __init__(self, message: str, report) -> None:
        super().__init__(message)
        self.report = report

    def json_result(self) -> dict:
        return self.report.to_dict()  # --json: the whole report beside the error


class DistributedError(EdgePruneError):
    """Fine-tuning under torchrun: an option the distributed run cannot honour, or a rank that stopped.

    Every rank raises it; only rank 0 prints it (one line, not one per process)."""

    kind = "distributed"


class Interrupted(EdgePruneError):
    """Ctrl-C during training: the last checkpoint is saved; the same command resumes."""

    exit_code = 130
    kind = "interrupted"
