"""ONNX -> TFLite through onnx2tf and TensorFlow, offline; running and inspecting TFLite with LiteRT.

Conversion, in two parts:

1. Shape arithmetic is folded into constants (:func:`_fold_constants`), then
   onnx2tf turns the ONNX fp32 model into a TensorFlow SavedModel (NCHW
   becomes NHWC; shapes stay static, batch 1). onnx2tf downloads a
   calibration file from the internet for any 3-channel 4-D input, even for
   fp32, so :func:`saved_model` replaces ``onnx2tf.onnx2tf.download_test_image_data``
   with a function returning *our* NHWC samples for the call's duration.
   onnx2tf rewrites its input in place, so it converts a copy in a temporary
   folder; its errors are ``SystemExit``, turned into
   :class:`~edgeprune.errors.ExportError`.
2. ``tf.lite.TFLiteConverter.from_saved_model`` makes the precision asked
   for (this is what onnx2tf does inside; calling it ourselves skips the
   two INT8 variants onnx2tf would also build, keeps the ``serving_default``
   signature that maps outputs back by name, and lets us set the I/O types):

   - fp32: plain conversion;
   - fp16: float16 weights (``supported_types=[tf.float16]``);
   - int8: *full integer*: ``TFLITE_BUILTINS_INT8`` only (an op that has no
     int8 kernel fails the conversion instead of silently staying float),
     per-channel, calibrated with our samples, I/O types from the profile's
     ``io_precision`` (int8, uint8 for the Edge TPU, or float32 with a
     QUANTIZE/DEQUANTIZE pair at the edges).

Exact GELU (``Erf`` in ONNX, in every ViT and ConvNeXt) has no TFLite kernel:
for fp32/fp16 onnx2tf builds it from builtins (:func:`_pseudo_ops`, error
< 1.5e-7); that form divides by ``|z|`` and fails in int8, so full-INT8
conversion uses GELU's tanh form instead (:func:`_tanh_erf`).

A padded MaxPool (every ResNet-style stem: conv, ReLU, ``MaxPool(3, 2, 1)``)
needs care at the right depth. onnx2tf turns its padding into a ``Pad``
with constant -FLT_MAX; full-INT8 calibration then sees -3.4e38 and gives
the stem tensors an int8 scale near 1e36, and LiteRT's XNNPACK refuses the
model ("Node number 37 failed to prepare"; without XNNPACK LiteRT aborts).
The pad value only has to be no larger than anything the pool's input can
hold: after ReLU that is 0, after ReLU6/Clip its minimum, after sigmoid 0,
after SiLU -0.2785, after hard-swish -0.375 (and a MaxPool keeps its input's
bound). So before onnx2tf runs, :func:`_finite_maxpool_padding` moves such a
pool's padding into an explicit ``Pad`` with that value and clears the
pool's own: the same function exactly (every window holds a real value no
smaller than the pad), and calibration sees only real values. Where no
bound is known, the padding is left, and :func:`_check_int8_scales` turns
the broken file into an error naming the tensor, the absurd scale and the
padded MaxPool behind it, instead of a crash in the runtime.

:func:`run_tflite` feeds NCHW inputs (it transposes and quantizes them) and
returns outputs in the ONNX model's order and layout, so every check can
compare against ONNX and PyTorch directly. :func:`float_tensors` lists the
float tensors of a file: for full INT8 it must be only what the profile
allows at I/O.

Example::

    convert_onnx_to_tflite(Path("m.onnx"), Path("m.int8.tflite"), precision="int8",
                           calib=samples_nchw, io_precision="int8")
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from edgeprune._paths import atomic_write_bytes
from edgeprune.errors import ExportError, require

# Lazy imports: the imports inside functions below load ai_edge_litert, onnx, which importing this module does not;
# they load only when a function that needs them runs.

IO_DTYPES = {"int8": np.int8, "uint8": np.uint8, "float32": np.float32}
_SAVED: dict[str, Path] = {}  # graph digest -> SavedModel folder (this process)


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _offline_calibration(sample_nhwc: np.ndarray):
    """onnx2tf asks the internet for sample images; hand it ours instead."""
    mod = require("onnx2tf.onnx2tf", "tflite", "ONNX -> TFLite conversion")
    original = mod.download_test_image_data
    mod.download_test_image_data = lambda *a, **k: sample_nhwc
    try:
        yield mod
    finally:
        mod.download_test_image_data = original


# lower bounds of activation outputs: a MaxPool after them can be padded with this value, exactly
_LOWER_BOUND = {"Relu": 0.0, "Sigmoid": 0.0, "HardSigmoid": 0.0, "Softmax": 0.0, "HardSwish": -0.375}
SILU_MIN = -0.2785  # min of x * sigmoid(x) is -0.27846 (at x = -1.2785)
ABSURD_SCALE = 1e10  # an int8 scale above this means calibration saw something like -FLT_MAX


def _lower_bound(name: str, producer: dict, consts: dict) -> float | None:
    node = producer.get(name)
    if node is None:
        return None
    if node.op_type in _LOWER_BOUND:
        return _LOWER_BOUND[node.op_type]
    if node.op_type == "Clip":
        low = consts.get(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        if low is None:
            low = next((a.f for a in node.attribute if a.name == "min"), None)
        return None if low is None else float(np.asarray(low).reshape(-1)[0])
    if node.op_type == "Mul" and len(node.input) == 2:  # SiLU as exported: x * Sigmoid(x)
        for a, b in (node.input, node.input[::-1]):
            sig = producer.get(b)
            if sig is not None and sig.op_type == "Sigmoid" and sig.input[0] == a:
                return SILU_MIN
    if node.op_type == "MaxPool":
        return _lower_bound(node.input[0], producer, consts)
    return None


def _finite_maxpool_padding(model) -> tuple[int, list[str]]:
    """Move padded MaxPools' padding into a ``Pad`` with a finite value; returns (rewritten, left as is)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    nodes, done, left = [], 0, []
    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        pads = list(attrs["pads"].ints) if "pads" in attrs else []
        auto = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
        ceil = attrs["ceil_mode"].i if "ceil_mode" in attrs else 0
        if node.op_type != "MaxPool" or not any(pads) or auto != "NOTSET" or len(pads) != 4:
            nodes.append(node)
            continue
        low = _lower_bound(node.input[0], producer, consts)
        if low is None or ceil:
            left.append(node.name or node.output[0])
            nodes.append(node)
            continue
        tag = node.name or node.output[0]
        pad_in = [f"{tag}_edgeprune_pads", f"{tag}_edgeprune_value"]
        graph.initializer.append(numpy_helper.from_array(
            np.array([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]], np.int64), pad_in[0]))
        graph.initializer.append(numpy_helper.from_array(np.array(low, np.float32), pad_in[1]))
        padded = f"{tag}_edgeprune_padded"
        nodes.append(helper.make_node("Pad", [node.input[0], *pad_in], [padded], name=f"{tag}_edgeprune_pad",
                                      mode="constant"))
        node.input[0] = padded
        attrs["pads"].ints[:] = [0, 0, 0, 0]
        nodes.append(node)
        done += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return done, left


