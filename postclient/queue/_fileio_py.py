"""The queue's batched file calls, in Python: the readable twin of
pyx/_fileio_c.pyx (see postclient/queue/fileio.py for why both exist).

Both give the same results for the same files; tests/unit/test_fileio.py
runs them side by side.
"""

import errno
import fcntl
import os
import stat


def _encoded(path):
    """os.fsencode(), refusing an embedded NUL before anything is done (as the twin)."""
    encoded = os.fsencode(path)
    if b"\0" in encoded:
        raise ValueError("embedded null byte")
    return encoded


def unlink_paths(paths):
    """unlink(2) each path (str or bytes), in order; the errno of each (0: unlinked)."""
    errors = []
    for path in [_encoded(path) for path in paths]:
        try:
            os.unlink(path)
        except OSError as error:
            errors.append(error.errno)
        else:
            errors.append(0)
    return errors


def load_file(old, new, limit):
    """Rename ``old`` to ``new`` (not when ``old`` is None), then open ``new``,
    probe the delivery agents' shared lock, fstat it and read up to ``limit``
    bytes from its start.

    Returns (errno, stage, locked, size, data): errno 0 when every step
    worked, else the errno of the step named by ``stage`` ("rename", "open"
    or "read"); ``locked`` True when an agent holds its lock (nothing is
    read then); ``size`` the file's size; ``data`` the bytes read.
    """
    new = _encoded(new)
    old = _encoded(old) if old is not None else None
    if limit < 0:
        raise ValueError("limit must not be negative")
    if old is not None:
        try:
            os.rename(old, new)
        except OSError as error:
            return error.errno, "rename", False, 0, b""
    try:
        descriptor = os.open(new, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        return error.errno, "open", False, 0, b""
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0, "", True, 0, b""
        size = os.fstat(descriptor).st_size
        want = min(size, limit)
        chunks, got = [], 0
        while got < want:
            chunk = os.pread(descriptor, want - got, got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return 0, "", False, size, b"".join(chunks)
    except OSError as error:
        return error.errno or errno.EIO, "read", False, 0, b""
    finally:
        os.close(descriptor)        # also releases the probe's lock


def move_names(source_descriptor, target_descriptor, names, mtime=None):
    """Move each file ``name`` from one open directory to another under the
    same name, never replacing a file there; the errno of each (0: moved).

    With ``mtime`` (seconds), its access and modification times are set
    first, so it appears in the target with them; without, a name that is
    not a regular file is not moved (ENOENT).  EEXIST when the target has
    the name already.  Every name is tried.
    """
    encoded = [_encoded(name) for name in names]
    errors = []
    for name in encoded:
        try:
            if mtime is not None:
                os.utime(name, (mtime, mtime), dir_fd=source_descriptor)
            elif not stat.S_ISREG(os.stat(name, dir_fd=source_descriptor).st_mode):
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
            rename_noreplace(name, source_descriptor, target_descriptor)
        except OSError as error:
            errors.append(error.errno or errno.EIO)
        else:
            errors.append(0)
    return errors


_RENAME_NOREPLACE = 1         # <linux/fs.h>
_libc = None                  # (ctypes, renameat2 or None), loaded at the first move


def _renameat2():
    """ctypes and the C library's renameat2 (None where it has none).  Loaded
    when first needed: a listing or a flush need not pay for ctypes."""
    global _libc
    if _libc is None:
        import ctypes
        _libc = ctypes, getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    return _libc


def rename_noreplace(name, source_descriptor, target_descriptor):
    """Rename ``name`` between two open directories, never replacing a file.

    renameat2(RENAME_NOREPLACE) checks and renames in one atomic step (and one
    system call); where the C library, kernel or file system lacks it, an
    lstat() comes first, which leaves a window no other postclient tool uses.
    FileExistsError if the target exists, FileNotFoundError if the source
    does not.
    """
    ctypes, renameat2 = _renameat2()
    if renameat2 is not None:
        encoded = os.fsencode(name)
        if renameat2(source_descriptor, encoded, target_descriptor, encoded,
                     _RENAME_NOREPLACE) == 0:
            return
        error = ctypes.get_errno()
        if error not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(error, os.strerror(error), name)
    try:
        os.lstat(name, dir_fd=target_descriptor)
    except FileNotFoundError:
        pass
    else:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), name)
    os.rename(name, name, src_dir_fd=source_descriptor, dst_dir_fd=target_descriptor)
