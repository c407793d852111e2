"""Where edgeprune finds its shipped data and keeps its cache.

In a wheel, ``targets/`` and ``device_profiles/`` live under
``edgeprune/_data/``; in a source checkout (editable install) they are the
repository's top-level folders. Everything else is user state:

- config: ``$EDGEPRUNE_CONFIG`` or ``~/.config/edgeprune/config.toml``
- cache:  ``$EDGEPRUNE_CACHE_DIR`` or ``$XDG_CACHE_HOME/edgeprune`` (``~/.cache/edgeprune``)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
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
    """
    from edgeprune.errors import EdgePruneError

    path = Path(path)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise EdgePruneError(f"{part}: exists and is not a folder; choose another {option}")
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgePruneError(f"{path}: cannot create the output folder: {exc.strerror}; choose another {option}") from None
    return path
