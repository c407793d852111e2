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

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgeprune._paths import atomic_write_bytes
from edgeprune.errors import ExportError, require

IO_DTYPES = {"int8": np.int8, "uint8": np.uint8, "float32": np.float32}
_SAVED: dict[str, Path] = {}  # onnx sha256 -> SavedModel folder, within one workdir


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


def _fold_constants(src: Path, dst: Path) -> None:
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


def saved_model(onnx_path: Path, workdir: Path, sample_nchw: np.ndarray | None) -> Path:
    """onnx2tf: ONNX -> SavedModel in ``workdir`` (cached per ONNX content); returns the folder."""
    _quiet_tf()
    digest = hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest()
    cached = _SAVED.get(digest)
    if cached is not None and (cached / "saved_model.pb").is_file():
        return cached
    out = Path(workdir) / f"saved_model-{digest[:12]}"
    copy = Path(workdir) / f"{digest[:12]}.onnx"
    _fold_constants(Path(onnx_path), copy)  # a folded copy: onnx2tf rewrites its input in place
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


def _tflite_bytes(sm: Path, precision: str, calib: np.ndarray | None, io_precision: str) -> bytes:
    tf = require("tensorflow", "tflite", "TFLite conversion")
    conv = tf.lite.TFLiteConverter.from_saved_model(str(sm))
    if precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        if calib is None or len(calib) == 0:
            raise ExportError("full-INT8 TFLite needs calibration samples (--calib)")
        nhwc = np.ascontiguousarray(calib.transpose(0, 2, 3, 1), dtype=np.float32)

        def representative():
            for i in range(len(nhwc)):
                yield [nhwc[i : i + 1]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io_precision]
        conv.inference_input_type = dtype
        conv.inference_output_type = dtype
    elif precision != "fp32":
        raise ExportError(f"TFLite precision '{precision}' is not one of fp32, fp16, int8")
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            return conv.convert()
    except Exception as exc:
        msg = " ".join(str(exc).split())[:600]
        hint = " (an op without an int8 kernel blocks full-INT8; see the op named above)" if precision == "int8" else ""
        raise ExportError(f"TFLite {precision} conversion failed{hint}: {msg}") from exc


def convert_onnx_to_tflite(onnx_path: Path, dest: Path, *, precision: str, calib: np.ndarray | None = None,
                           io_precision: str = "int8", workdir: Path | None = None) -> dict:
    """ONNX fp32 -> TFLite ``precision`` at ``dest`` (atomic); returns what was done."""
    if io_precision not in IO_DTYPES:
        raise ExportError(f"io_precision '{io_precision}': use one of {', '.join(IO_DTYPES)}")
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeprune-tfl-")))
        sm = saved_model(Path(onnx_path), Path(workdir), calib)
        data = _tflite_bytes(sm, precision, calib, io_precision if precision == "int8" else "float32")
    dest = Path(dest)
    atomic_write_bytes(dest, data)
    info = {"converter": "onnx2tf -> SavedModel -> TFLiteConverter", "layout": "NHWC"}
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
    def _quant(x: np.ndarray, det: dict) -> np.ndarray:
        dtype = det["dtype"]
        if dtype in (np.float32, np.float16):
            return x.astype(dtype)
        scale, zp = det["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zp), info.min, info.max).astype(dtype)

    @staticmethod
    def _dequant(y: np.ndarray, det: dict) -> np.ndarray:
        if y.dtype in (np.float32, np.float16):
            return y.astype(np.float32)
        scale, zp = det["quantization"]
        return (y.astype(np.float32) - zp) * scale

    def run_one(self, x_nchw: np.ndarray) -> list[np.ndarray]:
        x = x_nchw.transpose(0, 2, 3, 1) if x_nchw.ndim == 4 else x_nchw
        xq = self._quant(np.ascontiguousarray(x), self.in_det)
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
