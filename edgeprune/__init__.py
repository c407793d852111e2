"""edgeprune: make a trained PyTorch vision model smaller and faster on a given board.

Importing this package is cheap: torch, onnx, tensorflow and the rest are
imported only inside the functions that need them.

The Python API mirrors the CLI (see :mod:`edgeprune.api`)::

    import edgeprune
    edgeprune.load_profile("raspberry-pi-5").runtime      # 'litert'
    summary = edgeprune.prune_model("mobilenetv2", target="local", ratio=0.3, output="out/")
    report = edgeprune.export_model(summary["model"], target="local", output="out/")
    edgeprune.bench_model(report.final.path, target="local").latency_ms["p50"]
    edgeprune.deploy_model("digits-cnn", target="local", speedup=1.5, output="out/")  # all of it, shipped
"""
import importlib

__version__ = "0.1.0"

from edgeprune.errors import EdgePruneError  # noqa: E402  (cheap, no heavy imports)


def __getattr__(name: str):
    # Lazy public API: each name is imported from its stage module on first use.
    lazy = {
        "load_profile": ("edgeprune.boards.profiles", "load_profile"),
        "list_profiles": ("edgeprune.boards.profiles", "list_profiles"),
        "Profile": ("edgeprune.boards.profiles", "Profile"),
        "resolve_target": ("edgeprune.boards.reach", "resolve_target"),
        "list_models": ("edgeprune.models", "list_models"),
        "load_model": ("edgeprune.load", "load_model"),
        "bench_model": ("edgeprune.api", "bench_model"),
        "prune_model": ("edgeprune.api", "prune_model"),
        "finetune_model": ("edgeprune.api", "finetune_model"),
        "load_data": ("edgeprune.data", "load_data"),
        "export_model": ("edgeprune.api", "export_model"),
        "quantize_model": ("edgeprune.api", "quantize_model"),
        "ship_model": ("edgeprune.api", "ship_model"),
        "list_releases": ("edgeprune.api", "list_releases"),
        "rollback": ("edgeprune.api", "rollback"),
        "deploy_model": ("edgeprune.api", "deploy_model"),
    }
    if name in lazy:
        mod, attr = lazy[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")


__all__ = [
    "EdgePruneError", "__version__", "load_profile", "list_profiles", "Profile", "resolve_target",
    "list_models", "load_model", "bench_model", "prune_model", "finetune_model", "load_data", "export_model",
    "quantize_model", "ship_model", "list_releases", "rollback", "deploy_model",
]
