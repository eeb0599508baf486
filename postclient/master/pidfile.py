"""$queue_directory/pid/master.pid: who the master is, and one master per queue.

Exports PidFile, AlreadyRunning, master_pid() and pid_file_path().  Reads
queue_directory (through its callers).

The master takes an exclusive fcntl lock on the whole file and writes its pid
in it (Postfix's format: ten columns and a newline).  The lock, not the
file's existence, says whether a master runs: it vanishes with the process,
whatever way it dies, so a stale file never blocks a start.  Children do not
inherit fcntl locks.  ``postclient status``/``stop``/``reload`` ask the
kernel which process holds the lock (F_GETLK), so they find the real master
even if the file's contents were damaged; the file is left in place at exit,
as Postfix does (removing a lock file races with the next start).
"""

import errno
import fcntl
import os
import struct

# struct flock on Linux (64-bit off_t): short l_type, short l_whence,
# off_t l_start, off_t l_len, pid_t l_pid, padding.
_FLOCK = struct.Struct("hhqqi4x")


def pid_file_path(queue_directory):
    return os.path.join(queue_directory, "pid", "master.pid")


class AlreadyRunning(Exception):
    def __init__(self, path, pid):
        self.path = path
        self.pid = pid
        who = f" as pid {pid}" if pid else ""
        super().__init__(f"the master is already running{who} (lock on {path})")


class PidFile:
    def __init__(self, path):
        self.path = path
        self.fd = None

    def acquire(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise AlreadyRunning(self.path, master_pid(self.path)) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%10d\n" % os.getpid(), 0)
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _read_pid(fd):
    try:
        return int(os.pread(fd, 64, 0).strip() or 0) or None
    except ValueError:
        return None


def master_pid(path):
    """The pid of the process holding the lock on ``path``, or None when no master runs."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
            lock_type, _whence, _start, _length, pid = _FLOCK.unpack(
                fcntl.fcntl(fd, fcntl.F_GETLK, query))
        except OSError:
            # No F_GETLK here: a shared lock we can take means nobody holds it.
            try:
                fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return _read_pid(fd) or -1
            return None
        if lock_type == fcntl.F_UNLCK:
            return None
        return pid or _read_pid(fd) or -1
    finally:
        os.close(fd)
