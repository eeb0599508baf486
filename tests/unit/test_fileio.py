"""The queue manager's batched file calls: the compiled module and its Python twin.

Every test runs over both (the `fileio` fixture) and checks the results
against the file system, not against the other twin;
test_compiled_module_loaded fails when the Cython build is missing.
"""

import errno
import fcntl
import os

import pytest

from postclient import extensions
from postclient.queue import _fileio_py
from postclient.queue import fileio as selector
from tests.fresh_python import run_python

TWINS = {"python": _fileio_py}
try:
    from postclient.queue import _fileio_c
except ImportError:                     # reported by test_compiled_module_loaded
    _fileio_c = None
else:
    TWINS["cython"] = _fileio_c


@pytest.fixture(params=["python", "cython"])
def fileio(request):
    if request.param not in TWINS:
        pytest.skip("compiled module not importable: see test_compiled_module_loaded")
    return TWINS[request.param]


def test_compiled_module_loaded():
    """Fails (does not skip) when the Cython extension did not load."""
    if extensions.disabled():
        assert selector.IMPLEMENTATION == "python"
        return
    assert _fileio_c is not None, "build it with `python setup.py build_ext --inplace`"
    assert selector.IMPLEMENTATION == "cython", selector._import_error
    assert selector.load_file is _fileio_c.load_file
    assert selector.unlink_paths is _fileio_c.unlink_paths


def test_the_selector_honours_no_extensions():
    out = run_python("import postclient.queue.fileio as f, postclient.queue._fileio_py as p;"
                     "print(f.IMPLEMENTATION, f.load_file is p.load_file)", no_extensions=True)
    assert out == ["python", "True"]


def test_unlink_paths_reports_each_path_in_order(fileio, tmp_path):
    for name in ("a", "c"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir").mkdir()
    paths = [tmp_path / "a", tmp_path / "b", str(tmp_path / "c"), os.fsencode(tmp_path / "dir")]
    assert fileio.unlink_paths(paths) == [0, errno.ENOENT, 0, errno.EISDIR]
    assert sorted(os.listdir(tmp_path)) == ["dir"]
    assert fileio.unlink_paths([]) == []


def test_an_embedded_nul_is_refused_before_anything_is_unlinked(fileio, tmp_path):
    (tmp_path / "a").write_bytes(b"x")
    with pytest.raises(ValueError):
        fileio.unlink_paths([tmp_path / "a", b"bad\0name"])
    assert os.listdir(tmp_path) == ["a"]
    with pytest.raises(ValueError):
        fileio.load_file(None, b"bad\0name", 10)


def test_load_file_renames_and_reads_up_to_the_limit(fileio, tmp_path):
    data = bytes(range(256)) * 40                # 10,240 bytes
    (tmp_path / "old").write_bytes(data)
    assert fileio.load_file(tmp_path / "old", tmp_path / "new", 4096) == (
        0, "", False, len(data), data[:4096])
    assert os.listdir(tmp_path) == ["new"]
    # no rename (old None); a limit beyond the size reads it all; limit 0 reads nothing
    assert fileio.load_file(None, tmp_path / "new", 1 << 20) == (0, "", False, len(data), data)
    assert fileio.load_file(None, tmp_path / "new", 0) == (0, "", False, len(data), b"")
    (tmp_path / "empty").write_bytes(b"")
    assert fileio.load_file(None, tmp_path / "empty", 100) == (0, "", False, 0, b"")
    with pytest.raises(ValueError):
        fileio.load_file(None, tmp_path / "new", -1)


def test_load_file_names_the_step_that_failed(fileio, tmp_path):
    assert fileio.load_file(tmp_path / "gone", tmp_path / "new", 10) == (
        errno.ENOENT, "rename", False, 0, b"")
    assert fileio.load_file(None, tmp_path / "gone", 10) == (errno.ENOENT, "open", False, 0, b"")
    (tmp_path / "dir").mkdir()
    assert fileio.load_file(None, tmp_path / "dir", 10) == (errno.EISDIR, "read", False, 0, b"")


def test_load_file_sees_the_agents_lock_and_leaves_it(fileio, tmp_path):
    path = tmp_path / "locked"
    path.write_bytes(b"queue file")
    holder = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_SH)      # a delivery agent at work
        assert fileio.load_file(tmp_path / "locked", tmp_path / "active", 100) == (
            0, "", True, 0, b"")
        assert os.listdir(tmp_path) == ["active"]   # moved, then found locked
        fcntl.flock(holder, fcntl.LOCK_UN)
        assert fileio.load_file(None, tmp_path / "active", 100)[2:] == (False, 10, b"queue file")
        # the probe's own lock went with its descriptor: an agent can lock again
        fcntl.flock(holder, fcntl.LOCK_SH | fcntl.LOCK_NB)
    finally:
        os.close(holder)


def test_no_descriptor_is_left_open_whatever_the_outcome(fileio, tmp_path):
    (tmp_path / "file").write_bytes(b"x" * 100)
    (tmp_path / "dir").mkdir()
    before = sorted(os.listdir("/proc/self/fd"))
    for _ in range(3):
        fileio.load_file(None, tmp_path / "file", 10)          # read
        fileio.load_file(None, tmp_path / "dir", 10)           # failed after the open
        fileio.load_file(None, tmp_path / "gone", 10)          # failed open
    assert sorted(os.listdir("/proc/self/fd")) == before
