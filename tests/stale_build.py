"""Compiled modules older than their source (tests/conftest.py stops the run on one).

An extension module is imported in place of the .py beside it, so a module
that mypyc compiled before its source last changed would have the tests run
old code.  `make build` touches the modules after every build.
"""

import glob
import importlib.machinery
import os


def stale_modules(directory):
    """(compiled, source) pairs in ``directory`` whose compiled module is older."""
    found = []
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for built in sorted(glob.glob(os.path.join(directory, "*" + suffix))):
            source = built[:-len(suffix)] + ".py"
            if os.path.exists(source) and os.path.getmtime(built) < os.path.getmtime(source):
                found.append((built, source))
    return found
