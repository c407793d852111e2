"""Where edgeprune finds its shipped data and keeps its cache, and how it writes results.

In a wheel, ``targets/`` and ``device_profiles/`` live under
``edgeprune/_data/``; in a source checkout (editable install) they are the
repository's top-level folders. Everything else is user state:

- config: ``$EDGEPRUNE_CONFIG`` or ``~/.config/edgeprune/config.toml``
- cache:  ``$EDGEPRUNE_CACHE_DIR`` or ``$XDG_CACHE_HOME/edgeprune`` (``~/.cache/edgeprune``)

Writing, so that no reader ever sees half a result:

- one file: :func:`atomic_file` (a temporary name beside it, renamed over it
  when complete), :func:`atomic_write_bytes`, :func:`atomic_write_text`;
- a whole result folder: :func:`staged_output` (built in a staging folder
  beside it, swapped into place when complete).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from edgeprune.errors import OutputError

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The shipped folder ``name`` ('targets' or 'device_profiles')."""
    packaged = _PKG / "_data" / name
    if packaged.is_dir():
        return packaged
    return _PKG.parent / name


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgeprune"


def config_file() -> Path:
    env = os.environ.get("EDGEPRUNE_CONFIG")
    return Path(env).expanduser() if env else config_dir() / "config.toml"


def cache_dir() -> Path:
    env = os.environ.get("EDGEPRUNE_CACHE_DIR")
    if env:
        path = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "edgeprune"
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_home() -> Path:
    """Where fetched data sets live: ``$EDGEPRUNE_DATA_DIR`` or ``<cache>/data``; created on demand."""
    env = os.environ.get("EDGEPRUNE_DATA_DIR")
    path = Path(env).expanduser() if env else cache_dir() / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    For writers that take a file name (``onnx.save``, ``fig.savefig``,
    converters): readers see the old file or the complete new one, never a
    half-written one, and a failure leaves no temporary file behind.
    ``suffix`` keeps an extension some writers need (``.png``).

    Example::

        with atomic_file(out / "model.onnx") as tmp:
            onnx.save(proto, str(tmp))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers never see a half-written file."""
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def output_dir(path: str | os.PathLike[str], *, option: str = "--output", create: bool = True) -> Path:
    """Create the output folder ``path`` (and parents), or raise a one-line error saying why not.

    ``create=False`` only checks, so that a command can refuse a bad folder
    before doing any work, and create it only when it has something to write.
    An empty path, the current folder (or one holding it) and the home folder
    are refused: a result replaces its folder as a whole (:func:`staged_output`).
    """
    if not str(path).strip():
        raise OutputError(f"{option} is empty; give a folder for the results, e.g. {option} out/")
    path = Path(path).expanduser()
    real = Path(os.path.realpath(path))
    cwd = Path(os.path.realpath(os.getcwd()))
    if real == cwd or real in cwd.parents or real == Path(os.path.realpath(Path.home())):
        what = "the current folder" if real == cwd else "a folder holding the current one" \
            if real in cwd.parents else "your home folder"
        raise OutputError(
            f"{option} {path}: is {what}, and a result replaces its folder as a whole; "
            f"give a folder of its own, e.g. {option} {path / 'out'}"
        )
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise OutputError(f"{part}: exists and is not a folder; choose another {option}")
    if path.is_dir() and os.path.ismount(real):
        raise OutputError(
            f"{option} {path}: is a mount point, and a result replaces its folder as a whole; "
            f"give a folder inside it, e.g. {option} {path / 'out'}"
        )
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        why = "is on a read-only file system" if os.statvfs(path).f_flag & os.ST_RDONLY else \
            "is not writable (permission denied)"
        raise OutputError(f"{option} {path}: the folder {why}; choose another {option}")
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{path}: cannot create the output folder: {exc.strerror}; choose another {option}"
        ) from None
    return path


# -- a whole result folder, swapped into place --------------------------------------

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Failures of writing the result (a full disk, a read-only or forbidden folder), found in an
# exception's chain by staged_output, which names the output folder and the fix.
_WRITE_ERRNOS = _FULL_ERRNOS | {errno.EROFS, errno.EACCES, errno.EPERM}
RENAME_EXCHANGE = 2  # linux/fs.h


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically exchange the folders ``a`` and ``b`` (Linux renameat2); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):  # no libc symbol (glibc < 2.28, musl)
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # kernel or file system without RENAME_EXCHANGE: the fallback does it
    raise OSError(err, os.strerror(err), str(b))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _carry_over(old: Path, new: Path) -> None:
    """Put into ``new`` every entry of ``old`` it lacks (hard links: no data is copied)."""
    for entry in os.scandir(old):
        dst = new / entry.name
        if dst.exists() or dst.is_symlink():
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), dst)
        elif entry.is_dir():
            shutil.copytree(entry.path, dst, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry.path, str(dst))


def _swap_in(stage: Path, final: Path) -> None:
    """Make ``stage`` the folder ``final``; the old ``final`` is removed afterwards."""
    if not final.exists():
        os.rename(stage, final)
        return
    _carry_over(final, stage)
    if _renameat2_exchange(stage, final):
        shutil.rmtree(stage, ignore_errors=True)  # ``stage`` now names the old folder
        return
    old = final.with_name(f".{final.name}.old-{os.getpid()}-{secrets.token_hex(3)}")
    os.rename(final, old)
    try:
        os.rename(stage, final)
    except BaseException:
        os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale(parent: Path, name: str) -> None:
    """Remove staging (and swapped-out) folders of ``name`` left by runs that are gone (killed)."""
    for p in [*parent.glob(f".{name}.staging-*"), *parent.glob(f".{name}.old-*")]:
        try:
            pid = int(p.name[len(name) + 2 :].split("-")[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


def _write_error(exc: BaseException, stage: Path) -> OSError | None:
    """The OSError about writing the result (full disk; read-only or forbidden in ``stage``), if any."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            if exc.errno in _FULL_ERRNOS or str(exc.filename or "").startswith(str(stage)):
                return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


