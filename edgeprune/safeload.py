"""No code from any file: every pickle inside a file is checked before a library loader sees it.

``torch.load``, ``torch.export.load``, ``torch.jit.load`` and ``np.load``
are only ever called on a file that :func:`check_file` passed. It reads the
file's bytes, never loads them: every pickle in it (a plain pickle, a legacy
torch file's pickles, every pickle member of a zip archive and of the
archives nested in it: ``data.pkl``, ``constants.pkl``, a ``.pt2``'s pickled
weights, constants and ``sample_inputs``, ``.npy`` object arrays in an
``.npz``) is run through an unpickler whose every global is looked up in
:data:`allowed` (what tensors and plain values need: torch storages, dtypes,
``torch._utils._rebuild_*``, ``collections.OrderedDict``) and replaced by an
inert stand-in, so nothing real is called. The first other global refuses the
file, in one line naming the file and the global::

    check_file(Path("evil.pt2"))
    # ModelError: evil.pt2: refused: its pickle data/sample_inputs/model.pt/data.pkl asks for the
    #   global os.system, which could run code (only tensors and plain values are loaded)

An ``.pt2``'s graph (``models/*.json``) names the functions its nodes call and
holds shape expressions that torch hands to ``sympy.sympify`` (an ``eval``);
both are checked too: operators under ``torch.ops``, ``_operator``, ``math``
and torch's ``sym_*`` functions, expressions of symbols, numbers and sympy's
arithmetic only.

:func:`quiet` wraps a library load: its warnings and log records (torch's,
Pillow's, numpy's) do not reach the terminal, so an error stays one line.
Names a file gives are printed through :func:`edgeprune.progress.printable`.
"""

from __future__ import annotations

import _compat_pickle
import io
import json
import logging
import pickle
import posixpath
import re
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeprune.errors import EdgePruneError, ModelError
from edgeprune.progress import printable

# Lazy imports: the imports inside functions below load numpy, torch, which importing this module does not;
# they load only when a function that needs them runs.

ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER (pre-1.6 files)
_MAX_DEPTH = 4  # archives inside archives inside ...

_TORCH_UTILS = {
    "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
    "_rebuild_parameter_with_state", "_rebuild_qtensor", "_rebuild_sparse_tensor",
    "_rebuild_meta_tensor_no_storage", "_rebuild_nested_tensor", "_rebuild_device_tensor_from_cpu_tensor",
}
_PLAIN = {
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
    ("builtins", "bytearray"), ("builtins", "complex"), ("_codecs", "encode"),
    ("torch._tensor", "_rebuild_from_type_v2"), ("torch.serialization", "_get_layout"),
    ("torch.storage", "UntypedStorage"), ("torch.storage", "TypedStorage"),
    ("torch.nn.parameter", "Parameter"), ("torch", "Size"), ("torch", "device"), ("torch", "Tensor"),
}
# TorchScript's own pickles (read by torch's C++ unpickler, which runs no Python)
_JIT_PICKLE = {"build_intlist", "build_tensorlist", "build_doublelist", "build_boollist",
               "build_tensor_from_id", "restore_type_tag"}

# A .pt2 graph's node targets, and the names its shape expressions may use.
_TARGET = re.compile(r"^(torch\.ops(\.[A-Za-z][\w]*){2,3}|_operator\.[a-z]\w*|math\.[a-z]\w*|"
                     r"torch\._?sym_[a-z]\w*)$")
_UNSAFE_OPERATOR = {"attrgetter", "itemgetter", "methodcaller", "call"}
_EXPR = re.compile(r"^[\w\s+\-*/%().,<>=!&|~^]*$")
_SYMPY_NAMES = {
    "Max", "Min", "Mod", "FloorDiv", "CeilDiv", "CleanDiv", "ModularIndexing", "PythonMod", "IntTrueDiv",
    "FloatTrueDiv", "ToFloat", "TruncToInt", "TruncToFloat", "RoundToInt", "RoundDecimal", "PowByNatural",
    "FloatPow", "floor", "ceiling", "sqrt", "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not",
    "True", "False", "oo", "zoo", "nan", "Integer", "Rational", "Float", "Piecewise", "Identity",
    "IsNonOverlappingAndDenseIndicator", "FloorToInt", "CeilToInt", "LShift", "RShift", "BitwiseFn_bitwise_and",
    "BitwiseFn_bitwise_or", "BitwiseFn_bitwise_xor", "Where", "log2", "exp", "log",
    "Symbol", "Add", "Mul", "Pow", "Dummy", "positive", "negative", "integer", "real", "nonnegative", "nonpositive",
    "finite", "infinite", "zero", "nonzero", "Boolean", "BooleanTrue", "BooleanFalse",
}
_QUOTED_SYMBOL = re.compile(r"'[a-z]+\d*'|\"[a-z]+\d*\"")
# an object array's own pickle (numpy rebuilding the array): allowed while looking for what is inside it
_NUMPY = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")} | {
    ("numpy", "ndarray"), ("numpy", "dtype")}
