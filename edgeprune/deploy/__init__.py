"""``edgeprune deploy``: the whole pipeline to the board, resumable, gated on accuracy, shipped atomically.

``deploy_model("digits-cnn", target="local", speedup=1.5, output="out/")`` (the
CLI: ``edgeprune deploy -t local -m digits-cnn --speedup 1.5 -o out/``) runs
eight stages for each board, each writing into its own folder:

=================  ==================================================================================
``measure/``       the unpruned model exported in the board's format and precision
                   (``export/``) and measured on the board (``bench.json``)
``prune/``         latency-aware pruning: the closed loop plans, prunes, exports and measures on the
                   board until the budget (``--latency-budget MS`` or ``--speedup S``) is met;
                   ``--ratio R`` prunes uniformly instead
``finetune/``      fine-tuning with distillation from the original, on ``--data`` or the model's own
                   built-in data set (skipped, with the reason, when there is none)
``export/``        quantize and export in the profile's format and precision, every step checked
                   against the model, accuracy measured on held-out data
``verify/``        the accuracy gate (``gate.json``): the file to ship against the *original* on
                   held-out data the fine-tuning never saw (a built-in set's test split, or the
                   user's held-out split); more than ``--max-accuracy-drop`` points (default 1) lost,
                   or no data to check on, stops the deploy (:class:`GateError`, exit 2) unless
                   ``--force``, which ships and records that it was forced and why
``measure-final/`` the artifact to ship measured on the board with the unpruned one's settings
``ship/``          :func:`edgeprune.ship.ship_artifact`: staging name, sha256 on the board, the held-out
                   inputs run there and compared with this computer's outputs of the same file, then an
                   atomic switch of ``current``; the release's ``manifest.json`` holds the sha256,
                   source model hash, plan, profile, format, precision, measured latency, accuracy,
                   forced/why, edgeprune version and time
``report/``        ``deploy.json`` (machines), ``report.html`` (people: inline plots, no network) and
                   ``report.md`` (terminals)
=================  ==================================================================================

**Resume.** ``run.json`` (:mod:`edgeprune.deploy.manifest`) records each
stage's state, a key over its arguments and its inputs' sha256, its output
files' sha256, wall time and board measurements. The same command run again
reuses every completed stage whose key and files still match, says so, and
resumes at the first stage that did not complete; a changed argument
restarts the stages it affects and every later one. Board measurements are
also cached by the bench (a model's sha256 on a board) and the latency table
(layer shapes on a board), so a rerun stage repeats none that completed.
``--fresh`` runs every stage again.

**A budget not met** on the board stops before shipping (exit 4), after
writing the prune stage's result; ``--force`` deploys the closest plan and
records it. **A failure anywhere** leaves the board's ``current`` release as
it was (the ship stage switches last, atomically).

**Many boards.** Several targets deploy at once, each into
``output/<target>/`` with its own manifest and report, and a summary in
``output/deploy.json``; one board's failure never stops the others. The
torch-heavy stages (prune, fine-tune, export) take turns on this computer;
measuring and shipping overlap.
"""

from edgeprune.deploy.pipeline import STAGES, DeployOptions, GateError, deploy_model

__all__ = ["STAGES", "DeployOptions", "GateError", "deploy_model"]
