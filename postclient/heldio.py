"""System calls that cannot wait, made without releasing the GIL.

Exports send(), recv(), pread(), pwrite(), write() and IMPLEMENTATION
("cython" or "python").

Why: a delivery agent serves several sessions in threads of one process
(smtp_agent_threads).  Python releases the GIL around every system call,
and when another thread is waiting for it, each release and each taking it
back is a futex wake and a context switch: with 5 threads an agent used
40-60% more CPU per message than with one (bench/RESULTS.md, "Session 8").
For a call that cannot wait - send and recv on a non-blocking socket, pread,
pwrite and write on a queue file or the mail log - the release buys
nothing, so the compiled twin (pyx/_heldio_c.pyx) keeps the GIL.  A call
that waits (poll, connect, fsync, a lock) still releases it.

The pure-Python twin below is the same calls through the os and socket
modules; it is used when POSTCLIENT_NO_EXTENSIONS=1 or when the compiled
module cannot be imported.  Both raise what the os and socket modules raise.
"""

import os

__all__ = ["send", "recv", "pread", "pwrite", "write", "IMPLEMENTATION"]

_import_error = None        # why the compiled module is not in use (None when it is)


def _send(sock, data):
    return sock.send(data)


def _recv(sock, size):
    return sock.recv(size)


if os.environ.get("POSTCLIENT_NO_EXTENSIONS", "") not in ("", "0"):
    send, recv, pread, pwrite, write = _send, _recv, os.pread, os.pwrite, os.write
    IMPLEMENTATION = "python"
    _import_error = "disabled by POSTCLIENT_NO_EXTENSIONS"
else:
    try:
        from postclient._heldio_c import pread, pwrite, recv, send, write
        IMPLEMENTATION = "cython"
    except ImportError as error:
        send, recv, pread, pwrite, write = _send, _recv, os.pread, os.pwrite, os.write
        IMPLEMENTATION = "python"
        _import_error = f"{type(error).__name__}: {error}"
