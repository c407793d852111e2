"""The model-side pieces of loading: safe file reads, the user's factory, weights, input checks.

:func:`edgeprune.load.load_model` (one level above this package and
:mod:`edgeprune.prune`) decides what a ``--model`` value is; this module
does the parts that need only the model zoo:

- :func:`safe_torch_load`: every pickle in the file checked first
  (:mod:`edgeprune.safeload`), then ``torch.load(weights_only=True)``, so a
  pickle that would build arbitrary Python objects (``torch.save(model)``, a
  malicious ``__reduce__``) is refused, never executed; a plain Python
  pickle (not a torch file) is refused;
- :func:`call_factory`: import and call the user's ``package.module:function``.
  Only ever called for a factory the *user* named (``--model``,
  ``--trust-factory``), never for one named inside a file;
- :func:`load_weights`: a state_dict file into a model, strictly;
- :func:`check_input`: does the model run on this input shape (one line if not);
- :func:`load_file`: an ExportedProgram (``.pt2``) or TorchScript file,
  recognised by their zip members, not their suffix. They load and export,
  but their layers are no longer ``nn.Conv2d`` modules, so they cannot be
  pruned: the pruner says so and asks for the factory.

Errors are one line naming the file (or factory) and the fix.

Example::

    model = call_factory("myzoo:tiny")            # the user's own code, named by the user
    load_weights(model, "weights.pt")
    check_input(model, (1, 3, 32, 32), "myzoo:tiny")
"""

from __future__ import annotations

import pickle
import re
import types
import zipfile
from pathlib import Path
from typing import Any

from edgeprune.errors import ModelError
from edgeprune.models.ultra import quiet_environment, torchvision_version_answered, undo_patches
from edgeprune.safeload import check_file, check_graph, quiet, torch_load
from edgeprune.userfn import import_function, short

# Lazy imports: the imports inside functions below load numpy, torch, which importing this module does not;
# they load only when a function that needs them runs.

DEFAULT_INPUT = (1, 3, 224, 224)
FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_REFUSED = (
    "refused: it is a pickle that builds Python objects{what}, which could run code "
    "(torch.load weights_only=True); save a state_dict instead "
    "(torch.save(model.state_dict(), f)) and pass --model pkg.module:factory --weights FILE"
)


def is_factory(spec: str) -> bool:
    """Whether ``spec`` has the shape of a Python factory ``package.module:function``."""
    return bool(FACTORY.match(spec))


def _plain_pickle_protocol(path: Path) -> int | None:
    """The protocol of a plain Python pickle (not torch's zip format), else None.

    torch's legacy (pre-1.6, non-zip) files are pickles of protocol 2 and are
    left to ``torch.load``; protocol 3+ outside a zip is ``pickle.dump``'s work.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:
        return None
    if len(head) == 2 and head[0] == 0x80 and 3 <= head[1] <= 5 and not zipfile.is_zipfile(path):
        return head[1]
    return None


def safe_torch_load(path: Path):
    """``torch.load(path, weights_only=True)`` with one-line errors, and torch's warnings kept quiet."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"{path}: is a folder, not a model file; give the file inside it")
    check_file(path)  # every pickle in it, before torch reads a byte: a global that could run code is refused
    protocol = _plain_pickle_protocol(path)
    if protocol is not None:
        raise ModelError(
            f"{path}: " + _REFUSED.format(what=f" (a plain Python pickle, protocol {protocol})")
        )
    try:
        return torch_load(path)  # quiet: e.g. "Detected pickle protocol 4": the error says it
    except ModelError:
        raise
    except FileNotFoundError:
        raise ModelError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ModelError(f"{path}: is a folder, not a model file; give the file inside it") from None
    except PermissionError:
        raise ModelError(f"{path}: cannot read it (permission denied)") from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found or "unsupported global" in str(exc).lower():
            what = f" ({found.group(1)})" if found else ""
            raise ModelError(f"{path}: " + _REFUSED.format(what=what)) from None
        raise ModelError(f"{path}: not a PyTorch model or weights file") from None
    except Exception:  # torch raises many types on foreign bytes
        raise ModelError(f"{path}: not a PyTorch model or weights file") from None


def is_state_dict(obj) -> bool:
    """A non-empty dict of tensors keyed by strings (what ``model.state_dict()`` gives)."""
    import torch

    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _state_dict_of(obj, path: Path) -> dict:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not is_state_dict(obj):
        raise ModelError(f"{path}: not a state_dict (a dict of tensors)")
    return obj