def _fold_constants(src: Path, dst: Path, *, key: str = "", tanh_erf: bool = False) -> None:
    """Fold shape arithmetic (torch's ``chunk`` exports Shape/Gather/Div -> Slice) into constants.

    Shapes are static here, so onnx-graphsurgeon can evaluate those chains;
    onnx2tf without onnxsim otherwise mis-converts the computed Slice bounds
    (seen on the C2f blocks of yolo-small: 'Number of groups must not be 0').
    """
    onnx = require("onnx", "tflite", "ONNX -> TFLite conversion")
    gs = require("onnx_graphsurgeon", "tflite", "ONNX -> TFLite conversion")
    try:
        graph = gs.import_onnx(onnx.shape_inference.infer_shapes(onnx.load(str(src))))
        graph.fold_constants()
        graph.cleanup().toposort()
        onnx.save(gs.export_onnx(graph), str(dst))
    except Exception:  # folding is an aid, not a requirement: convert the original then
        shutil.copyfile(src, dst)
    model = onnx.load(str(dst))
    done, left = _finite_maxpool_padding(model)
    _PADDING[key or str(dst)] = {"rewritten": done, "left": left}
    erfs = _tanh_erf(model) if tanh_erf else 0
    if done or erfs:
        onnx.save(model, str(dst))


