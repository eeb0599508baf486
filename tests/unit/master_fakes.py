"""A fake operating system for the master's process logic (no fork, no signals).

Exports FakeSystem, make_service(), exited() and killed_by().
"""

import errno
import os
import signal

from postclient.config.config import Config
from postclient.config.mastercf import parse_master_cf
from postclient.master.service import MasterService


class ChildRan(Exception):
    """Raised by FakeSystem.exit_child: the child branch ended (it must never return)."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


class FakeSystem:
    def __init__(self):
        self.now = 1000.0
        self.next_pid = 100
        self.forks = []
        self.fork_error = None
        self.fork_returns_child = False
        self.exits = []          # (pid, status) that waitpid hands out, in order
        self.live = set()
        self.killed = []
        self.waitpid_calls = 0

    def fork(self):
        if self.fork_error:
            raise OSError(self.fork_error, os.strerror(self.fork_error))
        if self.fork_returns_child:
            return 0
        self.next_pid += 1
        self.forks.append(self.next_pid)
        self.live.add(self.next_pid)
        return self.next_pid

    def waitpid(self, pid, options):
        assert pid == -1 and options == os.WNOHANG
        self.waitpid_calls += 1
        if self.exits:
            pid, status = self.exits.pop(0)
            self.live.discard(pid)
            return pid, status
        if not self.live:
            raise ChildProcessError(errno.ECHILD, "No child processes")
        return 0, 0

    def kill(self, pid, signum):
        self.killed.append((pid, signum))

    def monotonic(self):
        return self.now

    def exit_child(self, status):
        raise ChildRan(status)

    # --- helpers for tests ---
    def child_exits(self, pid, status):
        self.exits.append((pid, status))


def exited(code):
    """A waitpid status for exit(code)."""
    return (code & 0xFF) << 8


def killed_by(signum):
    return signum & 0x7F


KILLED = killed_by(signal.SIGKILL)


class FakeSocket:
    """A listen socket for avail.py (is there one?) and stop (close it)."""

    closed = False

    def close(self):
        self.closed = True

    def fileno(self):
        return -1


def make_service(line="echo unix - - n - 2 echo", main_cf=None):
    """A MasterService for one master.cf line, with fake resources attached."""
    [spec], _ = parse_master_cf(line + "\n", "master.cf")
    config = Config("/nonexistent", main_cf or {})
    service = MasterService(spec, config, f"postclient/{spec.name}")
    service.listen_socket = FakeSocket()
    service.socket_path = f"/queue/private/{spec.name}"
    return service


def settings(**values):
    """main.cf settings for Config(settings=...)."""
    from postclient.config.maincf import Setting
    return {name: Setting(name, str(value), "main.cf", index + 1)
            for index, (name, value) in enumerate(values.items())}
