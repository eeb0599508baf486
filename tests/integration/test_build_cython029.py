"""pyx/ still builds with Debian bookworm's Cython 0.29.32, and the result is right.

The wheel build uses whatever Cython pip provides (3.x); this test compiles
every pyx/*.pyx with Debian's own ``cython3`` (0.29.x) and the C compiler,
imports each result as a standalone module and checks that it gives what
its pure-Python twin gives.  It needs the cython3 package (make test-deps).
"""

import importlib.util
import os
import re
import subprocess
import sysconfig

import pytest

from tests.peers import need_program

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYX_DIR = os.path.join(ROOT, "pyx")
pytestmark = pytest.mark.integration


def _compile(cython, pyx, workdir):
    name = os.path.splitext(os.path.basename(pyx))[0]
    c_file = os.path.join(workdir, name + ".c")
    subprocess.run([cython, "-3", "-X", "boundscheck=False,wraparound=False,cdivision=True",
                    "-o", c_file, pyx], check=True, capture_output=True, text=True)
    target = os.path.join(workdir, name + sysconfig.get_config_var("EXT_SUFFIX"))
    compiler = os.environ.get("CC", "cc")
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-I", sysconfig.get_paths()["include"],
                    c_file, "-o", target], check=True, capture_output=True, text=True)
    spec = importlib.util.spec_from_file_location(name, target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_debian_cython_is_0_29():
    cython = need_program("cython3")
    version = subprocess.run([cython, "--version"], capture_output=True, text=True)
    assert re.search(r"0\.29\.\d+", version.stdout + version.stderr)


def test_pyx_built_with_cython_0_29_matches_the_twins(tmp_path):
    cython = need_program("cython3")
    sources = sorted(f for f in os.listdir(PYX_DIR) if f.endswith(".pyx"))
    assert sources, "no Cython sources in pyx/"
    modules = {}
    for source in sources:
        try:
            modules[source] = _compile(cython, os.path.join(PYX_DIR, source), str(tmp_path))
        except subprocess.CalledProcessError as error:
            pytest.fail(f"{source} does not build with {cython}:\n{error.stderr[-3000:]}")
    from postclient.codec import _encode_py as twin
    compiled = modules["_encode_c.pyx"]
    samples = [
        b"", b"plain\n", b".dot\r\n.\r\nx\rbare\n", b"a" * 5000 + b"\n.\n",
        b"Content-Type: text/plain\nContent-Transfer-Encoding: 8bit\n\ncaf\xc3\xa9 = \xff \n",
    ]
    for sample in samples:
        for options in ({}, {"line_length_limit": 78}, {"downgrade": True}):
            assert compiled.encode(sample, **options) == twin.encode(sample, **options), (sample, options)
    from postclient.queue import _fileio_py as file_twin
    compiled = modules["_fileio_c.pyx"]
    (tmp_path / "queue-file").write_bytes(b"x" * 5000)
    for module in (compiled, file_twin):
        assert module.load_file(tmp_path / "queue-file", tmp_path / "moved", 4096) == (
            0, "", False, 5000, b"x" * 4096)
        assert module.load_file(tmp_path / "queue-file", tmp_path / "moved", 10)[:2] == (
            2, "rename")
        assert module.unlink_paths([tmp_path / "moved", tmp_path / "moved"]) == [0, 2]
        (tmp_path / "queue-file").write_bytes(b"x" * 5000)
    from postclient.queue import queuefile
    path = queuefile.write_queue_file(str(tmp_path), "QID", sender="s@example.com",
                                      recipients=["r@example.com"], content=b"x\r\n",
                                      arrival_time=1.0)
    data = open(path, "rb").read()
    python = list(queuefile._more_records(None, len(data), 100, True, data, len(queuefile.MAGIC)))
    assert modules["_records_c.pyx"].scan(data, 0, len(queuefile.MAGIC), len(data), 100, True) \
        == (python, len(data))
