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
    assert selector.move_names is _fileio_c.move_names


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


def test_paths_are_encoded_as_os_fsencode_encodes_them(fileio, tmp_path):
    """A str that holds a name which is not UTF-8 (surrogateescape, as os.listdir()
    gives it), a bytes path and a path-like object all reach the same file."""
    for raw in (b"q\xff1", b"q\xff2", b"q\xc3\xa93"):
        (tmp_path / os.fsdecode(raw)).write_bytes(b"x")
    base = os.fsencode(tmp_path)
    paths = [os.fsdecode(base + b"/q\xff1"), base + b"/q\xff2", tmp_path / "q\u00e93"]
    assert fileio.unlink_paths(paths) == [0, 0, 0]
    assert os.listdir(tmp_path) == []
    with pytest.raises(UnicodeEncodeError):             # as os.fsencode(): not a file name
        fileio.unlink_paths([str(tmp_path / "\ud800")])


def test_an_embedded_nul_is_refused_before_anything_is_unlinked(fileio, tmp_path):
    (tmp_path / "a").write_bytes(b"x")
    with pytest.raises(ValueError):
        fileio.unlink_paths([tmp_path / "a", b"bad\0name"])
    with pytest.raises(ValueError):
        fileio.unlink_paths([str(tmp_path / "a"), str(tmp_path / "bad\0name")])
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


# --- move_names (postclient super's moves of many messages) ----------------------------
@pytest.fixture
def two_dirs(tmp_path):
    """(source path, target path, source fd, target fd); the descriptors closed after."""
    source, target = tmp_path / "hold", tmp_path / "deferred"
    source.mkdir()
    target.mkdir()
    fds = os.open(source, os.O_RDONLY | os.O_DIRECTORY), os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    yield source, target, fds[0], fds[1]
    for fd in fds:
        os.close(fd)


def test_move_names_moves_each_and_reports_each_in_order(fileio, two_dirs):
    source, target, source_fd, target_fd = two_dirs
    for name in ("a", "b", "d"):
        (source / name).write_bytes(name.encode())
    (target / "b").write_bytes(b"the other b")
    (source / "dir").mkdir()
    errors = fileio.move_names(source_fd, target_fd, ["a", "b", "c", b"d", "dir"], 1500000000.25)
    assert errors == [0, errno.EEXIST, errno.ENOENT, 0, 0]      # a directory's times can be set
    assert sorted(os.listdir(source)) == ["b"]
    assert sorted(os.listdir(target)) == ["a", "b", "d", "dir"]
    assert (target / "b").read_bytes() == b"the other b"          # never replaced
    assert (source / "b").read_bytes() == b"b"
    for name in ("a", "d"):
        info = os.stat(target / name)
        assert (info.st_mtime_ns, info.st_atime_ns) == (1500000000250000000,) * 2
    assert fileio.move_names(source_fd, target_fd, [], 1.0) == []


def test_move_names_without_a_time_moves_regular_files_only_and_keeps_their_times(fileio, two_dirs):
    source, target, source_fd, target_fd = two_dirs
    (source / "a").write_bytes(b"a")
    os.utime(source / "a", (1000, 2000))
    (source / "dir").mkdir()
    os.symlink("a", source / "link")            # followed, as os.path.isfile() does
    os.symlink("missing", source / "dangling")
    errors = fileio.move_names(source_fd, target_fd, ["link", "a", "dir", "dangling"])
    assert errors == [0, 0, errno.ENOENT, errno.ENOENT]
    assert sorted(os.listdir(target)) == ["a", "link"]
    assert os.stat(target / "a").st_mtime == 2000
    assert sorted(os.listdir(source)) == ["dangling", "dir"]


@pytest.mark.parametrize("mtime", [0, 1.5, 1700000000.999999, -1.25])
def test_move_names_sets_the_times_os_utime_sets(fileio, two_dirs, mtime):
    source, target, source_fd, target_fd = two_dirs
    (source / "a").write_bytes(b"a")
    (source / "b").write_bytes(b"b")
    os.utime(source / "b", (mtime, mtime))
    assert fileio.move_names(source_fd, target_fd, ["a"], mtime) == [0]
    assert os.stat(target / "a").st_mtime_ns == os.stat(source / "b").st_mtime_ns


def test_move_names_refuses_a_nul_before_anything_moves(fileio, two_dirs):
    source, target, source_fd, target_fd = two_dirs
    (source / "a").write_bytes(b"a")
    with pytest.raises(ValueError):
        fileio.move_names(source_fd, target_fd, ["a", b"bad\0name"], 1.0)
    assert os.listdir(source) == ["a"] and os.listdir(target) == []


def test_move_names_on_a_closed_descriptor_reports_ebadf(fileio, tmp_path):
    (tmp_path / "a").write_bytes(b"a")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    os.close(fd)
    assert fileio.move_names(fd, fd, ["a"], 1.0) == [errno.EBADF]
    assert os.listdir(tmp_path) == ["a"]


def test_the_python_twin_without_renameat2_still_never_replaces(two_dirs, monkeypatch):
    """Where the C library has no renameat2: an lstat of the target, then rename."""
    source, target, source_fd, target_fd = two_dirs
    ctypes, _ = _fileio_py._renameat2()
    monkeypatch.setattr(_fileio_py, "_libc", (ctypes, None))
    for name in ("a", "b"):
        (source / name).write_bytes(name.encode())
    os.symlink("nowhere", target / "b")         # a dangling link is there all the same
    assert _fileio_py.move_names(source_fd, target_fd, ["a", "b"], 1.0) == [0, errno.EEXIST]
    assert sorted(os.listdir(source)) == ["b"] and os.path.islink(target / "b")