def weights_path(path: str | Path) -> Path:
    """``--weights`` as a Path, or a one-line error saying what is wrong with it."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ModelError(
            f"--weights {path}: is a folder; give the weights file inside it (a state_dict .pt or a .ept)"
        )
    if not path.is_file():
        raise ModelError(f"--weights {path}: file not found")
    return path


def load_weights(model, path: str | Path) -> None:
    """Load a state_dict file into ``model`` strictly; a misfit names the first bad key."""
    path = weights_path(path)
    state = _state_dict_of(safe_torch_load(path), path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    bad = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if bad:
        k = bad[0]
        raise ModelError(
            f"{path}: weights do not fit the architecture: '{k}' is {tuple(state[k].shape)} "
            f"in the file, {tuple(own[k].shape)} in the model ({len(bad)} mismatched); "
            "give the factory that built these weights"
        )
    if missing or extra:
        what = f"missing '{missing[0]}'" if missing else f"unexpected '{extra[0]}'"
        raise ModelError(
            f"{path}: weights do not fit the architecture: {what} "
            f"({len(missing)} missing, {len(extra)} unexpected keys)"
        )
    model.load_state_dict(state, strict=True)


def call_factory(spec: str):
    """Import and call the user's factory ``pkg.module:function``; the ``nn.Module`` it returns.

    This runs the user's code: call it only for a factory the user named
    (``--model``, ``--trust-factory``). Failures inside that code are one line
    naming the factory; the traceback is chained (``--debug`` shows it).
    """
    from torch import nn

    fn_name = spec.split(":")[1]
    where = f"--model {spec}"
    quiet_environment()  # a factory that imports Ultralytics: no network, no run-time installs
    with torchvision_version_answered():  # ... and reads torchvision's version (edgeprune.models.ultra)
        fn = import_function(spec, where=where, error=ModelError)
    try:
        model = fn()
    except Exception as exc:
        raise ModelError(
            f"{where}: {fn_name}() raised {type(exc).__name__}: {short(exc)}; "
            "fix the factory (--debug shows the traceback)"
        ) from exc
    finally:
        undo_patches()  # what importing Ultralytics replaced process-wide (edgeprune.models.ultra)
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"{where}: {fn_name}() returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model.eval()



def _shape_text(shape: tuple[int, ...]) -> str:
    return ",".join(str(d) for d in shape)


def run_once(model, shape: tuple[int, ...], where: str, *, native: tuple[int, ...] | None = None):
    """Run ``model`` on zeros of ``shape`` and return the output, or one line saying it cannot.

    ``native``: the model's own input shape, suggested in the error when known.
    """
    import torch

    try:
        with torch.no_grad():
            return model(torch.zeros(*shape))
    except Exception as exc:
        fix = (
            f"its input is {_shape_text(native)}: pass --input-shape {_shape_text(native)}"
            if native and tuple(native) != tuple(shape)
            else "pass the --input-shape it takes"
        )
        raise ModelError(
            f"{where}: the model does not run on input {_shape_text(shape)} "
            f"({type(exc).__name__}: {short(exc, 120)}); {fix}"
        ) from None


def task_of(model, shape: tuple[int, ...], where: str, *, native=None) -> str:
    """'classify' when the model gives one (N, C) output on ``shape``, else 'detect'."""
    out = run_once(model, shape, where, native=native)
    if isinstance(out, (tuple, list)) and len(out) > 1:
        return "detect"
    first = out[0] if isinstance(out, (tuple, list)) else out
    return "classify" if getattr(first, "ndim", 0) == 2 else "detect"


def check_input(model, shape: tuple[int, ...], where: str, *, native=None) -> None:
    """Raise a one-line :class:`ModelError` unless ``model`` runs on ``shape``."""
    run_once(model, shape, where, native=native)


def parse_shape(value, *, where: str = "--input-shape") -> tuple[int, ...]:
    """An input shape from the CLI's ``"1,3,224,224"`` or a sequence of ints; one line if it is neither.

    Example::

        parse_shape("1,3,32,32")      # (1, 3, 32, 32)
        parse_shape((1, 3, 32, 32))   # the same
    """
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace("x", ",").split(",")]
        try:
            shape = tuple(int(p) for p in parts)
        except ValueError:
            raise ModelError(f"{where} {value!r}: give 4 whole numbers N,C,H,W such as 1,3,224,224") from None
    else:
        try:
            items = list(value)
        except TypeError:
            raise ModelError(f"{where} {value!r}: give (N, C, H, W) such as (1, 3, 224, 224) or '1,3,224,224'") from None
        if not all(isinstance(d, int) and not isinstance(d, bool) or
                   (hasattr(d, "__index__") and not isinstance(d, (bool, float))) for d in items):
            raise ModelError(f"{where} {value!r}: every size must be a whole number, e.g. (1, 3, 224, 224)")
        shape = tuple(int(d) for d in items)
    if len(shape) != 4 or min(shape) < 1:
        raise ModelError(f"{where} {value!r}: give 4 positive sizes N,C,H,W such as 1,3,224,224")
    if shape[0] != 1:
        raise ModelError(f"{where} {value!r}: boards run batch 1; give 1,{','.join(map(str, shape[1:]))}")
    if max(shape) > 8192:
        raise ModelError(f"{where} {value!r}: a side of at most 8192 pixels")
    return shape


def num_classes_of(module, shape: tuple[int, ...]) -> int | None:
    """A classifier's output count (one (1, K) output), else None."""
    import torch

    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *tuple(shape)[1:]))
    except Exception:
        return None
    first = out[0] if isinstance(out, (tuple, list)) else out
    return int(first.shape[1]) if getattr(first, "ndim", 0) == 2 else None