_PADDING: dict[str, dict] = {}  # graph digest -> what _finite_maxpool_padding did


def _check_int8_scales(path: Path, data: bytes, padding: dict) -> None:
    """Refuse a TFLite file whose int8 scales betray -FLT_MAX in calibration; name the cause."""
    from ai_edge_litert import schema_py_generated as fb

    model = fb.Model.GetRootAs(data, 0)
    worst, where = 0.0, ""
    for g in range(model.SubgraphsLength()):
        sub = model.Subgraphs(g)
        for t in range(sub.TensorsLength()):
            tensor = sub.Tensors(t)
            q = tensor.Quantization()
            if q is None or q.ScaleLength() == 0:
                continue
            scale = float(np.max(q.ScaleAsNumpy()))
            if scale > worst:
                worst, where = scale, tensor.Name().decode(errors="replace")
    if worst <= ABSURD_SCALE:
        return
    pools = padding.get("left") or []
    cause = (f"a padded MaxPool ({', '.join(pools[:3])}) whose input has no known lower bound: onnx2tf pads it "
             "with -FLT_MAX, and calibration saw that value" if pools else
             "calibration saw a value near +-3.4e38 (onnx2tf pads MaxPools with -FLT_MAX)")
    raise ExportError(
        f"{path}: tensor '{where}' got an int8 scale of {worst:.3g}: {cause}. LiteRT's XNNPACK refuses such a model. "
        "Fix: put a ReLU (or another bounded activation) before the pool, or pad explicitly with "
        "F.pad(x, ..., value=<the input's minimum>) and use MaxPool2d(padding=0)"
    )


def _has_erf(path: Path) -> bool:
    onnx = require("onnx", "tflite", "ONNX -> TFLite conversion")
    return any(n.op_type == "Erf" for n in onnx.load(str(path)).graph.node)


def _pseudo_ops(path: Path) -> list[str]:
    """Ops onnx2tf should build from TFLite builtins: ``Erf`` (exact GELU, ViT and ConvNeXt) has no
    TFLite kernel; onnx2tf's replacement is the Abramowitz-Stegun polynomial (error < 1.5e-7)."""
    return ["erf"] if _has_erf(path) else []


