"""A latency *estimate* from the device profile alone: a per-layer roofline.

For when no board can be reached (``prune --estimate``), and as the yardstick
the measured table is compared with (``benchmarks/bench_latency.py``). Each
layer costs ``max(2 * MACs / peak, bytes moved / bandwidth)``: the profile's
peak for the precision (GFLOPS, or GOPS for int8) and its memory bandwidth;
bytes are the input and output activations and the weights, at the
precision's width. A profile without a peak for the precision uses its fp32
peak (x2 for int8, the usual SIMD ratio on CPUs), and says so in ``notes``.

A roofline ignores the staircase, kernel choice, layout changes and
per-call overheads: it is labelled ``source = "estimate"`` wherever it
appears (plan.json, summary.json, the CLI), and a budget planned with it is
never reported as met.

Example::

    est = RooflineEstimate(load_profile("raspberry-pi-5"), "int8")
    est.lookup(LayerShape("conv", 64, 64, (3, 3), padding=(1, 1), hw=(56, 56)))   # ms
"""

from __future__ import annotations

from edgeprune.errors import BudgetError
from edgeprune.latency.layers import LayerShape

BYTES = {"fp32": 4, "fp16": 2, "int8": 1}


class RooflineEstimate:
    """Same ``lookup(shape) -> ms`` interface as :class:`~edgeprune.latency.table.LatencyTable`."""

    source = "estimate"

    def __init__(self, profile, precision: str) -> None:
        self.profile = profile
        self.precision = precision
        self.notes: list[str] = []
        peak = profile.peak(precision)
        if peak is None:
            fp32 = profile.peak("fp32")
            if fp32 is None:
                raise BudgetError(
                    f"{profile.name}: the profile has no peak throughput figure, so no latency "
                    "estimate can be made; measure on the board instead (drop --estimate)"
                )
            peak = fp32 * (2.0 if precision == "int8" else 1.0)
            self.notes.append(
                f"no {precision} peak in the profile: assumed {peak:g} from its fp32 peak"
            )
        self.peak_gops = float(peak)
        self.bandwidth_gbps = profile.bandwidth_gbps()
        if self.bandwidth_gbps is None:
            self.notes.append("no memory bandwidth in the profile: compute bound only")
        self.bytes = BYTES.get(precision, 4)
        self.stats: dict[str, int] = {}

    def lookup(self, shape: LayerShape) -> float:
        flops = 2.0 * shape.macs
        oh, ow = shape.out_hw
        if shape.kind == "linear":
            acts = shape.hw[0] * (shape.cin + shape.cout)
            weights = shape.cin * shape.cout
        else:
            acts = shape.cin * shape.hw[0] * shape.hw[1] + shape.cout * oh * ow
            weights = shape.cout * (shape.cin // shape.groups) * shape.kernel[0] * shape.kernel[1]
        t_compute = flops / (self.peak_gops * 1e9)
        t_memory = (acts + weights) * self.bytes / (self.bandwidth_gbps * 1e9) if self.bandwidth_gbps else 0.0
        return max(t_compute, t_memory) * 1000.0

    def describe(self) -> str:
        bw = f", {self.bandwidth_gbps:g} GB/s" if self.bandwidth_gbps else ""
        return (
            f"estimate (roofline from the {self.profile.name} profile: "
            f"{self.peak_gops:g} G{'OPS' if self.precision == 'int8' else 'FLOPS'} {self.precision}{bw})"
        )
