"""The delegate a phone's ``benchmark_model`` runs a model with, and what its output says about it.

Found by name (:data:`DELEGATES`): ``cpu`` (XNNPACK; ``--num_threads``),
``gpu`` (``--use_gpu=true``), ``nnapi`` (``--use_nnapi=true``), ``external``
(a vendor delegate ``.so`` on the phone, e.g. Qualcomm's QNN, with
``--external_delegate_path``; a value starting with ``/`` is that path).
Which one: ``--delegate`` (bench), else the targets entry's ``delegate``,
else the profile's ``[delegate] default``, else ``cpu``.

Whether it took the model: the binary's own lines (parsed by
:mod:`edgeprune.bench.bm_output`): ``Explicitly applied GPU delegate, and
the model graph will be completely / partially / not executed``, ``Replacing
N out of M node(s)``, the GPU delegate's ``N operations will run on the GPU``.

Example::

    d = resolve_delegate(reach, "gpu")
    judge_delegate(parse_benchmark_output(text), d)["fell_back"]    # False, True, or None (not said)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edgeprune.bench.bm_output import BenchmarkOutput
from edgeprune.errors import ProfileError

# The delegate's path and options go into one word-split flag string in the batch script: plain characters only.
_PATH = re.compile(r"^/[A-Za-z0-9._+/-]{1,255}$")
_OPTIONS = re.compile(r"^[A-Za-z0-9_.:;,=/+-]{0,500}$")


@dataclass(frozen=True)
class Delegate:
    """What benchmark_model runs the model with: ``name`` (cpu, gpu, nnapi, external), the binary's
    name for it (``provider``, as in its log lines), a label for people, and the flags that ask for it."""

    name: str
    provider: str
    label: str
    flags: tuple[str, ...]
    path: str | None = None


# name -> (the binary's provider name, label, flags)
DELEGATES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "cpu": ("XNNPACK", "CPU (XNNPACK)", ("--use_xnnpack=true",)),
    "gpu": ("GPU", "GPU", ("--use_gpu=true",)),
    "nnapi": ("NNAPI", "NNAPI", ("--use_nnapi=true",)),
    "external": ("EXTERNAL", "external", ()),
}
ALIASES = {"xnnpack": "cpu"}


def resolve_delegate(reach, override: str | None = None) -> Delegate:
    """The delegate for ``reach``: ``override`` (``--delegate``), the targets entry's, the profile's, else cpu."""
    section = reach.profile.data.get("delegate") or {}
    value = override or reach.delegate or section.get("default") or "cpu"
    if override:
        where = "--delegate"
    elif reach.delegate:
        src = reach.sources.get("delegate", "targets file")
        where = src if src == "--delegate" else f"{src}: [{reach.name}] key 'delegate'"
    else:
        where = f"profile {reach.profile.name} key 'delegate.default'"
    path = None
    if value.startswith("/"):
        value, path = "external", value
    name = ALIASES.get(value, value)
    if name not in DELEGATES:
        raise ProfileError(f"{where}: unknown delegate {value!r} (known: {', '.join(DELEGATES)}, or the path of "
                           "an external delegate .so on the phone)")
    provider, label, flags = DELEGATES[name]
    if name == "external":
        path = path or section.get("external_path")
        if not path:
            raise ProfileError(f"{reach.name}: delegate 'external' needs the path of the delegate .so on the phone: "
                               f"--delegate /data/local/tmp/libX.so, or delegate = \"/path\" in [{reach.name}] of "
                               "the targets file")
        options = section.get("external_options") or ""
        if not _PATH.match(path) or not _OPTIONS.match(options):
            raise ProfileError(f"{where}: the external delegate's path {path!r} (or its options) has characters "
                               "other than letters, digits and ._+/-")
        flags = (f"--external_delegate_path={path}",) + ((f"--external_delegate_options={options}",)
                                                         if options else ())
        label = f"external ({path.rsplit('/', 1)[-1]})"
    return Delegate(name=name, provider=provider, label=label, flags=flags, path=path)


def judge_delegate(out: BenchmarkOutput, delegate: Delegate) -> dict[str, Any]:
    """Which delegate ran and whether the model fell back to the CPU, from the binary's own lines.

    ``fell_back``: False when the binary says the graph runs completely on the
    delegate (or all its nodes were replaced), True when partly or not at all,
    None when it printed nothing about it.
    """
    row = (out.delegate.get("applied") or {}).get(delegate.provider, {})
    done, total = row.get("nodes_delegated"), row.get("nodes_total")
    executed = row.get("executed")
    if executed == "failed":
        fell_back, ran = None, "failed"
    elif executed == "not" or done == 0:
        fell_back, ran = True, "cpu"
    elif executed == "partially" or (done is not None and total is not None and done < total):
        fell_back, ran = True, f"{delegate.name}+cpu"
    elif executed == "completely" or (done is not None and done == total):
        fell_back, ran = False, delegate.name
    else:
        fell_back, ran = None, "unknown"
    if delegate.name == "cpu" and fell_back:
        ran = "cpu (TFLite kernels)"  # what XNNPACK did not take runs on the reference CPU kernels
    return {"name": delegate.name, "label": delegate.label, "provider": delegate.provider, "ran": ran,
            "fell_back": fell_back, "nodes_delegated": done, "nodes_total": total,
            "flags": list(delegate.flags)}


def describe_delegate(d: dict[str, Any]) -> str:
    """``GPU delegate (31 of 31 nodes)`` / ``GPU delegate requested, fell back to the CPU for 4 of 31 nodes``."""
    done, total = d.get("nodes_delegated"), d.get("nodes_total")
    nodes = f"{done} of {total} nodes" if done is not None and total is not None else None
    if d.get("fell_back") is False:
        return f"{d['label']} delegate" + (f" ({nodes})" if nodes else "")
    if d.get("fell_back") is True:
        if done:
            return f"{d['label']} delegate, {total - done} of {total} nodes fell back to the CPU"
        return f"{d['label']} delegate requested, but everything fell back to the CPU"
    return f"{d['label']} delegate (the binary did not say how many nodes it took)"
