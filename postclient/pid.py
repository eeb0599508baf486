"""This process's id, kept in a variable.

os.getpid() is a system call (glibc stopped caching it), and a delivery
asks for the pid several times per message (its log line, its reply, the
kept-session checks).  The value is renewed in the child after every
os.fork().
"""

import os

_pid = os.getpid()


def _forked():
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def current():
    """os.getpid(), without the system call."""
    return _pid
