"""Choosing between a compiled module and its Python version.

Every hot path compiled from pyx/ (the codec, the queue manager's file calls,
the queue file scanner) is used unless POSTCLIENT_NO_EXTENSIONS is set (not
empty, not "0") or the compiled module cannot be imported; `postclient
check` says which is in use.  The same variable makes the delivery agent's
modules that mypyc compiled (setup.py) load from their .py files: one
switch for "all pure Python", to profile or debug them.
"""

import importlib
import importlib.machinery
import os
import sys


def disabled():
    """POSTCLIENT_NO_EXTENSIONS asks for pure Python."""
    return os.environ.get("POSTCLIENT_NO_EXTENSIONS", "") not in ("", "0")


def source_first(package_path):
    """Where the extensions are disabled, import the modules in ``package_path``
    (a package's __path__) from source even where a compiled module sits
    beside them."""
    if disabled():
        use_sources(package_path)


def use_sources(package_path):
    """Import the modules in ``package_path`` not imported yet from their .py
    files: that directory's finder knows no extension modules."""
    loader = (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)
    for directory in package_path:
        sys.path_importer_cache[directory] = importlib.machinery.FileFinder(directory, loader)


def is_compiled(module):
    """Whether ``module`` was loaded from a compiled extension."""
    return (getattr(module, "__file__", "") or "").endswith(
        tuple(importlib.machinery.EXTENSION_SUFFIXES))


def load(compiled, python=None):
    """(module, implementation, why the compiled module is not in use or None).

    ``compiled`` and ``python`` are module names; without ``python`` the
    module is None when the compiled one is not in use.
    """
    if disabled():
        why = "disabled by POSTCLIENT_NO_EXTENSIONS"
    else:
        try:
            return importlib.import_module(compiled), "cython", None
        except ImportError as error:
            why = f"{type(error).__name__}: {error}"
    return (importlib.import_module(python) if python else None), "python", why
