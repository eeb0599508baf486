"""Birth and death of children: fork without exec, reap, throttle a bad start.

Exports Spawner and describe_exit().  Reads nothing itself (the throttle
time is in each MasterService).

spawn() forks through the System object; the child branch runs the
``child_main`` callable the master gives (the skeleton, never returning), so
the parent does nothing after fork but bookkeeping.  A fork failure
throttles the service.  reap() collects every finished child with
waitpid(-1, WNOHANG) until none is left, tolerating pids it does not know.
A child that exits abnormally (non-zero status or a signal) before it served
a single client tells of a structural problem -- a broken command, a bad
configuration, no resources -- so its service is throttled for
service_throttle_time instead of being respawned at once (Postfix's
master_spawn.c): no fork loop.  Retired children (older generation, removed
service, master stopping) never throttle.
"""

import logging
import os

from ..log import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)


def describe_exit(status):
    """(normal, text) for a waitpid status."""
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        return code == 0, f"exit status {code}"
    if os.WIFSIGNALED(status):
        return False, f"killed by signal {os.WTERMSIG(status)}"
    return False, f"status {status:#x}"


class Spawner:
    def __init__(self, system, child_main):
        self.system = system
        self.child_main = child_main
        self.owner = {}   # pid -> MasterService, for every live child

    def spawn(self, service, now):
        """Fork one child for ``service``; its pid, or None when fork failed."""
        threads = service.next_child_threads()
        try:
            pid = self.system.fork()
        except OSError as error:
            logger.warning("%s: fork: %s -- throttling", service.title, error.strerror or error)
            service.throttle(now)
            return None
        if pid == 0:
            try:
                self.child_main(service)
            finally:
                self.system.exit_child(1)   # the skeleton never returns; never run master code
        service.add_child(pid, threads)
        self.owner[pid] = service
        return pid

    def reap(self, now):
        """Collect every finished child; returns [(service, child, status)]."""
        reaped = []
        while True:
            try:
                pid, status = self.system.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid == 0:
                break
            service = self.owner.pop(pid, None)
            if service is None:
                logger.info("reaped unknown process pid %d", pid)
                continue
            child = service.children.get(pid)
            self.child_exited(service, child, status, now)
            reaped.append((service, child, status))
        return reaped

    def child_exited(self, service, child, status, now):
        normal, text = describe_exit(status)
        if not normal:
            logger.warning("process %s pid %d %s", service.title, child.pid, text)
            if child.use_count == 0 and service.is_current(child) and service.throttle(now):
                logger.warning("%s: bad command startup -- throttling", service.title)
        service.remove_child(child.pid)

    def live_children(self):
        return list(self.owner.items())

    def kill_all(self, signum):
        for pid in list(self.owner):
            try:
                self.system.kill(pid, signum)
            except ProcessLookupError:
                pass
