"""The user's config file (TOML): ``$EDGEPRUNE_CONFIG`` or ``~/.config/edgeprune/config.toml``.

Keys::

    profiles_dirs = ["~/my-boards"]          # extra device profile folders
    targets_file = "~/.config/edgeprune/targets.toml"
"""

from __future__ import annotations

from typing import Any

import tomllib

from edgeprune._paths import config_file
from edgeprune.errors import ProfileError

KNOWN_KEYS = {"profiles_dirs": list, "targets_file": str}


def read_config() -> dict[str, Any]:
    path = config_file()
    if not path.is_file():
        return {}

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    for key, value in data.items():
        if key not in KNOWN_KEYS:
            raise ProfileError(f"{path}: unknown key '{key}' (known: {', '.join(KNOWN_KEYS)})")
        if not isinstance(value, KNOWN_KEYS[key]):
            raise ProfileError(f"{path}: key '{key}': expected a {KNOWN_KEYS[key].__name__}, got {value!r}")
    return data
