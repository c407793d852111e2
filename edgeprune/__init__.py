"""edgeprune: make a trained PyTorch vision model smaller and faster on a given board.

Importing this package is cheap: torch, onnx, tensorflow and the rest are
imported only inside the functions that need them.

The Python API mirrors the CLI::

    import edgeprune
    edgeprune.load_profile("raspberry-pi-5").runtime      # 'litert'
"""

__version__ = "0.1.0"

from edgeprune.errors import EdgePruneError  # noqa: E402  (cheap, no heavy imports)


def __getattr__(name: str):
    # Lazy public API: each name is imported from its stage module on first use.
    lazy = {
        "load_profile": ("edgeprune.profiles", "load_profile"),
        "list_profiles": ("edgeprune.profiles", "list_profiles"),
        "Profile": ("edgeprune.profiles", "Profile"),
    }
    if name in lazy:
        import importlib

        mod, attr = lazy[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")


__all__ = ["EdgePruneError", "__version__"]
