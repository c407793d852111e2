"""``--model`` -> :class:`~edgeprune.models.LoadedModel`: the one way any model is loaded.

This module sits one level above :mod:`edgeprune.models` (the built-in
architectures, the registry, ``LoadedModel``) and :mod:`edgeprune.prune`
(``.ept`` files: a base, channel plans, a state_dict), so neither imports
the other to load a file. Only the CLI, the Python API and ``deploy`` call
:func:`load_model`; every stage takes the ``LoadedModel`` it returns.

Accepted, tried in this order:

1. a built-in name (``mobilenetv2``) or a Python factory
   ``package.module:function`` the user names (the user's own code, imported
   like any module), optionally ``weights=`` a state_dict file, or an
   ``.ept`` pruned from that same base;
2. a file: an edgeprune pruned model (``.ept``), an ExportedProgram
   (``torch.export.save``, ``.pt2``) or a TorchScript file
   (``torch.jit.save``), recognised by their content, not their suffix.

What the user said travels with the model (``LoadedModel``): the weights'
origin, the factories the user named (trust), the input shape and where it
came from, the task, the class count, the preprocessing and where it came
from. A pruned model also carries its unpruned ``original`` with the user's
weights when that is known: the built-in trained weights of a built-in base,
or the weights file the ``.ept`` records (path and sha256) for a factory base
the user trusts; else ``original`` is None and the stages say that accuracy
cannot be compared (``--teacher`` gives it).

The input shape is never guessed in silence (:func:`input_shape_for`):
``input_shape=`` (``--input-shape``), else the model's ``input_shape``
attribute, else what the model itself allows (the first conv's channels and
the one size a fixed-size Linear behind the convolutions takes), else the
common size of the images in ``data``; else 224 x 224 with a warning line
naming ``--input-shape``. The choice is said on the terminal.

Security: a file never decides what code runs. Every pickle inside a file
(zip members, archives nested in it, ``.pt2`` payloads) is checked by
:mod:`edgeprune.safeload` before torch reads the file, then read with
``torch.load(weights_only=True)`` (a plain Python pickle is refused). An ``.ept`` whose base is a built-in name is rebuilt from the
registry; one whose base is a factory is rebuilt only when the caller names
that same factory: ``--model pkg.mod:fn --weights model.ept``, or
``--trust-factory pkg.mod:fn`` (``trust_factory=`` here). The refusal says so.

Example::

    lm = load_model("mobilenetv2")
    lm.module, lm.input_shape, lm.task      # (MobileNetV2, (1, 3, 224, 224), 'classify')
    lm = load_model("out/model.ept")                                  # built-in base
    lm = load_model("mine.ept", trust_factory="myzoo:tiny")           # factory base, trusted
    lm = load_model("myzoo:tiny", weights="mine.ept")                 # the same thing
    lm = load_model("usernet:build", weights="w.pt", input_shape="1,3,32,32", normalize="unit")
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgeprune._paths import sha256_file
from edgeprune.data import DataError, DataOptions, DataSplit, available
from edgeprune.data.preprocess import parse_normalize
from edgeprune.errors import ModelError
from edgeprune.models import _REGISTRY, LoadedModel, data_info, model_info, pretrained_available
from edgeprune.models.loading import (
    build_base,
    check_input,
    file_kind,
    is_factory,
    load_program,
    load_weights,
    not_a_model,
    num_classes_of,
    parse_shape,
    safe_torch_load,
    weights_path,
)
from edgeprune.progress import note
from edgeprune.prune.io import FORMAT, load_pruned, read_ept
from edgeprune.tasks import get_task, task_of


def _trusted(spec: str, trust_factory: str | Iterable[str] | None) -> tuple[str, ...]:
    named = [trust_factory] if isinstance(trust_factory, str) else list(trust_factory or ())
    if is_factory(spec):
        named.insert(0, spec)
    return tuple(dict.fromkeys(n for n in named if n))


def _ept_blob(path: Path):
    """The blob of ``path`` when it is an edgeprune ``.ept`` (read safely), else None."""
    if file_kind(path) != "torch":
        return None
    blob = safe_torch_load(path)
    return blob if isinstance(blob, dict) and blob.get("format") == FORMAT else None


def _refuse_other_shape(input_shape, lm: LoadedModel, path: Path) -> None:
    if input_shape and tuple(input_shape) != lm.input_shape:
        raise ModelError(
            f"--input-shape {','.join(map(str, input_shape))}: {path} was pruned for "
            f"{','.join(map(str, lm.input_shape))}; leave --input-shape out"
        )


def _from_spec(spec: str, weights: str | None, input_shape, trusted: tuple[str, ...], data: Any) -> LoadedModel:
    """A built-in name or a factory the user named, with optional weights (state_dict or .ept)."""
    if weights is not None:
        wpath = weights_path(weights)
        blob = _ept_blob(wpath)
        if blob is not None:  # an .ept pruned from this base: the user named the factory
            meta, _ = read_ept(wpath, blob)
            if meta["base"] != spec:
                raise ModelError(
                    f"--weights {wpath}: was pruned from '{meta['base']}', not '{spec}'; "
                    f"pass --model {meta['base']}"
                    + ("" if meta["base"] in _REGISTRY else f" --weights {wpath}")
                )
            lm = load_pruned(wpath, blob=blob, trust_factory=trusted)
            _refuse_other_shape(input_shape, lm, wpath)
            return lm
    builtin = spec in _REGISTRY
    if builtin:
        lm = build_base(spec, pretrained=None if weights is None else False, input_shape=input_shape)
        lm.pretrained = pretrained_available(spec) and weights is None
        lm.weights = "built-in trained" if lm.pretrained else "random init (no trained weights here)"
        native = _REGISTRY[spec].input_shape
        lm.input_shape_source = "--input-shape" if input_shape else f"the built-in {spec}'s own size"
        if input_shape and tuple(input_shape) != native:
            check_input(lm.module, lm.input_shape, spec, native=native)
    else:
        lm = build_base(spec, pretrained=False, input_shape=input_shape, data=data)
        lm.weights = "the factory's own initialisation"
    if weights is not None:
        wpath = weights_path(weights)
        load_weights(lm.module, wpath)
        lm.pretrained = True
        lm.weights, lm.weights_sha256 = str(wpath.resolve()), sha256_file(wpath)
    lm.module.eval()
    return lm


def _from_file(path: Path, input_shape, trusted: tuple[str, ...]) -> LoadedModel:
    kind = file_kind(path)
    if kind != "torch":
        return load_program(path, kind, input_shape)
    blob = safe_torch_load(path)
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        lm = load_pruned(path, blob=blob, trust_factory=trusted)
        _refuse_other_shape(input_shape, lm, path)
        return lm
    raise not_a_model(path, blob)


def _preprocessing(lm: LoadedModel, normalize: Any) -> None:
    """Fill ``lm.normalize`` and where it came from: the user's, the built-in model's, else the default."""
    if normalize is not None:
        lm.normalize, lm.normalize_source = parse_normalize(normalize), "--normalize"
        return
    if (lm.base or lm.name) in _REGISTRY:
        lm.normalize = data_info(lm).normalize
        lm.normalize_source = f"the built-in {lm.base or lm.name}'s own"
        return
    lm.normalize = data_info(lm).normalize
    three = int(lm.input_shape[1]) == 3 and lm.task == "classify"
    lm.normalize_source = ("edgeprune's default for a 3-channel classifier (ImageNet mean/std)" if three else
                           "edgeprune's default ([0, 1] pixels)") + "; --normalize sets it"


def load_model(
    spec: str | Path,
    *,
    weights: str | Path | None = None,
    input_shape: tuple[int, ...] | str | None = None,
    trust_factory: str | Iterable[str] | None = None,
    normalize: Any = None,
    data: Any = None,
    original: LoadedModel | None = None,
    task: str | None = None,
) -> LoadedModel:
    """Turn a ``--model`` value into a :class:`LoadedModel` (see the module docstring).

    ``weights``: a state_dict file, or an ``.ept`` pruned from ``spec``, for a
    built-in name or factory. ``input_shape`` overrides the model's own (batch
    1; a tuple or the CLI's ``"1,3,224,224"``). ``trust_factory``: the
    ``pkg.mod:fn`` (or several) an ``.ept`` file's base may name.
    ``normalize``: the preprocessing the model's inputs get (``imagenet``,
    ``unit``, ``MEAN/STD``). ``data``: the ``--data`` spec, consulted only
    for the input size of a factory that does not say it. ``original``: for
    a pruned model, its unpruned original as already loaded by the caller
    (deploy resuming from its own ``.ept``). ``task``: ``--task``; default
    what the model says (:func:`edgeprune.tasks.task_of`).
    """
    spec = str(spec)
    if not spec.strip():
        raise ModelError("--model is empty: give a built-in name, pkg.module:function, or a model file")
    shape = parse_shape(input_shape, where="input_shape") if input_shape is not None else None
    trusted = _trusted(spec, trust_factory)
    path = Path(spec).expanduser()
    if spec in _REGISTRY or (is_factory(spec) and not path.exists()):
        lm = _from_spec(spec, None if weights is None else str(weights), shape, trusted, data)
    elif path.exists():
        if path.is_dir():
            raise ModelError(
                f"{path}: is a folder; give the model file inside it (e.g. {path}/model.ept)"
            )
        if weights:
            raise ModelError(
                f"--weights {weights}: only for a built-in name or pkg.module:factory, not a file"
            )
        lm = _from_file(path, shape, trusted)
    elif "/" in spec or path.suffix:
        raise ModelError(f"{spec}: file not found")
    else:
        model_info(spec)  # raises: unknown name, with a suggestion
        raise AssertionError("unreachable")
    lm.trusted = tuple(dict.fromkeys((*lm.trusted, *trusted)))
    if task is not None or (lm.base not in _REGISTRY and not lm.pruned):
        lm.task = task_of(lm.module, override=task, input_shape=tuple(lm.input_shape))
    if original is not None:
        lm.original = original
    if lm.num_classes is None and lm.task == "classify":
        lm.num_classes = num_classes_of(lm.module, lm.input_shape)
    _preprocessing(lm, normalize)
    if lm.original is not None and normalize is None:
        lm.normalize, lm.normalize_source = lm.original.normalize, lm.original.normalize_source
    return lm


def split_for_model(lm: LoadedModel, options: DataOptions):
    """The data for ``lm`` (a DataSplit): ``options.data``, else the model's own built-in data set; None
    without either. Preprocessed as ``lm`` says (input shape, task, normalisation, class count); said on
    the terminal."""
    if isinstance(options.data, DataSplit):
        return options.data
    spec = options.data
    if spec is None:
        own = data_info(lm).dataset
        spec = own if own and available(own) else None
    split = None
    if spec is not None:
        split = get_task(lm.task).open_data(
            spec, input_shape=tuple(lm.input_shape), normalize=lm.normalize, num_classes=lm.num_classes,
            val_data=options.val_data, val_fraction=options.val_fraction, limit=options.limit, seed=options.seed)
    if split is None and options.val_data is not None:
        raise DataError(f"--val-data {options.val_data}: give --data too ({lm.name} has no built-in data set "
                        "here to hold it out from)")
    if split is not None:
        info = split.to_dict()
        sizes = ", ".join(f"{k} {v:,}" for k, v in (info.get("sizes") or {}).items())
        note(f"data {info.get('source')}: {sizes} ({info.get('preprocess') or lm.normalize})")
    return split


def say_loaded(lm: LoadedModel) -> None:
    """One line on the terminal saying what was loaded, at which input size, and from where."""
    shape = "x".join(map(str, lm.input_shape))
    note(f"model {lm.name}: input {shape} ({lm.input_shape_source or 'the model'}), {lm.task}"
         + (f", {lm.num_classes} classes" if lm.num_classes else "")
         + (f", weights: {lm.weights}" if lm.weights and not lm.pruned else ""))
    for line in lm.notes:
        if line.startswith("warning:"):
            note(line)


__all__ = ["LoadedModel", "load_model", "say_loaded", "split_for_model"]
