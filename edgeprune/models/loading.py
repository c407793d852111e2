"""``--model`` -> :class:`~edgeprune.models.LoadedModel`, refusing anything that would run code.

Accepted, tried in this order:

1. a built-in name (``mobilenetv2``), optionally ``weights=`` a state_dict file;
2. a file: an edgeprune pruned model (``.ept``), an ExportedProgram
   (``torch.export.save``, ``.pt2``) or a TorchScript file
   (``torch.jit.save``), recognised by their zip members, not their suffix;
3. a Python factory ``package.module:function`` returning an ``nn.Module``
   (the user's own code, imported like any module), optionally ``weights=``.

Every torch pickle is read with ``torch.load(weights_only=True)``: a pickle
that would build arbitrary Python objects (``torch.save(model)``, or a
malicious ``__reduce__``) is refused, never executed. ExportedPrograms and
TorchScript load and export, but their layers are no longer ``nn.Conv2d``
modules, so they cannot be pruned: the pruner says so and asks for the
factory.

Errors are one line naming the file and the fix.
"""

from __future__ import annotations

import importlib
import pickle
import re
import zipfile
from pathlib import Path

from edgeprune.errors import ModelError

DEFAULT_INPUT = (1, 3, 224, 224)
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_REFUSED = (
    "refused: it is a pickle that builds Python objects, which could run code "
    "(torch.load weights_only=True); save a state_dict instead "
    "(torch.save(model.state_dict(), f)) and pass --model pkg.module:factory --weights FILE"
)


def safe_torch_load(path: Path):
    """``torch.load(path, weights_only=True)`` with one-line errors."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ModelError(f"{path}: is a directory, not a model file") from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found or "unsupported global" in str(exc).lower():
            what = f" ({found.group(1)})" if found else ""
            raise ModelError(
                f"{path}: {_REFUSED.replace('builds Python objects', 'builds Python objects' + what)}"
            ) from None
        raise ModelError(f"{path}: not a PyTorch model or weights file") from None
    except Exception:  # torch raises many types on foreign bytes
        raise ModelError(f"{path}: not a PyTorch model or weights file") from None


def _state_dict_of(obj, path: Path) -> dict:
    import torch

    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        raise ModelError(f"{path}: not a state_dict (a dict of tensors)")
    return obj


def load_weights(model, path: str | Path) -> None:
    """Load a state_dict file into ``model`` strictly; a misfit names the first bad key."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
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


def _call_factory(spec: str):
    from torch import nn

    mod_name, fn_name = spec.split(":")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelError(
            f"--model {spec}: cannot import '{mod_name}' ({exc}); is it on PYTHONPATH?"
        ) from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ModelError(f"--model {spec}: '{mod_name}' has no function '{fn_name}'")
    model = fn()
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"--model {spec}: {fn_name}() returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model.eval()


def _task_of(model, shape: tuple[int, ...], where: str) -> str:
    import torch

    try:
        with torch.no_grad():
            out = model(torch.zeros(*shape))
    except Exception as exc:
        raise ModelError(
            f"{where}: the model does not run on input {shape} "
            f"({type(exc).__name__}: {str(exc)[:120]}); pass --input-shape"
        ) from None
    if isinstance(out, (tuple, list)) and len(out) > 1:
        return "detect"
    first = out[0] if isinstance(out, (tuple, list)) else out
    return "classify" if first.ndim == 2 else "detect"


def build_base(base: str, *, pretrained: bool = False, input_shape: tuple[int, ...] | None = None):
    """The unpruned architecture ``base`` (built-in name or ``pkg.mod:fn``) as a LoadedModel."""
    from edgeprune.models import _REGISTRY, LoadedModel, build

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
        )
    if not _FACTORY.match(base):
        raise ModelError(f"unknown base architecture '{base}'")
    module = _call_factory(base)
    shape = tuple(input_shape or getattr(module, "input_shape", None) or DEFAULT_INPUT)
    return LoadedModel(
        module=module,
        input_shape=shape,
        name=base.split(":")[-1],
        source=base,
        task=_task_of(module, shape, base),
        base=base,
    )


def _load_file(path: Path, input_shape):
    from edgeprune.models import LoadedModel

    names: list[str] = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    if any(n.endswith("models/model.json") for n in names) and any(
        n.endswith("archive_format") for n in names
    ):
        import torch

        try:
            module = torch.export.load(str(path)).module()
        except Exception as exc:
            raise ModelError(f"{path}: damaged ExportedProgram ({type(exc).__name__})") from None
        kind = "exported-program"
    elif any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names):
        import torch

        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ModelError(f"{path}: damaged TorchScript file ({type(exc).__name__})") from None
        kind = "torchscript"
    else:
        blob = safe_torch_load(path)
        if isinstance(blob, dict) and blob.get("format") == "edgeprune.pruned-model":
            from edgeprune.prune.io import load_pruned

            return load_pruned(path, blob=blob)
        try:
            _state_dict_of(blob, path)
        except ModelError:
            raise ModelError(
                f"{path}: not a model (expected an edgeprune .ept, an ExportedProgram, "
                "TorchScript, or a state_dict with --weights)"
            ) from None
        raise ModelError(
            f"{path}: is a state_dict (weights only, no architecture); pass "
            f"--model NAME_OR_pkg.module:factory --weights {path}"
        )
    shape = tuple(input_shape or DEFAULT_INPUT)
    return LoadedModel(
        module=module,
        input_shape=shape,
        name=path.stem,
        source=str(path),
        task=_task_of(module, shape, str(path)),
        base=None,
        notes=[f"{kind}: loads and exports, but cannot be pruned (no nn.Conv2d modules left)"],
    )


def load_model(
    spec: str, *, weights: str | None = None, input_shape: tuple[int, ...] | None = None
):
    """See the module docstring. ``input_shape`` overrides the default (batch 1)."""
    from edgeprune.models import _REGISTRY, model_info

    path = Path(spec).expanduser()
    if spec in _REGISTRY or _FACTORY.match(spec) and not path.exists():
        builtin_weights = None if (spec in _REGISTRY and weights is None) else False
        lm = build_base(spec, pretrained=builtin_weights, input_shape=input_shape)
        if spec in _REGISTRY:
            from edgeprune.models import pretrained_available

            lm.pretrained = pretrained_available(spec) and weights is None
        if weights:
            load_weights(lm.module, weights)
            lm.pretrained = True
        lm.module.eval()
        return lm
    if path.exists():
        if path.is_dir():
            raise ModelError(
                f"{path}: is a directory; give the model file inside it (e.g. {path}/model.ept)"
            )
        if weights:
            raise ModelError(
                f"--weights {weights}: only for a built-in name or pkg.module:factory, not a file"
            )
        return _load_file(path, input_shape)
    if "/" in spec or path.suffix:
        raise ModelError(f"{spec}: file not found")
    model_info(spec)  # raises: unknown name, with a suggestion
    raise AssertionError("unreachable")
