"""The record of one exported file, and the metadata stamped into it.

An :class:`Artifact` is a plain value: path, format, precision, sha256,
size, the agreement figures of its verification, and the metadata that the
file itself carries.

Where the metadata lives (chosen so that it travels with the file alone):

- ONNX: ``metadata_props`` entries, one per key, prefixed ``edgeprune.``
  (``edgeprune.source_sha256``, ``edgeprune.plan``, ...); values are strings,
  JSON for structured ones.
- TFLite: one entry named ``edgeprune`` in the flatbuffer's ``metadata``
  list, whose buffer holds the JSON object. The interpreter ignores unknown
  metadata, and it survives copying. (No tflite-support package is needed:
  the schema module shipped with ai-edge-litert rewrites the flatbuffer.)

The output folder also gets ``export.json``, the whole report, written by
:mod:`edgeprune.export.pipeline`.

Example::

    stamp_metadata(Path("out/m.int8.tflite"), {"profile": "coral-usb"})
    read_metadata(Path("out/m.int8.tflite"))["profile"]   # 'coral-usb'
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeprune._paths import atomic_file, atomic_write_bytes
from edgeprune.errors import ExportError

# Lazy imports: the imports inside functions below load ai_edge_litert, flatbuffers, numpy, onnx, which importing this module does not;
# they load only when a function that needs them runs.

METADATA_NAME = "edgeprune"
ONNX_PREFIX = "edgeprune."


@dataclass
class Artifact:
    """One file produced by an export step."""

    path: Path
    format: str
    precision: str
    sha256: str
    size_bytes: int
    agreement: dict[str, float] | None  # vs the original PyTorch model
    agreement_vs_previous: dict[str, float] | None = None  # vs the step it came from
    step: str = ""  # e.g. 'onnx fp32'
    final: bool = False  # the file the board runs (others are intermediate)
    seconds: float = 0.0  # wall time of the conversion step
    metadata: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the Edge TPU compiler report

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _onnx_stamp(path: Path, meta: dict[str, Any]) -> None:
    import onnx

    proto = onnx.load(str(path))
    keep = [p for p in proto.metadata_props if not p.key.startswith(ONNX_PREFIX)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key = ONNX_PREFIX + key
        entry.value = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    with atomic_file(path) as tmp:
        onnx.save(proto, str(tmp))


def _onnx_read(path: Path) -> dict[str, Any]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for p in proto.metadata_props:
        if p.key.startswith(ONNX_PREFIX):
            try:
                out[p.key[len(ONNX_PREFIX):]] = json.loads(p.value)
            except ValueError:
                out[p.key[len(ONNX_PREFIX):]] = p.value
    return out


def _tflite_stamp(path: Path, meta: dict[str, Any]) -> None:
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    payload = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    entries = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    buf = fb.BufferT()
    buf.data = payload
    model.buffers.append(buf)
    entry = fb.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = entries + [entry]
    builder = flatbuffers.Builder(path.stat().st_size + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    atomic_write_bytes(path, bytes(builder.Output()))


def _tflite_read(path: Path) -> dict[str, Any]:
    from ai_edge_litert import schema_py_generated as fb

    data = path.read_bytes()
    model = fb.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            return json.loads(bytes(model.Buffers(entry.Buffer()).DataAsNumpy()).decode("utf-8"))
    return {}


def stamp_metadata(path: Path, meta: dict[str, Any]) -> None:
    """Write ``meta`` into the file itself (ONNX metadata_props or TFLite metadata)."""
    path = Path(path)
    try:
        if path.suffix == ".onnx":
            _onnx_stamp(path, meta)
        elif path.suffix == ".tflite":
            _tflite_stamp(path, meta)
        else:
            raise ExportError(f"{path}: no way to stamp metadata into a '{path.suffix}' file")
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{path}: cannot write edgeprune metadata: {type(exc).__name__}: {exc}") from exc


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The edgeprune metadata stamped into an ONNX or TFLite file ({} if none)."""
    path = Path(path)
    if path.suffix == ".onnx":
        return _onnx_read(path)
    if path.suffix == ".tflite":
        return _tflite_read(path)
    raise ExportError(f"{path}: not an ONNX or TFLite file")
