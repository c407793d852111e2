"""``--model`` -> :class:`~edgeprune.models.LoadedModel`: the one way any model is loaded.

This module sits one level above :mod:`edgeprune.models` (the built-in
architectures, the registry, ``LoadedModel``) and :mod:`edgeprune.prune`
(``.ept`` files: a base, channel plans, a state_dict), so neither imports
the other to load a file. Every stage (prune, export, quantize, the Python
API) calls :func:`load_model`.

Accepted, tried in this order:

1. a built-in name (``mobilenetv2``) or a Python factory
   ``package.module:function`` the user names (the user's own code, imported
   like any module), optionally ``weights=`` a state_dict file, or an
   ``.ept`` pruned from that same base;
2. a file: an edgeprune pruned model (``.ept``), an ExportedProgram
   (``torch.export.save``, ``.pt2``) or a TorchScript file
   (``torch.jit.save``), recognised by their content, not their suffix.

Security: a file never decides what code runs. Every torch pickle is read
with ``torch.load(weights_only=True)`` (a plain Python pickle is refused
unread). An ``.ept`` whose base is a built-in name is rebuilt from the
registry; one whose base is a factory is rebuilt only when the caller names
that same factory: ``--model pkg.mod:fn --weights model.ept``, or
``--trust-factory pkg.mod:fn`` (``trust_factory=`` here). The refusal says so.

Example::

    lm = load_model("mobilenetv2")
    lm.module, lm.input_shape, lm.task      # (MobileNetV2, (1, 3, 224, 224), 'classify')
    lm = load_model("out/model.ept")                                  # built-in base
    lm = load_model("mine.ept", trust_factory="myzoo:tiny")           # factory base, trusted
    lm = load_model("myzoo:tiny", weights="mine.ept")                 # the same thing
"""

from __future__ import annotations

from pathlib import Path

from edgeprune.errors import ModelError
from edgeprune.models import LoadedModel


def _ept_blob(path: Path):
    """The blob of ``path`` when it is an edgeprune ``.ept`` (read safely), else None."""
    from edgeprune.models.loading import file_kind, safe_torch_load
    from edgeprune.prune.io import FORMAT

    if file_kind(path) != "torch":
        return None
    blob = safe_torch_load(path)
    return blob if isinstance(blob, dict) and blob.get("format") == FORMAT else None


def _from_spec(spec: str, weights: str | None, input_shape: tuple[int, ...] | None) -> LoadedModel:
    """A built-in name or a factory the user named, with optional weights (state_dict or .ept)."""
    from edgeprune.models import _REGISTRY, pretrained_available
    from edgeprune.models.loading import build_base, check_input, load_weights, weights_path

    if weights is not None:
        wpath = weights_path(weights)
        blob = _ept_blob(wpath)
        if blob is not None:  # an .ept pruned from this base: the user named the factory
            from edgeprune.prune.io import load_pruned, read_ept

            meta, _ = read_ept(wpath, blob)
            if meta["base"] != spec:
                raise ModelError(
                    f"--weights {wpath}: was pruned from '{meta['base']}', not '{spec}'; "
                    f"pass --model {meta['base']}"
                    + ("" if meta["base"] in _REGISTRY else f" --weights {wpath}")
                )
            lm = load_pruned(wpath, blob=blob, trust_factory=spec)
            if input_shape and tuple(input_shape) != lm.input_shape:
                raise ModelError(
                    f"--input-shape {','.join(map(str, input_shape))}: {wpath} was pruned for "
                    f"{','.join(map(str, lm.input_shape))}; leave --input-shape out"
                )
            return lm
    builtin = spec in _REGISTRY
    lm = build_base(spec, pretrained=None if (builtin and weights is None) else False,
                    input_shape=input_shape)
    if builtin:
        lm.pretrained = pretrained_available(spec) and weights is None
        if input_shape and tuple(input_shape) != _REGISTRY[spec].input_shape:
            check_input(lm.module, lm.input_shape, spec, native=_REGISTRY[spec].input_shape)
    if weights is not None:
        load_weights(lm.module, weights)
        lm.pretrained = True
    lm.module.eval()
    return lm


def _from_file(path: Path, input_shape, trust_factory: str | None) -> LoadedModel:
    from edgeprune.models.loading import file_kind, load_program, not_a_model, safe_torch_load
    from edgeprune.prune.io import FORMAT, load_pruned

    kind = file_kind(path)
    if kind != "torch":
        return load_program(path, kind, input_shape)
    blob = safe_torch_load(path)
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        lm = load_pruned(path, blob=blob, trust_factory=trust_factory)
        if input_shape and tuple(input_shape) != lm.input_shape:
            raise ModelError(
                f"--input-shape {','.join(map(str, input_shape))}: {path} was pruned for "
                f"{','.join(map(str, lm.input_shape))}; leave --input-shape out"
            )
        return lm
    raise not_a_model(path, blob)


def load_model(
    spec: str,
    *,
    weights: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    trust_factory: str | None = None,
) -> LoadedModel:
    """Turn a ``--model`` value into a :class:`LoadedModel` (see the module docstring).

    ``weights``: a state_dict file, or an ``.ept`` pruned from ``spec``, for a
    built-in name or factory. ``input_shape`` overrides the model's own (batch 1).
    ``trust_factory``: the ``pkg.mod:fn`` an ``.ept`` file's base may name.
    """
    from edgeprune.models import _REGISTRY, model_info
    from edgeprune.models.loading import is_factory

    spec = str(spec)
    if not spec.strip():
        raise ModelError("--model is empty: give a built-in name, pkg.module:function, or a model file")
    path = Path(spec).expanduser()
    if spec in _REGISTRY or (is_factory(spec) and not path.exists()):
        return _from_spec(spec, weights, input_shape)
    if path.exists():
        if path.is_dir():
            raise ModelError(
                f"{path}: is a folder; give the model file inside it (e.g. {path}/model.ept)"
            )
        if weights:
            raise ModelError(
                f"--weights {weights}: only for a built-in name or pkg.module:factory, not a file"
            )
        return _from_file(path, input_shape, trust_factory)
    if "/" in spec or path.suffix:
        raise ModelError(f"{spec}: file not found")
    model_info(spec)  # raises: unknown name, with a suggestion
    raise AssertionError("unreachable")


__all__ = ["LoadedModel", "load_model"]