def _tanh_erf(model) -> int:
    """Replace every ``Erf`` by ``tanh(1.1283792 z + 0.1009109 z^3)`` (GELU's tanh form); returns how many.

    For full INT8 only: onnx2tf's polynomial Erf divides by ``|z| + 1e-11``,
    which is 0 in int8 (LiteRT: "DIV failed to invoke"). The tanh form uses
    int8 kernels only (MUL, ADD, TANH); it differs from erf by < 4e-4, far
    below INT8 rounding.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    nodes, count = [], 0
    for node in graph.node:
        if node.op_type != "Erf":
            nodes.append(node)
            continue
        z, out, tag = node.input[0], node.output[0], f"{node.name or node.output[0]}_edgeprune"
        for name, value in ((f"{tag}_a", 1.1283792), (f"{tag}_b", 0.1009109)):
            graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
        nodes += [
            helper.make_node("Mul", [z, z], [f"{tag}_z2"], name=f"{tag}_z2"),
            helper.make_node("Mul", [f"{tag}_z2", f"{tag}_b"], [f"{tag}_bz2"], name=f"{tag}_bz2"),
            helper.make_node("Add", [f"{tag}_bz2", f"{tag}_a"], [f"{tag}_poly"], name=f"{tag}_poly"),
            helper.make_node("Mul", [z, f"{tag}_poly"], [f"{tag}_arg"], name=f"{tag}_arg"),
            helper.make_node("Tanh", [f"{tag}_arg"], [out], name=f"{tag}_tanh"),
        ]
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def graph_digest(onnx_path: Path) -> str:
    """sha256 of an ONNX model without its metadata (stamped per export, with a time): same graph, same digest."""
    onnx = require("onnx", "tflite", "ONNX -> TFLite conversion")
    proto = onnx.load(str(onnx_path))
    del proto.metadata_props[:]
    return hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()


_CACHE_DIR: list[Path] = []


def _cache_dir() -> Path:
    """One folder per process for SavedModels: exporting one model for several boards converts it once."""
    if not _CACHE_DIR:
        path = Path(tempfile.mkdtemp(prefix="edgeprune-onnx2tf-"))
        atexit.register(shutil.rmtree, path, True)
        _CACHE_DIR.append(path)
    return _CACHE_DIR[0]


def _key(onnx_path: Path, int8: bool) -> str:
    """The SavedModel cache key: the graph, and whether it was prepared for full INT8 (Erf rewritten)."""
    return graph_digest(onnx_path) + ("-int8" if int8 and _has_erf(onnx_path) else "")


def saved_model(onnx_path: Path, workdir: Path, sample_nchw: np.ndarray | None, *, int8: bool = False) -> Path:
    """onnx2tf: ONNX -> SavedModel (cached per graph for this process); returns the folder.

    ``workdir`` is kept for callers; the SavedModel lives in a per-process
    folder removed at exit, keyed by :func:`graph_digest`. ``int8``: the
    SavedModel is for full-INT8 conversion (``Erf`` becomes :func:`_tanh_erf`).
    """
    _quiet_tf()
    digest = _key(Path(onnx_path), int8)
    cached = _SAVED.get(digest)
    if cached is not None and (cached / "saved_model.pb").is_file():
        return cached
    base = _cache_dir()
    out = base / f"saved_model-{digest[:12]}"
    copy = base / f"{digest[:12]}.onnx"
    _fold_constants(Path(onnx_path), copy, key=digest, tanh_erf=int8)  # onnx2tf rewrites its input: a copy
    if sample_nchw is None or sample_nchw.ndim != 4:
        sample_nhwc = np.zeros((1, 8, 8, 3), np.float32)
    else:
        sample_nhwc = np.ascontiguousarray(sample_nchw[:20].transpose(0, 2, 3, 1), dtype=np.float32)
    log = io.StringIO()
    with _offline_calibration(sample_nhwc) as o2t:
        try:
            with contextlib.redirect_stdout(log):
                o2t.convert(
                    input_onnx_file_path=str(copy),
                    output_folder_path=str(out),
                    output_signaturedefs=True,
                    non_verbose=True,
                    verbosity="error",
                    replace_to_pseudo_operators=_pseudo_ops(copy),
                )
        except SystemExit as exc:
            tail = " ".join(log.getvalue().split())[-400:]
            raise ExportError(f"onnx2tf could not convert {onnx_path} (exit {exc.code}): {tail}") from None
        except Exception as exc:
            raise ExportError(f"onnx2tf could not convert {onnx_path}: {type(exc).__name__}: {exc}") from exc
    if not (out / "saved_model.pb").is_file():
        raise ExportError(f"onnx2tf wrote no SavedModel for {onnx_path}: {' '.join(log.getvalue().split())[-400:]}")
    _SAVED[digest] = out
    return out


def configure_converter(tf, conv, precision: str, representative, io_precision: str) -> None:
    """Set a ``TFLiteConverter`` for ``precision``: fp32 as is, fp16 weights, or full INT8 (every op an
    int8 kernel, inputs/outputs ``io_precision``) calibrated on ``representative`` (a generator of
    ``[NHWC sample]``)."""
    if precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io_precision]
        conv.inference_input_type = dtype
        conv.inference_output_type = dtype
    elif precision != "fp32":
        raise ExportError(f"TFLite precision '{precision}' is not one of fp32, fp16, int8")


def tflite_bytes(tf, conv, precision: str, samples: Callable[[], Iterable[np.ndarray]] | None,
                 io_precision: str) -> bytes:
    """Convert with ``conv`` (a ``TFLiteConverter``) to ``precision``, calibrated on ``samples()`` (NHWC
    arrays, one per calibration step) for INT8: the one set-up and conversion of every TFLite file
    edgeprune makes (exports and the latency table's micro-models alike, so that they cost what the
    exported layers cost). The converter's chatter is kept off the terminal; a failure is one ExportError."""
    representative = None if samples is None else (lambda: ([s] for s in samples()))
    configure_converter(tf, conv, precision, representative, io_precision)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            return conv.convert()
    except Exception as exc:
        msg = " ".join(str(exc).split())[:600]
        hint = " (an op without an int8 kernel blocks full-INT8; see the op named above)" if precision == "int8" else ""
        raise ExportError(f"TFLite {precision} conversion failed{hint}: {msg}") from exc


