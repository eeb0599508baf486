"""Code run in a fresh interpreter that imports this checkout's postclient.

For the tests of which build is in use: the choice between a compiled module
and its Python version is made once per process, at import.
"""

import os
import subprocess
import sys

import postclient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(postclient.__file__)))


def run_python(code, no_extensions=False):
    """The words ``code`` prints, run with POSTCLIENT_NO_EXTENSIONS=1 or without it."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    environment.pop("POSTCLIENT_NO_EXTENSIONS", None)
    if no_extensions:
        environment["POSTCLIENT_NO_EXTENSIONS"] = "1"
    result = subprocess.run([sys.executable, "-c", code], env=environment,
                            capture_output=True, text=True, check=True)
    return result.stdout.split()