_SYMBOL = re.compile(r"^[a-z]+\d+$|^\d")


def allowed(module: str, name: str, *, torchscript: bool = False) -> bool:
    """Whether a pickle may name the global ``module.name``: only what tensors and plain values need."""
    if (module, name) in _PLAIN:
        return True
    if module == "torch._utils":
        return name in _TORCH_UTILS
    if module == "torch.jit._pickle":
        return name in _JIT_PICKLE
    if torchscript and (module == "__torch__" or module.startswith("__torch__.")):
        return True  # a TorchScript class: built by torch's C++ unpickler from the archive's TorchScript
    if module == "torch" and not name.startswith("_"):
        import torch  # heavy: only for torch files

        value = getattr(torch, name, None)
        kinds = (torch.dtype, torch.layout, torch.memory_format, torch.qscheme)
        return isinstance(value, kinds) or (
            isinstance(value, type) and name.endswith("Storage") and name != "Storage"
        )
    return False


class _Stub:
    """What every allowed global (and persistent id) becomes while scanning: it takes anything, runs nothing."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(_Stub)

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs):
        return _Stub()

    def __setstate__(self, state) -> None:
        pass

    def __setitem__(self, key, value) -> None:
        pass

    def append(self, value) -> None:
        pass

    def extend(self, values) -> None:
        pass


class _Scanner(pickle.Unpickler):
    def __init__(self, fh, *, torchscript: bool, numpy: bool = False) -> None:
        super().__init__(fh, encoding="latin1")
        self._torchscript = torchscript
        self._numpy = numpy
        self.refused: str | None = None

    def find_class(self, module: str, name: str):
        # protocol 0-2 pickles name Python 2's modules (__builtin__.eval): the unpickler maps them, so do we
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if self._numpy and (module, name) in _NUMPY:
            return _Stub
        if not allowed(module, name, torchscript=self._torchscript):
            self.refused = f"{module}.{name}"
            raise pickle.UnpicklingError(f"refused global {self.refused}")
        return _Stub

    def persistent_load(self, pid):
        return _Stub()


def scan_pickle(fh, *, torchscript: bool = False, numpy: bool = False) -> tuple[object, str | None]:
    """Unpickle one pickle from ``fh`` with inert globals: ``(its value, None)`` or ``(None, refused global)``.

    Stops at the first global outside :func:`allowed` (before anything after
    it is read); raises ``pickle.UnpicklingError`` (or another exception) when
    the bytes are no pickle.
    """
    scanner = _Scanner(fh, torchscript=torchscript, numpy=numpy)
    try:
        return scanner.load(), None
    except pickle.UnpicklingError:
        if scanner.refused is None:
            raise
        return None, scanner.refused


# -- archives -----------------------------------------------------------------------------------------------

_TEXT_NAMES = {"version", ".format_version", "byteorder", "archive_format", "archive_version",
               "serialization_id", ".storage_alignment", "model_weights_config.json"}


def _raw_members(zf: zipfile.ZipFile, names: list[str]) -> set[str]:
    """Members torch reads as raw bytes, never unpickles: storages of torch.save/TorchScript, a .pt2's payloads."""
    # torch.save/TorchScript: the storages of ROOT/X.pkl are ROOT/X/KEY (data, constants, traced_inputs);
    # a .pt2 unpickles nothing at that depth (its payloads are ROOT/data/weights/..., ROOT/data/constants/...)
    present = set(names)
    raw = {n for n in names if re.match(r"^[^/]+/[^/]+/[^/]+$", n) and posixpath.dirname(n) + ".pkl" in present}
    pickled: set[str] = set()
    declared: set[str] = set()
    for cfg in [n for n in names if re.match(r"^[^/]+/data/(weights|constants)/[^/]+_config\.json$", n)]:
        folder = posixpath.dirname(cfg)
        try:
            entries = json.loads(zf.read(cfg)).get("config", {})
            items = list(entries.values())
        except (ValueError, AttributeError, TypeError):
            continue  # torch refuses it too; its members are scanned as pickles below
        for meta in items:
            if not isinstance(meta, dict) or not isinstance(meta.get("path_name"), str):
                continue
            member = posixpath.join(folder, meta["path_name"])
            if meta.get("use_pickle") is False and re.match(r"^(weight|tensor)_\d+$", meta["path_name"]):
                declared.add(member)
            else:
                pickled.add(member)
    return (raw | declared) - pickled


