"""Ship an artifact to boards so that a board never loses a working model.

On the board, next to (not inside) the agent's benchmark workdir::

    DEPLOY/                     targets file `deploy_dir`, else the profile's, else
      releases/<id>/            ~/edgeprune-deploy (phones: /data/local/tmp/edgeprune-deploy)
        model.onnx|model.tflite the artifact, byte for byte (sha256 in the manifest)
        manifest.json           sha256, source model hash, plan, profile, format, precision,
                                latency, accuracy, edgeprune version, time, the check's figures
        check_inputs.npy        the held-out inputs, and the outputs they must give:
        check_outputs.npz       a rollback re-runs them before switching back
        board_outputs.npz       the board's own outputs, when too big to come back inline
      current -> releases/<id>  what the application loads: DEPLOY/current/model.*
      previous -> releases/<id> what current pointed to before the last switch
      staging/<id>/             an upload in progress (never loaded by anyone)
      lock.json                 the deploy lock

Modules, in the order a shipment goes through them:

- :mod:`~edgeprune.ship.board`: the deploy folder, driven through agent commands;
- :mod:`~edgeprune.ship.lock`: the board's deploy lock, stale locks cleared;
- :mod:`~edgeprune.ship.check`: the host's reference and the per-tensor comparison;
- :mod:`~edgeprune.ship.ship`: :func:`ship_artifact`, :func:`ship_many`;
- :mod:`~edgeprune.ship.releases`: :func:`list_releases`, :func:`rollback`.

Example::

    from edgeprune.ship import ship_artifact, rollback
    result = ship_artifact("out/model.onnx", target="lab-pi", verify_inputs=x, manifest={...})
    rollback("lab-pi")
"""

from edgeprune.ship import phone as _phone  # noqa: F401  (registers the phones' backend)
from edgeprune.ship.lock import folder_lock
from edgeprune.ship.releases import (
    ReleaseInfo,
    ReleaseList,
    RollbackResult,
    list_releases,
    rollback,
    why_not_current,
)
from edgeprune.ship.ship import ShipResult, ship_artifact, ship_many, summary_lines

__all__ = [
    "ReleaseInfo",
    "ReleaseList",
    "RollbackResult",
    "ShipResult",
    "folder_lock",
    "list_releases",
    "rollback",
    "ship_artifact",
    "ship_many",
    "summary_lines",
    "why_not_current",
]
