"""The operating-system calls the master's process logic makes, in one object.

Exports System and MASTER_SIGNALS.  Reads nothing.

As in supervisor, fork, waitpid, kill and the clock go through one object so
that unit tests can replace it with a fake and check spawn, reap and
throttle decisions without forking anything (tests/unit/test_master_*.py).

fork() blocks the signals the master handles while it forks, so that no
master handler runs in the child before the skeleton has put the default
dispositions back (the skeleton unblocks them); the parent unblocks at once.
It also freezes the garbage collector's view of the master's objects for the
child (gc.freeze(), as the gc documentation advises before a fork without
exec): a child's collections then never walk the modules and tables it
inherited, which would write to - and so copy - every page that holds them.
The parent unfreezes at once, so its own garbage is still collected.
"""

import gc
import os
import signal
import time

MASTER_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)


class System:
    """The real thing."""

    def fork(self):
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        gc.freeze()
        try:
            pid = os.fork()
        except OSError:
            gc.unfreeze()
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            raise
        if pid:
            gc.unfreeze()
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
