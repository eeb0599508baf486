# cython: language_level=3, binding=True
"""The queue's batched file calls, a whole task per GIL release.

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
  move_names(source_fd, target_fd, names, mtime=None) -> the errno of each
      move, 0 where it worked: utimensat() (atime and mtime) when ``mtime``
      is given, else fstatat() and a regular file or ENOENT; then
      renameat2(RENAME_NOREPLACE), or where the kernel or file system lacks
      it (ENOSYS, EINVAL) an fstatat() of the target (EEXIST) and renameat().
      For ``postclient super``'s moves of many messages.

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
    int renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)

cdef extern from "<sys/syscall.h>" nogil:
    long SYS_renameat2

cdef extern from "<unistd.h>" nogil:
    long syscall(long number, ...)

cdef extern from "<errno.h>" nogil:
    int ENOENT
    int EEXIST
    int ENOSYS
    int EINVAL

cdef extern from "<time.h>" nogil:
    cdef struct timespec:
        long tv_sec
        long tv_nsec

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
        unsigned int st_mode
    int fstat(int fd, stat *buf)
    int fstatat(int dirfd, const char *path, stat *buf, int flags)
    int utimensat(int dirfd, const char *path, const timespec *times, int flags)
    bint S_ISREG(unsigned int mode)

cdef extern from "<fcntl.h>" nogil:
    int AT_SYMLINK_NOFOLLOW

cdef enum:
    RENAME_NOREPLACE = 1        # <linux/fs.h>


cdef extern from "Python.h":
    bytes PyUnicode_EncodeFSDefault(object unicode)


cdef bytes _encoded(path):
    """os.fsencode(), refusing an embedded NUL as os.unlink() and os.open() do.

    A str (the queue manager's paths, seven per message) is encoded here as
    os.fsencode() encodes it (the file system encoding, surrogateescape)
    without the call into os's Python code."""
    if type(path) is str:
        encoded = PyUnicode_EncodeFSDefault(path)
    elif type(path) is bytes:
        encoded = path
    else:
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


cdef int _move_one(int source, int target, const char *name, bint set_time,
                   const timespec *times) noexcept nogil:
    """One move of move_names(): 0 or the errno."""
    cdef stat info
    if set_time:
        if utimensat(source, name, times, 0) != 0:
            return errno
    elif fstatat(source, name, &info, 0) != 0:
        return errno
    elif not S_ISREG(info.st_mode):
        return ENOENT
    if syscall(SYS_renameat2, source, name, target, name, <int>RENAME_NOREPLACE) == 0:
        return 0
    if errno != ENOSYS and errno != EINVAL:
        return errno
    if fstatat(target, name, &info, AT_SYMLINK_NOFOLLOW) == 0:
        return EEXIST
    if errno != ENOENT:
        return errno
    return errno if renameat(source, name, target, name) != 0 else 0


def move_names(int source_fd, int target_fd, names, mtime=None):
    """Move each name between two open directories, never replacing: see the
    module docstring.  The GIL is released once for all of them."""
    cdef Py_ssize_t count = len(names), i
    cdef const char **c_names
    cdef int *errors
    cdef timespec times[2]
    cdef bint set_time = mtime is not None
    cdef double seconds
    if set_time:
        seconds = float(mtime)
        times[0].tv_sec = <long>seconds
        if times[0].tv_sec > seconds:       # a negative time rounds down, as os.utime()
            times[0].tv_sec -= 1
        times[0].tv_nsec = <long>((seconds - times[0].tv_sec) * 1e9)
        if times[0].tv_nsec >= 1000000000:
            times[0].tv_sec += 1
            times[0].tv_nsec -= 1000000000
        times[1] = times[0]
    keep = [_encoded(name) for name in names]
    c_names = <const char **>malloc(max(count, 1) * sizeof(char *))
    errors = <int *>malloc(max(count, 1) * sizeof(int))
    if c_names == NULL or errors == NULL:
        free(c_names)
        free(errors)
        raise MemoryError()
    try:
        for i in range(count):
            c_names[i] = PyBytes_AS_STRING(keep[i])
        with nogil:
            for i in range(count):
                errors[i] = _move_one(source_fd, target_fd, c_names[i], set_time, times)
        return [errors[i] for i in range(count)]
    finally:
        free(c_names)
        free(errors)
