"""One exception tree for everything edgeprune reports to a user.

The CLI turns any :class:`EdgePruneError` into one line ``error: ...`` and a
non-zero exit; anything else is a bug and keeps its traceback. Messages name
the thing (board, host, layer, file) and, where there is one, the fix.

Example::

    raise ProfileError("device_profiles/x.toml: key 'memory.bandwidth_gbps': expected a number, got 'fast'")
"""

from __future__ import annotations


class EdgePruneError(Exception):
    """Base of every error edgeprune raises on purpose. ``exit_code`` is the CLI's."""

    exit_code = 1


class ProfileError(EdgePruneError):
    """A device profile or targets file is missing, malformed or unknown."""


class ModelError(EdgePruneError):
    """A model cannot be found, loaded, or does not fit its architecture."""


class PruneError(EdgePruneError):
    """A channel plan cannot be applied to a model."""


class ExportError(EdgePruneError):
    """A conversion, quantization or verification step failed."""


class TransportError(EdgePruneError):
    """A board cannot be reached, refused us, or a transfer failed."""


class AgentError(EdgePruneError):
    """The on-device agent failed or sent back something we cannot trust."""


class ShipError(EdgePruneError):
    """Shipping to a board failed or was refused; the board's current release is unchanged."""


class ShipCheckError(ShipError):
    """The artifact loaded on the board gave outputs that do not match the host's reference."""

    exit_code = 2


class BudgetError(EdgePruneError):
    """A latency budget or speedup cannot be met on the target (exit 4: measured, not met)."""

    exit_code = 4


class MissingDependencyError(EdgePruneError):
    """An optional dependency is not installed; the message names the extra."""

    def __init__(self, module: str, extra: str, purpose: str = "") -> None:
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"the Python package '{module}' is not installed{what}; "
            f"install it with: pip install 'edgeprune[{extra}]'"
        )


class NotBuiltError(EdgePruneError):
    """A stage that this version of edgeprune does not have yet."""

    exit_code = 3


def require(module: str, extra: str, purpose: str = ""):
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``extra``.

    Example::

        ort = require("onnxruntime", "onnx", "running ONNX models")
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # only a missing package, not a broken one
        if exc.name and module.split(".")[0] != exc.name.split(".")[0]:
            raise
        raise MissingDependencyError(module, extra, purpose) from None