def _is_text(name: str) -> bool:
    base = posixpath.basename(name)
    return (base in _TEXT_NAMES or base.endswith(".json") or (name.endswith(".py") and "/code/" in name)
            or "/extra/" in name or base == "")


def _check_zip(data: io.BufferedIOBase | io.BytesIO, where: str, depth: int, error) -> None:
    try:
        zf = zipfile.ZipFile(data)
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise error(f"{where}: a damaged archive (not a readable zip)") from None
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise error(f"{where}: refused: the archive holds '{dup}' twice (which copy a loader reads is not certain)")
    torchscript = any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)
    raw = _raw_members(zf, names)
    for info in infos:
        name = info.filename
        if name in raw or _is_text(name) or info.is_dir() or info.file_size == 0:
            continue
        label = f"{where}:{name}"
        with zf.open(info) as fh:
            head = fh.read(len(NPY_MAGIC))
        if head.startswith(ZIP_MAGIC):
            if depth + 1 >= _MAX_DEPTH:
                raise error(f"{where}: refused: archives nested more than {_MAX_DEPTH} deep ({name})")
            _check_zip(io.BytesIO(zf.read(info)), f"{where}:{name}", depth + 1, error)
        elif name.endswith(".npy"):  # an .npz's array (torch never reads it: anything else is scanned as a pickle)
            with zf.open(info) as fh:
                _check_npy(fh, label, error)
        else:
            with zf.open(info) as fh:
                _scan_all(fh, label, error, torchscript=torchscript)


def _scan_all(fh, label: str, error, *, torchscript: bool = False) -> None:
    """Every pickle in ``fh`` one after another (a member holds one; a legacy torch file several)."""
    try:
        first, refused = scan_pickle(fh, torchscript=torchscript)
        if isinstance(first, int) and first == _LEGACY_TORCH_MAGIC:  # version, sys_info, the object, storage keys
            for _ in range(4):
                if refused is None:
                    _, refused = scan_pickle(fh)
    except RecursionError:
        raise error(f"{label}: refused: a pickle nested too deep to check") from None
    except Exception:
        raise error(f"{label}: damaged: a part of it is neither data edgeprune knows nor a pickle") from None
    if refused is not None:
        raise _refusal(label, refused, error)


def _refusal(label: str, name: str, error, *, fix: str = "save a state_dict, or torch.export.save a model"
             ) -> EdgePruneError:
    return error(f"{label}: refused: its pickle asks for the global {printable(name)}, which could run code; "
                 f"only tensors and plain values are loaded ({fix})")


def _check_npy(fh, label: str, error) -> None:
    import numpy as np  # only for .npy/.npz

    try:
        version = np.lib.format.read_magic(fh)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(version, np.lib.format.read_array_header_2_0)
        _shape, _fortran, dtype = read_header(fh)
    except Exception:
        raise error(f"{label}: not a readable numpy array") from None
    if dtype.hasobject:
        try:
            _, refused = scan_pickle(fh, numpy=True)
        except Exception:
            refused = None
        if refused is not None:
            raise _refusal(label, refused, error, fix="save numeric arrays (no objects)")
        raise error(f"{label}: an object array (a pickle, not numbers); save numbers (np.savez with numeric arrays)")


def check_file(path: str | Path, *, error: type[EdgePruneError] = ModelError) -> str:
    """Check every pickle in ``path`` (see the module docstring); its kind: 'zip', 'npy', 'pickle'.

    Raises ``error`` (one line naming the file and the global) when a pickle
    asks for a global outside :func:`allowed`, or the file is damaged.
    Missing and unreadable files are left to the caller's loader.

    Example::

        check_file("weights.pt")                  # 'zip': torch.save's format
        check_file("data.npz", error=DataError)   # 'zip'
    """
    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError:
        return "missing"
    with fh:
        head = fh.read(len(NPY_MAGIC))
        fh.seek(0)
        if head.startswith(ZIP_MAGIC):
            _check_zip(fh, str(path), 0, error)
            return "zip"
        if head.startswith(NPY_MAGIC):
            _check_npy(fh, str(path), error)
            return "npy"
        try:
            _scan_all(fh, str(path), error)
        except EdgePruneError as exc:
            if "damaged" in str(exc) and not head.startswith(b"\x80"):  # no pickle starts this way either
                what = "a PyTorch model" if issubclass(error, ModelError) else "a numpy or PyTorch data file"
                raise error(f"{path}: not {what} (neither torch.save's zip archive, a .npy nor a pickle)") from None
            raise
        if zipfile.is_zipfile(fh):  # torch.load reads the front as a pickle, torch.export.load the zip behind it
            raise error(f"{path}: refused: a zip archive with other data in front of it (a pickle and an "
                        "archive in one file); save the model again")
        return "pickle"


