# cython: language_level=3, binding=True
"""The queue manager's file calls, a whole task per GIL release.

Compiled by setup.py into postclient.queue._fileio_c; selected by
postclient.queue.fileio (which says why it exists) unless
POSTCLIENT_NO_EXTENSIONS=1.  postclient/queue/_fileio_py.py is its readable
twin: the same functions, the same results; tests/unit/test_fileio.py runs
both.

Exports:
  unlink_paths(paths) -> the errno of each unlink(2), 0 where it worked, in
      order; every path is tried.
  load_file(old, new, limit) -> (errno, stage, locked, size, data): rename
      ``old`` to ``new`` (not when ``old`` is None), open ``new`` read-only,
      probe the delivery agents' shared lock with flock(LOCK_EX|LOCK_NB),
      fstat, pread up to ``limit`` bytes from 0, close.  errno 0 when all
      went well, else that of the failed ``stage`` ("rename", "open",
      "read"); ``locked`` when the probe found the lock held (nothing read).

Paths are str or bytes (os.fsencode()).  Compatible with Cython 0.29.32
(Debian bookworm) and Cython 3.x.
"""

import os

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.errno cimport errno
from libc.stdlib cimport malloc, free


cdef extern from "<errno.h>" nogil:
    int EWOULDBLOCK
    int EINTR

cdef extern from "<unistd.h>" nogil:
    int unlink(const char *path)
    int close(int fd)
    ssize_t pread(int fd, void *buf, size_t count, long offset)

cdef extern from "<stdio.h>" nogil:
    int rename(const char *old, const char *new)

cdef extern from "<fcntl.h>" nogil:
    int open(const char *path, int flags)
    int O_RDONLY
    int O_CLOEXEC

cdef extern from "<sys/file.h>" nogil:
    int flock(int fd, int operation)
    int LOCK_EX
    int LOCK_NB

cdef extern from "<sys/stat.h>" nogil:
    cdef struct stat:
        long st_size
    int fstat(int fd, stat *buf)


cdef bytes _encoded(path):
    """os.fsencode(), refusing an embedded NUL as os.unlink() and os.open() do."""
    encoded = os.fsencode(path)
    if b"\0" in encoded:
        raise ValueError("embedded null byte")
    return encoded


def unlink_paths(paths):
    """unlink(2) each path, with the GIL released once; the errno of each."""
    cdef Py_ssize_t count = len(paths), i
    cdef const char **names
    cdef int *errors
    keep = [_encoded(path) for path in paths]
    names = <const char **>malloc(max(count, 1) * sizeof(char *))
    errors = <int *>malloc(max(count, 1) * sizeof(int))
    if names == NULL or errors == NULL:
        free(names)
        free(errors)
        raise MemoryError()
    try:
        for i in range(count):
            names[i] = PyBytes_AS_STRING(keep[i])
        with nogil:
            for i in range(count):
                errors[i] = errno if unlink(names[i]) != 0 else 0
        return [errors[i] for i in range(count)]
    finally:
        free(names)
        free(errors)


def load_file(old, new, Py_ssize_t limit):
    """rename, open, lock probe, fstat, pread, close: see the module docstring."""
    cdef bytes new_name = _encoded(new)
    cdef bytes old_name = _encoded(old) if old is not None else None
    cdef const char *c_new = PyBytes_AS_STRING(new_name)
    cdef const char *c_old = PyBytes_AS_STRING(old_name) if old_name is not None else NULL
    cdef int error = 0, fd = -1, locked = 0
    cdef int stage = 0          # 1 rename, 2 open, 3 read
    cdef stat info
    cdef long size = 0
    cdef Py_ssize_t got = 0, want, n
    cdef char *buffer = NULL
    if limit < 0:
        raise ValueError("limit must not be negative")
    buffer = <char *>malloc(limit if limit > 0 else 1)
    if buffer == NULL:
        raise MemoryError()
    try:
        with nogil:
            if c_old != NULL and rename(c_old, c_new) != 0:
                error, stage = errno, 1
            else:
                fd = open(c_new, O_RDONLY | O_CLOEXEC)
                while fd < 0 and errno == EINTR:
                    fd = open(c_new, O_RDONLY | O_CLOEXEC)
                if fd < 0:
                    error, stage = errno, 2
                elif flock(fd, LOCK_EX | LOCK_NB) != 0:
                    if errno == EWOULDBLOCK:
                        locked = 1
                    else:
                        error, stage = errno, 3
                elif fstat(fd, &info) != 0:
                    error, stage = errno, 3
                else:
                    size = info.st_size
                    want = size if size < limit else limit
                    while got < want:
                        n = pread(fd, buffer + got, want - got, got)
                        if n < 0 and errno == EINTR:
                            continue
                        if n < 0:
                            error, stage = errno, 3
                            break
                        if n == 0:
                            break
                        got += n
                if fd >= 0:
                    close(fd)       # also releases the probe's lock
        if error or locked:
            return error, ("", "rename", "open", "read")[stage], bool(locked), 0, b""
        return 0, "", False, size, PyBytes_FromStringAndSize(buffer, got)
    finally:
        free(buffer)
