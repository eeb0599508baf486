"""Detaching from the terminal for ``postclient start``.

Exports run_detached() and Readiness.  Reads nothing (the caller says which
standard streams to keep).

Classic double fork: the command forks; the first child calls setsid() and
forks again, so the daemon is neither a session leader nor a child of the
shell; the daemon's standard input, output and error go to /dev/null unless
maillog_file is /dev/stdout or /dev/stderr, which are kept, and it closes
every other descriptor inherited from its caller.  The command does
not exit at once: it waits on a pipe until the master reports "ready"
(sockets up, pid file locked) or a failure with its exit status and
message, so ``postclient start`` exits 0 only once the relay works, and 75
or 78 with the reason otherwise.
"""

import os


class Readiness:
    """The daemon's end of the start-up pipe: report once, then close."""

    def __init__(self, fd):
        self.fd = fd

    def report(self, code, message=""):
        if self.fd is None:
            return
        try:
            os.write(self.fd, f"{code} {message}".encode("utf-8", "replace")[:4000])
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def ready(self):
        self.report(0)


def _max_fd():
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 1024


def _read_all(fd):
    chunks = []
    while True:
        data = os.read(fd, 4096)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _redirect_standard_streams(keep_stdout, keep_stderr):
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    if not keep_stdout:
        os.dup2(null, 1)
    if not keep_stderr:
        os.dup2(null, 2)
    if null > 2:
        os.close(null)


def run_detached(main, keep_stdout=False, keep_stderr=False):
    """Run ``main(readiness) -> exit status`` as a daemon.

    Returns (status, message) in the calling process once the daemon said
    ready or failed (or died without a word); never returns in the daemon.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        os.waitpid(pid, 0)
        reply = _read_all(read_end).decode("utf-8", "replace")
        os.close(read_end)
        code, _, message = reply.partition(" ")
        if not code.isdigit():
            return 1, "the master exited before it was ready (see the log)"
        return int(code), message
    status = 1
    try:
        os.close(read_end)
        os.setsid()
        if os.fork():
            os._exit(0)
        _redirect_standard_streams(keep_stdout, keep_stderr)
        # Descriptors the command inherited from its caller are not the daemon's.
        os.closerange(3, write_end)
        os.closerange(write_end + 1, _max_fd())
        readiness = Readiness(write_end)
        try:
            status = main(readiness)
        finally:
            readiness.report(status, "the master stopped before it was ready (see the log)")
    finally:
        os._exit(status)
