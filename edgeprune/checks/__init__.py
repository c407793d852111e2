"""Is it still right? The checks that compare a model's outputs with a reference's.

Every stage that compares outputs (the C2f rewrite, the surgery check, the
ONNX check after pruning, every export step) reads a model's outputs through
:func:`edgeprune.checks.outputs.flatten`, so that output ``k`` means the same
tensor everywhere: in PyTorch, in the ONNX file and in the TFLite file.
The other checks (agreement figures, accuracy gates) move here later.
"""

from edgeprune.checks.outputs import flatten, flatten_numpy

__all__ = ["flatten", "flatten_numpy"]
