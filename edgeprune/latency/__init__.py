"""Latency-aware pruning: the board's own measurements decide how many channels each layer keeps.

The stages, in the order a model goes through them (each takes and returns
plain values):

- :mod:`~edgeprune.latency.layers`: every conv/Linear, the channel groups it
  follows, its shape under a plan; the candidate kept counts per group;
- :mod:`~edgeprune.latency.estimate`: a per-layer roofline from the profile
  alone, labelled an estimate (no board needed);
- :mod:`~edgeprune.latency.micro`: one-layer models in the board's format
  and precision;
- :mod:`~edgeprune.latency.measure`: which shapes to measure, measured in
  few board visits (agent protocol 2 ``batch``);
- :mod:`~edgeprune.latency.table`: ``LatencyTable``, cached per board
  identity, staircase-aware lookup;
- :mod:`~edgeprune.latency.predict`: whole-model latency = table sum,
  calibrated against whole-model measurements on the same board;
- :mod:`~edgeprune.latency.allocate`: the most importance kept under the
  budget (greedy by importance lost per ms saved, with lookahead);
- :mod:`~edgeprune.latency.loop`: plan -> prune -> export -> measure ->
  correct -> plan again (``prune --latency-budget`` / ``--speedup``).

Importing this package is cheap; torch, onnx and tensorflow are imported by
the functions that need them.

Example::

    from edgeprune.latency.loop import plan_for_budget
    from edgeprune.load import load_model

    result = plan_for_budget(load_model("mobilenetv2"), target="local", speedup=1.5)
    result.met, result.status, result.rounds
"""
