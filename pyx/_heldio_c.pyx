# Compiled into postclient._heldio_c; see postclient/heldio.py for why and when.
#
# Each function makes one system call that cannot wait (MSG_DONTWAIT on a socket,
# pread/pwrite/write on a file in the page cache) WITHOUT releasing the GIL, and
# reports an error as the os and socket modules do: OSError(errno, strerror),
# which Python turns into BlockingIOError, BrokenPipeError and the like.
from libc.errno cimport errno, EINTR
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE

import os

# Reads up to this size go through a buffer on the stack and are copied once, at
# their real length: a reply of 100 bytes costs no 64 KB allocation.
cdef enum:
    STACK_BYTES = 65536

cdef extern from "unistd.h":
    ssize_t c_pread "pread" (int fd, void *buf, size_t count, long long offset)
    ssize_t c_pwrite "pwrite" (int fd, const void *buf, size_t count, long long offset)
    ssize_t c_write "write" (int fd, const void *buf, size_t count)

cdef extern from "sys/socket.h":
    ssize_t c_send "send" (int fd, const void *buf, size_t count, int flags)
    ssize_t c_recv "recv" (int fd, void *buf, size_t count, int flags)
    int MSG_DONTWAIT
    int MSG_NOSIGNAL


cdef object _raise():
    code = errno
    raise OSError(code, os.strerror(code))


def send(sock, data):
    """sock.send(data) for a non-blocking socket: bytes sent."""
    cdef int fd = sock.fileno()
    cdef Py_buffer view
    cdef ssize_t sent
    if fd < 0:
        raise OSError(9, os.strerror(9))        # EBADF, as a closed socket says
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        while True:
            sent = c_send(fd, view.buf, <size_t>view.len, MSG_DONTWAIT | MSG_NOSIGNAL)
            if sent >= 0 or errno != EINTR:
                break
    finally:
        PyBuffer_Release(&view)
    if sent < 0:
        _raise()
    return sent


def recv(sock, Py_ssize_t size):
    """sock.recv(size) for a non-blocking socket: b"" at end of file."""
    cdef int fd = sock.fileno()
    cdef ssize_t got
    cdef char small[STACK_BYTES]
    if fd < 0:
        raise OSError(9, os.strerror(9))
    if size < 0:
        raise ValueError("negative buffersize in recv")
    if size > STACK_BYTES:
        out = PyBytes_FromStringAndSize(NULL, size)
        while True:
            got = c_recv(fd, PyBytes_AS_STRING(out), <size_t>size, MSG_DONTWAIT)
            if got >= 0 or errno != EINTR:
                break
        if got < 0:
            _raise()
        return out if got == size else out[:got]
    while True:
        got = c_recv(fd, small, <size_t>size, MSG_DONTWAIT)
        if got >= 0 or errno != EINTR:
            break
    if got < 0:
        _raise()
    return PyBytes_FromStringAndSize(small, got)


def pread(int fd, Py_ssize_t size, long long offset):
    """os.pread(fd, size, offset)."""
    cdef ssize_t got
    cdef char small[STACK_BYTES]
    if size < 0:
        raise OSError(22, os.strerror(22))      # EINVAL, as os.pread() says
    if size > STACK_BYTES:
        out = PyBytes_FromStringAndSize(NULL, size)
        while True:
            got = c_pread(fd, PyBytes_AS_STRING(out), <size_t>size, offset)
            if got >= 0 or errno != EINTR:
                break
        if got < 0:
            _raise()
        return out if got == size else out[:got]
    while True:
        got = c_pread(fd, small, <size_t>size, offset)
        if got >= 0 or errno != EINTR:
            break
    if got < 0:
        _raise()
    return PyBytes_FromStringAndSize(small, got)


def pwrite(int fd, data, long long offset):
    """os.pwrite(fd, data, offset): bytes written."""
    cdef Py_buffer view
    cdef ssize_t done
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        while True:
            done = c_pwrite(fd, view.buf, <size_t>view.len, offset)
            if done >= 0 or errno != EINTR:
                break
    finally:
        PyBuffer_Release(&view)
    if done < 0:
        _raise()
    return done


def write(int fd, data):
    """os.write(fd, data): bytes written."""
    cdef Py_buffer view
    cdef ssize_t done
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        while True:
            done = c_write(fd, view.buf, <size_t>view.len)
            if done >= 0 or errno != EINTR:
                break
    finally:
        PyBuffer_Release(&view)
    if done < 0:
        _raise()
    return done