def _saved_model_bytes(sm: Path, precision: str, calib: np.ndarray | None, io_precision: str) -> bytes:
    tf = require("tensorflow", "tflite", "TFLite conversion")
    conv = tf.lite.TFLiteConverter.from_saved_model(str(sm))
    samples = None
    if precision == "int8":
        if calib is None or len(calib) == 0:
            raise ExportError("full-INT8 TFLite needs calibration samples (--calib)")
        nhwc = np.ascontiguousarray(calib.transpose(0, 2, 3, 1), dtype=np.float32)

        def samples():
            return (nhwc[i : i + 1] for i in range(len(nhwc)))

    return tflite_bytes(tf, conv, precision, samples, io_precision)


def convert_onnx_to_tflite(onnx_path: Path, dest: Path, *, precision: str, calib: np.ndarray | None = None,
                           io_precision: str = "int8", workdir: Path | None = None) -> dict:
    """ONNX fp32 -> TFLite ``precision`` at ``dest`` (atomic); returns what was done."""
    if io_precision not in IO_DTYPES:
        raise ExportError(f"io_precision '{io_precision}': use one of {', '.join(IO_DTYPES)}")
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeprune-tfl-")))
        sm = saved_model(Path(onnx_path), Path(workdir), calib, int8=precision == "int8")
        data = _saved_model_bytes(sm, precision, calib, io_precision if precision == "int8" else "float32")
        padding = _PADDING.get(_key(Path(onnx_path), precision == "int8"), {})
        if precision == "int8":
            _check_int8_scales(Path(dest), data, padding)
    dest = Path(dest)
    atomic_write_bytes(dest, data)
    info = {"converter": "onnx2tf -> SavedModel -> TFLiteConverter", "layout": "NHWC"}
    if padding.get("rewritten"):
        info["maxpool_padding"] = f"{padding['rewritten']} padded MaxPool(s): padding made explicit with a finite value"
    if precision == "int8":
        info["io_precision"] = io_precision
        info["calibration_samples"] = int(len(calib))
    return info


def convert(req) -> dict:
    """Format-table converter for the three TFLite rows (options: io_precision, workdir)."""
    return convert_onnx_to_tflite(
        Path(req.source), req.dest, precision=req.spec.precision, calib=req.calib,
        io_precision=req.options.get("io_precision") or "int8", workdir=req.options.get("workdir"),
    )


# -- running and inspecting ----------------------------------------------------

def interpreter(path: Path, *, threads: int = 1, delegates: bool = True):
    """A LiteRT interpreter for ``path`` (XNNPACK on unless ``delegates=False``)."""
    lit = require("ai_edge_litert.interpreter", "tflite", "running TFLite models")
    kwargs = {"num_threads": threads}
    if not delegates:
        kwargs["experimental_op_resolver_type"] = lit.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        it = lit.Interpreter(model_path=str(path), **kwargs)
        it.allocate_tensors()
    except Exception as exc:
        raise ExportError(f"{path}: LiteRT cannot load it: {exc}") from None
    return it


def _to_layout(y: np.ndarray, like: tuple[int, ...] | None) -> np.ndarray:
    if like is None or tuple(y.shape) == tuple(like):
        return y
    if y.ndim >= 3:
        moved = np.moveaxis(y, -1, 1)  # NHWC -> NCHW (any rank)
        if tuple(moved.shape) == tuple(like):
            return moved
    raise ExportError(f"TFLite output of shape {y.shape} cannot be matched to the ONNX output {like}")


