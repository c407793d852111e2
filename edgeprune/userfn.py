"""The user's own Python function, named ``pkg.module:function`` (``--model``, ``--data``, ``--calib``).

Imported in this one place; every failure is one line of the caller's error
class, naming the option and saying whose fault it was (not installed, a
missing dependency, a syntax error, an error raised while importing, no such
function). The traceback is chained: ``--debug`` shows it. Calling it, and
checking what it returns, is the caller's: each option wants something else.

This runs the user's code: call it only for a function the user named.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def short(exc: BaseException, limit: int = 160) -> str:
    """An exception's message on one line, at most ``limit`` characters."""
    text = " ".join(str(exc).split()) or "(no message)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def import_function(spec: str, *, where: str, error: type[Exception]) -> Callable:
    """``pkg.module:function`` imported; ``where`` (e.g. ``"--data x:y"``) starts every error line."""
    mod_name, _, fn_name = spec.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name and (mod_name == exc.name or mod_name.startswith(exc.name + ".")):
            raise error(f"{where}: cannot import '{mod_name}' ({exc}); is it on PYTHONPATH?") from None
        raise error(f"{where}: importing '{mod_name}' failed: it needs the module '{exc.name}', which is not "
                    "installed; install it") from exc
    except SyntaxError as exc:
        at = f"{exc.filename}:{exc.lineno}" if exc.filename else mod_name
        raise error(f"{where}: '{mod_name}' has a syntax error at {at} ({exc.msg}); fix the file") from exc
    except Exception as exc:  # the user's module ran and raised while importing
        raise error(f"{where}: importing '{mod_name}' raised {type(exc).__name__}: {short(exc)}; "
                    "fix the module (--debug shows the traceback)") from exc
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise error(f"{where}: '{mod_name}' has no function '{fn_name}'")
    return fn
