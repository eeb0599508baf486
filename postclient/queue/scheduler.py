"""Which delivery to start next: per-destination queues, concurrency and suspension.

Exports Job, Batch, Destination and Scheduler.  Pure logic (no I/O, no clock of
its own: callers pass ``now``), so that the queue manager's decisions can be
tested directly.  Reads, through the limits the queue manager passes:
initial_destination_concurrency, <transport>_destination_concurrency_limit
(default_destination_concurrency_limit), <transport>_destination_recipient_limit
(default_destination_recipient_limit), <transport>_delivery_batch_limit
(default_delivery_batch_limit), min backoff and transport_retry_time.

Like Postfix's qmgr: a destination is (transport, next-hop); it starts with
initial_destination_concurrency parallel deliveries and gains one per
successful delivery up to its limit, and loses one per failed one (never
below one).  A delivery that reports the destination "down" suspends it:
its waiting jobs are handed back to be deferred with "delivery temporarily
suspended: <reason>", and new ones are deferred the same way until the
suspension ends.  A delivery agent that crashes throttles its whole
transport for transport_retry_time in the same way.  The "use/store cached
connection" flags are set while a destination has a backlog.

Batches (postclient's own; Postfix sends one message per request).  A
concurrency slot is one delivery request, and a request may carry several
jobs (messages) for its destination, which the agent delivers in turn over
one session.  While a destination has more waiting jobs than free slots, each
request takes its share of the backlog, at most the transport's batch limit;
without a backlog every request carries one job, exactly as in Postfix.  The
concurrency window still counts requests (parallel sessions), and grows or
shrinks once per request.
"""

import collections
import dataclasses


@dataclasses.dataclass(eq=False)
class Job:
    """Some recipients of one message, to one destination (a Batch carries Jobs)."""

    message: object          # the queue manager's ActiveMessage
    transport: str
    nexthop: str
    offsets: list

    @property
    def key(self):
        return (self.transport, self.nexthop)


@dataclasses.dataclass(eq=False)
class Batch:
    """One delivery request: jobs for one destination, delivered in turn by one agent."""

    key: tuple
    jobs: list
    cache_flags: bool = False

    @property
    def transport(self):
        return self.key[0]

    @property
    def nexthop(self):
        return self.key[1]


class Destination:
    def __init__(self, key, initial, limit):
        self.key = key
        self.todo = collections.deque()
        self.busy = 0
        self.window = max(1, min(initial, limit)) if limit else max(1, initial)
        self.limit = limit            # 0 = no limit
        self.suspended_until = 0.0
        self.reason = None

    def suspended(self, now):
        return now < self.suspended_until

    def success(self):
        if not self.limit or self.window < self.limit:
            self.window += 1

    def failure(self):
        self.window = max(1, self.window - 1)


class Scheduler:
    def __init__(self, initial_concurrency, concurrency_limit, recipient_limit,
                 batch_limit=lambda transport: 1):
        """``concurrency_limit``, ``recipient_limit`` and ``batch_limit``: callables
        transport -> int."""
        self.initial = initial_concurrency
        self.concurrency_limit = concurrency_limit
        self.recipient_limit = recipient_limit
        self.batch_limit = batch_limit
        self.destinations = {}
        self.transport_throttled = {}      # transport -> (until, reason)

    def destination(self, key):
        if key not in self.destinations:
            self.destinations[key] = Destination(key, self.initial, self.concurrency_limit(key[0]))
        return self.destinations[key]

    def split(self, message, transport, nexthop, offsets):
        """Jobs for these recipients, at most recipient_limit each."""
        limit = self.recipient_limit(transport) or len(offsets)
        return [Job(message, transport, nexthop, offsets[i:i + limit])
                for i in range(0, len(offsets), limit)]

    def blocked(self, job, now):
        """The reason a new job cannot be tried now (suspension, throttle), or None."""
        until, reason = self.transport_throttled.get(job.transport, (0.0, None))
        if now < until:
            return reason
        destination = self.destination(job.key)
        if destination.suspended(now):
            return destination.reason
        return None

    def add(self, job):
        self.destination(job.key).todo.append(job)

    def ready(self, now):
        """Batches to start now, each counted as busy; in destination order, FIFO within."""
        started = []
        for destination in self.destinations.values():
            if destination.suspended(now) or now < self.transport_throttled.get(destination.key[0], (0,))[0]:
                continue
            free = destination.window - destination.busy
            if free <= 0 or not destination.todo:
                continue
            limit = max(1, self.batch_limit(destination.key[0]) or 1)
            size = min(limit, max(1, -(-len(destination.todo) // free)))   # the backlog's share
            while destination.todo and destination.busy < destination.window:
                jobs = [destination.todo.popleft() for _ in range(min(size, len(destination.todo)))]
                cache_flags = bool(destination.todo) or destination.busy > 0
                destination.busy += 1
                started.append(Batch(destination.key, jobs, cache_flags))
        return started

    def finished(self, batch, ok):
        """A request (Batch) is back; ``ok`` grows the window, else it shrinks."""
        destination = self.destination(batch.key)
        destination.busy -= 1
        if ok:
            destination.success()
        else:
            destination.failure()

    def suspend(self, key, reason, until):
        """Suspend a destination; returns its waiting jobs (to be deferred)."""
        destination = self.destination(key)
        destination.suspended_until = until
        destination.reason = reason
        waiting = list(destination.todo)
        destination.todo.clear()
        return waiting

    def throttle_transport(self, transport, reason, until):
        """Throttle a transport (its agent crashed); returns its waiting jobs."""
        self.transport_throttled[transport] = (until, reason)
        waiting = []
        for destination in self.destinations.values():
            if destination.key[0] == transport:
                waiting.extend(destination.todo)
                destination.todo.clear()
        return waiting

    def revive(self):
        """End every suspension and transport throttle (postclient queue -f, as
        Postfix's flush also revives dead destinations)."""
        self.transport_throttled.clear()
        for destination in self.destinations.values():
            destination.suspended_until = 0.0
            destination.reason = None

    def idle(self):
        return all(not d.todo and not d.busy for d in self.destinations.values())

    def forget_idle(self, now):
        """Drop destinations with nothing to do and no suspension (bounded memory)."""
        for key in [k for k, d in self.destinations.items()
                    if not d.todo and not d.busy and not d.suspended(now)]:
            del self.destinations[key]
