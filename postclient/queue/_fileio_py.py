"""The queue manager's batched file calls, in Python: the readable twin of
pyx/_fileio_c.pyx (see postclient/queue/fileio.py for why both exist).

Both give the same results for the same files; tests/unit/test_fileio.py
runs them side by side.
"""

import errno
import fcntl
import os


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
