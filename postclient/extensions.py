"""Choosing between a compiled module of pyx/ and its Python version.

Every hot path compiled from pyx/ (the codec, the queue manager's file calls,
the queue file scanner) is used unless POSTCLIENT_NO_EXTENSIONS is set (not
empty, not "0") or the compiled module cannot be imported; `postclient
check` says which is in use.
"""

import importlib
import os


def load(compiled, python=None):
    """(module, implementation, why the compiled module is not in use or None).

    ``compiled`` and ``python`` are module names; without ``python`` the
    module is None when the compiled one is not in use.
    """
    if os.environ.get("POSTCLIENT_NO_EXTENSIONS", "") not in ("", "0"):
        why = "disabled by POSTCLIENT_NO_EXTENSIONS"
    else:
        try:
            return importlib.import_module(compiled), "cython", None
        except ImportError as error:
            why = f"{type(error).__name__}: {error}"
    return (importlib.import_module(python) if python else None), "python", why