def check_graph(path: str | Path, *, error: type[EdgePruneError] = ModelError) -> None:
    """Refuse an ``.pt2`` whose graph calls anything but operators, or whose shape expressions are not arithmetic."""
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if not re.match(r"^[^/]+/models/[^/]+\.json$", name):
                continue
            try:
                doc = json.loads(zf.read(name))
            except ValueError:
                raise error(f"{path}: damaged ExportedProgram ({name} is not JSON)") from None
            for key, value in _walk(doc):
                if key == "target" and isinstance(value, str) and not _safe_target(value):
                    raise error(f"{path}: refused: its graph calls '{printable(value[:80])}', which is no "
                                "operator (only torch.ops, _operator and math functions are loaded)")
                if key == "expr_str" and isinstance(value, str) and not _safe_expr(value):
                    raise error(f"{path}: refused: its graph holds the expression '{printable(value[:80])}', "
                                "which is not arithmetic on shapes")


def _walk(doc) -> Iterator[tuple[str, object]]:
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                yield k, v
                stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)


def _safe_target(target: str) -> bool:
    if not _TARGET.match(target) or "__" in target:
        return False
    return not (target.startswith("_operator.") and target.split(".")[1] in _UNSAFE_OPERATOR)


def _safe_expr(expr: str) -> bool:
    expr = _QUOTED_SYMBOL.sub("s0", expr)  # srepr's Symbol('s53', ...): a name, no string to evaluate
    if not _EXPR.match(expr) or "__" in expr or "lambda" in expr:
        return False
    return all(_SYMBOL.match(w) or w in _SYMPY_NAMES for w in re.findall(r"[A-Za-z_]\w*|\d\w*", expr))


def torch_load(path: str | Path, *, error: type[EdgePruneError] = ModelError):
    """``torch.load(path, weights_only=True)`` of a file :func:`check_file` passed, quietly.

    Library exceptions (a damaged file) are the caller's to word.

    Example::

        state = torch_load("weights.pt")
    """
    check_file(path, error=error)
    import torch  # heavy: only for torch files

    with quiet():
        return torch.load(path, map_location="cpu", weights_only=True)


def np_load(path: str | Path, *, error: type[EdgePruneError] = ModelError, mmap_mode: str | None = None):
    """``np.load(path, allow_pickle=False)`` of a file :func:`check_file` passed, quietly.

    Example::

        with np_load("data.npz", error=DataError) as z:
            x = z["x"]
    """
    check_file(path, error=error)
    import numpy as np  # only for numpy files

    with quiet():
        return np.load(path, allow_pickle=False, mmap_mode=mmap_mode)


# -- around a library's load ----------------------------------------------------------------------------------

@contextmanager
def quiet() -> Iterator[None]:
    """No warnings and no log records while a library loads a file: an error stays one line.

    torch logs (and mis-formats) its ``weights_only`` fallback, Pillow warns of
    large images, numpy of complex casts; none of it is the user's to read.
    """
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


# what libraries warn of on their own, by message (no import needed to name them): never the user's line
_LIBRARY_WARNINGS = (
    r"Image size \(\d+ pixels\) exceeds limit",   # Pillow's DecompressionBombWarning
    r"Casting complex values to real",              # numpy's ComplexWarning
)


def quiet_libraries() -> None:
    """For the CLI's whole run: libraries' warnings and log records stay off the terminal.

    A record that logging cannot format ("--- Logging error ---" and its
    traceback) is dropped; records of loggers nobody configured go nowhere
    (not to logging's last-resort stderr handler); torch's and Pillow's and
    numpy's own warnings are ignored. edgeprune's errors are one line; its own
    warnings are notes (:mod:`edgeprune.progress`). ``--debug`` leaves all of it on.
    """
    logging.raiseExceptions = False
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    for message in _LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for module in (r"torch(\..*)?$", r"PIL(\..*)?$", r"numpy(\..*)?$", r"onnx.*", r"torchvision(\..*)?$"):
        warnings.filterwarnings("ignore", module=module)