# Sizes tried when the model's own code decides its input size (a fixed-size Linear after the convs).
_TRY_SIZES = (224, 32, 28, 64, 96, 128, 16, 48, 160, 192, 256, 299, 320, 8)


def _runs(module, shape: tuple[int, ...]) -> bool:
    import torch

    try:
        with torch.no_grad():
            module(torch.zeros(*shape))
        return True
    except Exception:
        return False


def _first_conv_channels(module) -> int | None:
    from torch import nn

    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
        if isinstance(m, nn.Linear):
            return None
    return None


def input_shape_for(module, given: tuple[int, ...] | None, data: Any = None) -> tuple[tuple[int, ...], str, bool]:
    """``(shape, where it came from, guessed)`` for a model that is not built-in (see :mod:`edgeprune.load`).

    Tried in order: ``given`` (``--input-shape``); the model's ``input_shape``
    attribute; the model itself (the first conv's input channels, and the one
    size it runs on when a fixed-size Linear sits behind the convolutions);
    the common size of the images in ``data``; else 1x3x224x224, ``guessed``.
    """
    if given is not None:
        return tuple(given), "--input-shape", False
    attr = getattr(module, "input_shape", None)
    if attr is not None:
        try:
            return parse_shape(attr, where="the model's input_shape attribute"), \
                "the model's input_shape attribute", False
        except ModelError:
            pass
    channels = _first_conv_channels(module) or 3
    for side in _TRY_SIZES:
        if _runs(module, (1, channels, side, side)):
            # a size-free model (global pooling) also runs at other sizes that fit its strides
            others = [o for o in (64, 128, 96, 256, 160) if o != side][:3]
            if not any(_runs(module, (1, channels, o, o)) for o in others):
                return (1, channels, side, side), (f"the model itself: it runs on {side}x{side} "
                                                   "(a fixed-size Linear behind its convolutions)"), False
            break
    from edgeprune.data.sources import common_image_size

    size = common_image_size(data) if data is not None else None
    if size is not None:
        (h, w), what = size
        return (1, channels, h, w), f"the data: {what}", False
    return (1, channels, 224, 224), ("edgeprune's default 224x224 (the model does not say which size it was "
                                     "built for); pass --input-shape N,C,H,W"), True


def task_of_module(module) -> str | None:
    """The task a model says it has (an Ultralytics model's ``task`` attribute), else None."""
    task = getattr(module, "task", None)
    return task if task in ("classify", "detect") else None