@contextlib.contextmanager
def staged_output(path: str | os.PathLike[str], *, option: str = "--output") -> Iterator[Path]:
    """Build a result folder beside ``path`` and swap it into place only when complete.

    Yields the staging folder (``.NAME.staging-PID-XXXX`` in the same parent);
    write everything there. When the block succeeds the staging folder
    becomes ``path`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``; else
    rename-old-away, rename-new-in), and the old folder is removed. Entries
    of the old folder that the new result does not contain are kept (hard
    links), so stages may share a folder. On any failure, KeyboardInterrupt
    included, the staging folder is removed and the old folder is untouched.
    A write failure (full disk, read-only, permission) becomes one
    :class:`~edgeprune.errors.OutputError` line naming the folder.

    Files inside the result must record the FINAL paths (``path / name``),
    never the staging folder.

    Example::

        with staged_output("out/", option="--output") as tmp:
            (tmp / "summary.json").write_text(...)     # records Path("out") / "model.ept"
    """
    final = output_dir(path, option=option, create=False)
    real = Path(os.path.realpath(final))
    parent = real.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(parent, real.name)
        stage = parent / f".{real.name}.staging-{os.getpid()}-{secrets.token_hex(3)}"
        stage.mkdir()
    except OSError as exc:
        raise OutputError(
            f"{final}: cannot write in {parent}: {exc.strerror}; choose another {option}"
        ) from None
    try:
        yield stage
        try:
            _swap_in(stage, real)
        except OSError as exc:
            if _write_error(exc, stage) is not None:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            raise OutputError(
                f"{final}: cannot replace the folder with the new result: {exc.strerror or exc}{where}; "
                f"nothing was changed there; choose another {option}"
            ) from exc
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        bad = _write_error(exc, stage) if not isinstance(exc, OutputError) else None
        if bad is not None:
            where = f" writing {Path(bad.filename).name}" if bad.filename else ""
            fix = "free some space" if bad.errno in _FULL_ERRNOS else "fix that"
            raise OutputError(
                f"{final}: {bad.strerror or os.strerror(bad.errno)}{where}; {fix} or choose another "
                f"{option} (nothing was changed there)"
            ) from exc
        raise