def quantize_input(x: np.ndarray, det: dict) -> np.ndarray:
    """Float values as an input tensor with LiteRT details ``det`` takes them (its dtype and quantization)."""
    dtype = det["dtype"]
    if dtype in (np.float32, np.float16):
        return x.astype(dtype)
    scale, zp = det["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zp), info.min, info.max).astype(dtype)


class TFLiteRunner:
    """Runs a TFLite file on NCHW float inputs; outputs come back float, in ONNX order and layout."""

    def __init__(self, path: Path, *, threads: int = 1, like: list[tuple[int, ...]] | None = None) -> None:
        self.path = Path(path)
        self.it = interpreter(self.path, threads=threads)
        self.like = like
        sigs = self.it.get_signature_list()
        self.runner = self.it.get_signature_runner() if len(sigs) == 1 else None
        if self.runner is not None:
            self.in_details = self.runner.get_input_details()
            self.in_name = next(iter(self.in_details))
            self.in_det = self.in_details[self.in_name]
            outs = self.runner.get_output_details()
            self.out_names = sorted(outs, key=lambda n: (len(n), n))  # output_0, output_1, ..., output_10
            self.out_dets = [outs[n] for n in self.out_names]
        else:
            self.in_det = self.it.get_input_details()[0]
            self.out_dets = self.it.get_output_details()

    @staticmethod
    def _dequant(y: np.ndarray, det: dict) -> np.ndarray:
        if y.dtype in (np.float32, np.float16):
            return y.astype(np.float32)
        scale, zp = det["quantization"]
        return (y.astype(np.float32) - zp) * scale

    def run_one(self, x_nchw: np.ndarray) -> list[np.ndarray]:
        x = x_nchw.transpose(0, 2, 3, 1) if x_nchw.ndim == 4 else x_nchw
        xq = quantize_input(np.ascontiguousarray(x), self.in_det)
        if self.runner is not None:
            res = self.runner(**{self.in_name: xq})
            outs = [self._dequant(res[n], d) for n, d in zip(self.out_names, self.out_dets, strict=True)]
        else:
            self.it.set_tensor(self.in_det["index"], xq)
            self.it.invoke()
            outs = [self._dequant(self.it.get_tensor(d["index"]), d) for d in self.out_dets]
        if self.like is not None:
            if len(outs) != len(self.like):
                raise ExportError(f"{self.path}: {len(outs)} outputs, the ONNX model has {len(self.like)}")
            outs = [_to_layout(o, s) for o, s in zip(outs, self.like, strict=True)]
        return outs

    def __call__(self, x_nchw: np.ndarray) -> list[np.ndarray]:
        parts = [self.run_one(x_nchw[i : i + 1]) for i in range(x_nchw.shape[0])]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def run_tflite(path: Path, x_nchw: np.ndarray, *, like: list[tuple[int, ...]] | None = None) -> list[np.ndarray]:
    """Run ``path`` on NCHW ``x`` (any batch, one sample at a time); float outputs in ONNX layout."""
    return TFLiteRunner(path, like=like)(x_nchw)


def tensor_report(path: Path) -> dict:
    """dtypes of every tensor, the op list, and which float tensors sit at the model's I/O."""
    it = interpreter(path, delegates=False)
    io_idx = {d["index"] for d in it.get_input_details()} | {d["index"] for d in it.get_output_details()}
    floats = [
        {"name": d["name"], "dtype": np.dtype(d["dtype"]).name, "io": d["index"] in io_idx}
        for d in it.get_tensor_details()
        if np.dtype(d["dtype"]).kind == "f"
    ]
    ops = sorted({o["op_name"] for o in it._get_ops_details()})
    return {
        "dtypes": sorted({np.dtype(d["dtype"]).name for d in it.get_tensor_details()}),
        "float_tensors": floats,
        "ops": ops,
        "input_dtypes": [np.dtype(d["dtype"]).name for d in it.get_input_details()],
        "output_dtypes": [np.dtype(d["dtype"]).name for d in it.get_output_details()],
    }


def float_tensors(path: Path, *, allow_io: bool) -> list[str]:
    """Float tensors of ``path`` that a full-INT8 model must not have (I/O ones allowed when ``allow_io``)."""
    return [t["name"] for t in tensor_report(path)["float_tensors"] if not (allow_io and t["io"])]