def build_base(base: str, *, pretrained: bool | None = False, input_shape: tuple[int, ...] | None = None,
               data: Any = None):
    """The unpruned architecture ``base`` (a built-in name or ``pkg.mod:fn``) as a LoadedModel.

    A factory is called: pass only a factory the user named or trusted
    (:func:`edgeprune.load.load_model` and :func:`edgeprune.prune.io.load_pruned` check).
    ``data``: consulted for a factory model's input size when nothing else says it.
    """
    from edgeprune.models import (  # the package imports this module: at call time
        _REGISTRY,
        LoadedModel,
        build,
    )

    if base in _REGISTRY:
        info = _REGISTRY[base]
        module = build(base, pretrained=pretrained)
        return LoadedModel(
            module=module,
            input_shape=tuple(input_shape or info.input_shape),
            name=base,
            source=f"builtin:{base}",
            task=info.task,
            base=base,
            pretrained=bool(pretrained),
            input_shape_source="--input-shape" if input_shape else f"the built-in {base}'s own size",
        )
    if not is_factory(base):
        raise ModelError(f"unknown base architecture '{base}'")
    module = call_factory(base)
    shape, where, guessed = input_shape_for(module, tuple(input_shape) if input_shape else None, data)
    native = getattr(module, "input_shape", None)
    lm = LoadedModel(
        module=module,
        input_shape=shape,
        name=base.split(":")[-1],
        source=base,
        task=task_of_module(module) or task_of(module, shape, f"--model {base}", native=native),
        base=base,
        input_shape_source=where,
    )
    if guessed:
        lm.notes.append(f"warning: input size {'x'.join(map(str, shape))} is {where}")
    return lm


def file_kind(path: Path) -> str:
    """'exported-program', 'torchscript' or 'torch' (a torch.save pickle), from the zip members."""
    names: list[str] = []
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            names = []
    if any(n.endswith("models/model.json") for n in names) and any(
        n.endswith("archive_format") for n in names
    ):
        return "exported-program"
    if any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names):
        return "torchscript"
    return "torch"


def load_program(path: Path, kind: str, input_shape: tuple[int, ...] | None):
    """An ExportedProgram or TorchScript file as a LoadedModel (loads and exports; not prunable)."""
    import torch

    from edgeprune.models import LoadedModel

    label = "ExportedProgram" if kind == "exported-program" else "TorchScript file"
    check_file(path)  # every pickle in the archive and the archives inside it, before torch reads it
    if kind == "exported-program":
        check_graph(path)  # its nodes call operators only; its shape expressions are arithmetic
    try:
        with quiet():
            if kind == "exported-program":
                program = torch.export.load(str(path))
                module = _eval_mode_program(program.module())
                input_shape = input_shape or _sample_shape(program)
            else:
                module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelError(f"{path}: damaged {label} ({type(exc).__name__})") from None
    shape = tuple(input_shape or DEFAULT_INPUT)
    return LoadedModel(
        module=module,
        input_shape=shape,
        name=path.stem,
        source=str(path),
        task=task_of(module, shape, str(path)),
        base=None,
        notes=[f"{kind}: loads and exports, but cannot be pruned (no nn.Conv2d modules left)"],
    )


def _sample_shape(program) -> tuple[int, ...] | None:
    """The shape of an ExportedProgram's one sample input (what it was exported on), else None."""
    try:
        args, kwargs = program.example_inputs
        shape = tuple(int(d) for d in args[0].shape) if len(args) == 1 and not kwargs else None
    except Exception:  # no sample inputs saved, or not one tensor
        return None
    return shape if shape is not None and len(shape) == 4 and shape[0] == 1 else None


def _eval_mode_program(module):
    """An ExportedProgram's module whose ``eval()``/``train()`` every stage may call: no-ops.

    torch's ``ExportedProgram.module()`` raises on ``eval()`` ("not supported
    yet"): its graph's dropout and batch-norm ops hold the mode it was
    exported in (``torch.export`` of a model in eval mode, as edgeprune's
    stages want it), and no call can change that.
    """
    def _mode(self, mode: bool = True):
        return self

    module.train = types.MethodType(_mode, module)
    module.eval = types.MethodType(lambda self: self, module)
    return module


def not_a_model(path: Path, blob) -> ModelError:
    """The error for a torch file that is no model edgeprune can load by itself."""
    if is_state_dict(blob) or (isinstance(blob, dict) and is_state_dict(blob.get("state_dict"))):
        return ModelError(
            f"{path}: is a state_dict (weights only, no architecture); pass "
            f"--model NAME_OR_pkg.module:factory --weights {path}"
        )
    return ModelError(
        f"{path}: not a model (expected an edgeprune .ept, an ExportedProgram, "
        "TorchScript, or a state_dict with --weights)"
    )
