"""Per-service state in the master: the children, their availability, the throttle.

Exports MasterService and Child.  Reads default_process_limit (maxproc "-"),
service_throttle_time and, for a threaded service, smtp_agent_threads (or
its lmtp mirror) with the service's -o overrides, through the Config handed
to it.

A MasterService is one master.cf entry the master runs.  It knows its
children (pid -> Child), which of them are available for a new client, its
generation (bumped at every reload: children of an older generation are
"retired" -- they finish their current client and exit, are still counted
against maxproc until reaped, and never count as available), whether it is
throttled, and whether it was ever used (for "N?" wakeup timers).  It owns no
operating-system resource itself: listen.py, spawn.py and master.py attach
the listen socket, the status channel and the lifeline to it.
"""

import dataclasses

from ..config.errors import ConfigError
from ..server import registry


@dataclasses.dataclass
class Child:
    pid: int
    generation: int
    threads: int = 1         # clients it serves at once (registry.THREADS)
    available: bool = True   # the master counts a new child as available (Postfix)
    use_count: int = 0       # clients served to completion (taken -> available reports)


class MasterService:
    def __init__(self, spec, config, title):
        self.children = {}
        self.generation = 1
        self.throttled_until = None
        self.used = False
        self.wakeup_at = None
        self.removed = False
        self.stopping = False
        # Operating-system resources, attached by the master.
        self.listen_socket = None
        self.socket_path = None
        self.status_socket = None        # the master's end of the status channel
        self.status_child_socket = None  # the children's end
        self.lifeline_read = None
        self.lifeline_write = None
        self.configure(spec, config, title)

    def configure(self, spec, config, title):
        """Take (new) master.cf and main.cf settings."""
        self.spec = spec
        self.name = spec.name
        self.title = title
        self.process_limit = spec.process_limit(config)   # 0 = no limit
        try:
            self.threads = registry.threads_wanted(spec.command,
                                                   config.with_overrides(spec.overrides))
        except ConfigError:
            self.threads = 1    # the child reads it too, fails at start and is throttled
        self.throttle_time = config.get("service_throttle_time")

    @property
    def key(self):
        return self.spec.key

    # --- accounting -------------------------------------------------------------
    def add_child(self, pid, threads=1):
        child = Child(pid, self.generation, threads)
        self.children[pid] = child
        self.used = True
        return child

    def remove_child(self, pid):
        return self.children.pop(pid, None)

    def total(self):
        return len(self.children)

    def available(self):
        """Children of the current generation that can take a client now."""
        return sum(1 for child in self.children.values()
                   if child.available and child.generation == self.generation)

    def slots(self):
        """Clients the children can serve at once: what maxproc limits."""
        return sum(child.threads for child in self.children.values())

    def below_limit(self):
        return self.process_limit == 0 or self.slots() < self.process_limit

    def next_child_threads(self):
        """Threads for the next child: the service's *_agent_threads, but never
        past maxproc (with maxproc 7 and 5 threads: a child of 5, then of 2)."""
        if self.process_limit == 0:
            return self.threads
        return max(1, min(self.threads, self.process_limit - self.slots()))

    def is_current(self, child):
        return child.generation == self.generation and not self.removed and not self.stopping

    # --- throttle ---------------------------------------------------------------
    def throttle(self, now):
        """Suspend spawning for service_throttle_time; False if already throttled."""
        if self.is_throttled(now):
            return False
        self.throttled_until = now + self.throttle_time
        return True

    def is_throttled(self, now):
        return self.throttled_until is not None and now < self.throttled_until

    def unthrottle_due(self, now):
        """Clear an expired throttle; True when one was cleared."""
        if self.throttled_until is not None and now >= self.throttled_until:
            self.throttled_until = None
            return True
        return False

    # --- reload -----------------------------------------------------------------
    def new_generation(self):
        """Retire the running children: from now on only new ones count."""
        self.generation += 1
        self.throttled_until = None
        return self.generation
