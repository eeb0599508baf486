"""The operating-system calls the master's process logic makes, in one object.

Exports System and MASTER_SIGNALS.  Reads nothing.

As in supervisor, fork, waitpid, kill and the clock go through one object so
that unit tests can replace it with a fake and check spawn, reap and
throttle decisions without forking anything (tests/unit/test_master_*.py).

fork() blocks the signals the master handles while it forks, so that no
master handler runs in the child before the skeleton has put the default
dispositions back (the skeleton unblocks them); the parent unblocks at once.
"""

import os
import signal
import time

MASTER_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)


class System:
    """The real thing."""

    def fork(self):
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            raise
        if pid:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return pid

    def waitpid(self, pid, options):
        return os.waitpid(pid, options)

    def kill(self, pid, signum):
        os.kill(pid, signum)

    def monotonic(self):
        return time.monotonic()

    def exit_child(self, status):
        os._exit(status)
