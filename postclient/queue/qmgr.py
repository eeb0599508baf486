"""The queue manager: moves mail from incoming/ through active/ to its destinations.

Exports run(context) (the "multi" service the master runs, one process),
QueueManager, PROTOCOL and VERSION.  Reads queue_directory, ipc_timeout,
queue_run_delay, minimal_backoff_time, maximal_backoff_time,
maximal_queue_lifetime, bounce_queue_lifetime, delay_warning_time,
transport_retry_time, qmgr_message_active_limit, qmgr_priority_boost,
initial_destination_concurrency, *_destination_concurrency_limit,
*_destination_recipient_limit, *_delivery_batch_limit, and what routing.py
and notices.py read.

One event loop (selectors) on the public qmgr socket, the master's lifeline,
a pipe that the file worker's threads use to report, and the connections of
the delivery requests in flight: each request is an exchange with a delivery
agent on a non-blocking socket, moved on by the loop (qmgr_requests.py),
with no thread of its own.  Moving files
into active/, reading them and removing delivered ones is done by a file
worker's threads (qmgr_files.py), so that the loop never waits for the disk
while agents wait for work.

Life of a message (postfix qmgr(8)):
  - incoming/ (new mail, woken by sendmail/pickup) and deferred/ (when the
    file's mtime - its next attempt time - has come) are moved to active/,
    up to qmgr_message_active_limit messages;
  - each pending recipient is routed to (transport, next-hop) and requests go
    to private/<transport> under the scheduler's concurrency limits, several
    messages per request while a destination has a backlog (scheduler.py);
  - the agents mark recipients done in the queue file and write bounce/defer
    /trace records; the queue file is the truth, so after the last request a
    message is re-read (unless it was a first pass whose recipients the
    agents all reported sent: they reply after their done marks): nothing
    pending -> notices, then removed; else
    bounces so far are returned, a delay warning may go out, and the message
    moves to deferred/ with mtime now + clamp(age, minimal_backoff_time,
    maximal_backoff_time) - or, past maximal_queue_lifetime
    (bounce_queue_lifetime for the null sender), the rest is returned as
    expired.
Scans of incoming/ and deferred/ go a step per pass of the loop (qmgr_scan.py),
so a large queue never holds it.
At start, messages left in active/ (a crash) go back to incoming/: done
recipients are never sent again (security rule 13).  Agents hold a shared
lock on a queue file while they deliver it; a message whose file is locked
when it is activated (an agent of a crashed queue manager is still at work)
is deferred instead of being sent a second time.
"""

import collections
import logging
import os
import selectors
import time

from .. import ipc
from ..log import line as log_line
from ..master import wakeup
from ..smtp import agent_client
from . import queuefile, statuslog
from .notices import Notices
from .qmgr_files import FileWorker, move
from .qmgr_requests import Requests
from .qmgr_scan import STEP_ENTRIES, QueueScan
from .routing import Router
from .scheduler import Scheduler

PROTOCOL = "qmgr"
VERSION = 1
ACTIVATION_CHUNK = 50       # loaded files routed between two looks at the event loop
LOAD_AHEAD = 200            # files handed to the file worker and not yet routed
CANDIDATE_LIMIT = 1000      # offered files waiting for room; scans pause beyond it
log = logging.getLogger("postclient.qmgr")


class ActiveMessage:
    def __init__(self, queued, path):
        self.queued = queued
        self.path = path
        self.outstanding = 0
        self.cancelled = False
        # A first pass whose requests all came back with every recipient sent or
        # done: nothing is pending and nothing bounced, so finish() need not
        # re-read the file (the agents reply only after their done marks).
        self.clean = True

    @property
    def queue_id(self):
        return self.queued.queue_id


class QueueManager:
    def __init__(self, config, queue_directory, listen_socket=None, lifeline_fd=None):
        self.config = config
        self.queue_directory = queue_directory
        self.listen_socket = listen_socket
        self.lifeline_fd = lifeline_fd
        self._limits = {}
        self.router = Router(config)
        self.notices = Notices(config, queue_directory)
        self.scheduler = Scheduler(
            config.get("initial_destination_concurrency"),
            lambda transport: self._per_transport(transport, "destination_concurrency_limit"),
            lambda transport: self._per_transport(transport, "destination_recipient_limit"),
            lambda transport: self._per_transport(transport, "delivery_batch_limit"))
        self.active = {}                      # queue id -> ActiveMessage
        self.selector = selectors.DefaultSelector()
        self.requests = Requests(self.selector)     # delivery requests in flight
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        self.files = FileWorker(queue_directory, config.get("minimal_backoff_time"), self._wake)
        self.loading = 0                        # files handed to the worker, not yet back
        self.stopping = False
        self.candidates = collections.deque()   # (source queue, queue id) to activate
        self.candidate_ids = set()              # the same pairs, for lookups
        self.incoming_scan = QueueScan(os.path.join(queue_directory, "incoming"), ordered=True)
        self.deferred_scan = QueueScan(os.path.join(queue_directory, "deferred"),
                                       concerns=self._concerns_sites,
                                       offered=self._offered_from_deferred)
        self.next_deferred_scan = 0.0

    def _wake(self):
        """Wake the loop (from any thread); a full pipe is already a wakeup."""
        try:
            os.write(self.wake_write, b"x")
        except BlockingIOError:
            pass

    def _per_transport(self, transport, suffix):
        """<transport>_<suffix>, else default_<suffix> (a Config never changes: cached)."""
        name = f"{transport}_{suffix}"
        if name not in self._limits:
            try:
                value = self.config.get(name) if self.config.raw(name) else None
            except Exception:
                value = None
            self._limits[name] = value if isinstance(value, int) else self.config.get(f"default_{suffix}")
        return self._limits[name]

    def path(self, queue_name, queue_id=""):
        return os.path.join(self.queue_directory, queue_name, queue_id)

    # --- moving files -----------------------------------------------------------------
    def _move(self, queue_id, source, target, mtime=None):
        """qmgr_files.move() in this queue directory."""
        return move(self.queue_directory, queue_id, source, target, mtime)

    def recover_active(self):
        """Messages left in active/ by a crash go back to incoming/."""
        for queue_id in self._listing("active"):
            self._move(queue_id, "active", "incoming")

    def _listing(self, queue_name):
        directory = os.path.join(self.queue_directory, queue_name)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        except OSError as error:
            log.error("cannot read queue directory %s: %s; what it holds stays there until "
                      "the next queue manager starts", directory, error.strerror or error)
            return []
        return sorted(n for n in names if not n.startswith("."))

    # --- scanning ---------------------------------------------------------------------
    # A scan request only starts a scan (qmgr_scan.py); the loop takes a step of each
    # running scan per pass while fewer than CANDIDATE_LIMIT files wait, and activates
    # ACTIVATION_CHUNK files at a time between its other work, so deliveries start
    # while a large queue is read and a large deferred/ never holds the loop.
    def scan_incoming(self):
        self.incoming_scan.request(everything=True)

    def scan_deferred(self):
        """Offer the deferred mail that is due."""
        self.deferred_scan.request(due=True)

    def scanning(self):
        """A scan has more to offer, and there is room for its candidates."""
        return (len(self.candidates) < CANDIDATE_LIMIT
                and (self.incoming_scan.running or self.deferred_scan.running))

    def scan_step(self, now):
        """One step of each running scan (new mail first), if candidates have room."""
        for source, scan in (("incoming", self.incoming_scan), ("deferred", self.deferred_scan)):
            room = CANDIDATE_LIMIT - len(self.candidates)
            if room > 0:
                for queue_id in scan.step(now, entries=min(room, STEP_ENTRIES)):
                    self._offer(source, queue_id)

    def _offer(self, source, queue_id):
        # by (queue, id): a file offered from deferred/ and then requeued into
        # incoming/ is offered again from there (the stale offer finds nothing)
        if not self._taken(source, queue_id):
            self.candidate_ids.add((source, queue_id))
            self.candidates.append((source, queue_id))

    def _taken(self, source, queue_id):
        """Already a candidate from ``source``, or active: _offer() drops it."""
        return (source, queue_id) in self.candidate_ids or queue_id in self.active

    def _offered_from_deferred(self, queue_id):
        return self._taken("deferred", queue_id)

    def activate_candidates(self):
        """Hand offered files to the file worker while there is room (LOAD_AHEAD at most)."""
        while (self.candidates and self._room() and self.loading < LOAD_AHEAD):
            candidate = self.candidates.popleft()
            self.candidate_ids.discard(candidate)
            source, queue_id = candidate
            if queue_id not in self.active:
                self.files.load(source, queue_id)
                self.loading += 1

    def take_loaded(self):
        """Route what the file worker loaded (ACTIVATION_CHUNK at a time)."""
        for loaded in self.files.results(ACTIVATION_CHUNK):
            if loaded.outcome == "requeued":
                self.scan_incoming()    # a removal found the file gone: postclient super moved it
                continue
            self.loading -= 1
            if loaded.outcome == "ok":
                self.activate(loaded.source, loaded.queued)

    def flush(self, site=None):
        """postclient queue -f / -s: deferred mail (for the site) is due now.

        A full flush also revives suspended destinations and throttled
        transports, so that mail to a server that is back goes out at once.
        """
        if site is None:
            self.scheduler.revive()
            self.deferred_scan.request(everything=True)
        else:
            self.deferred_scan.request(sites=[site])

    def _concerns_sites(self, path, sites):
        """Whether a pending recipient of the file goes to one of ``sites`` (lower case):
        its domain or its next-hop."""
        try:
            queued = queuefile.read_queue_file(path)
        except (OSError, queuefile.CorruptQueueFile):
            return False
        for recipient in queued.pending():
            domain = recipient.address.rpartition("@")[2].lower()
            if domain in sites or self.router.route(recipient.address).nexthop.lower() in sites:
                return True
        return False

    def _room(self):
        return len(self.active) + self.loading < self.config.get("qmgr_message_active_limit")

    # --- activation -------------------------------------------------------------------
    def activate(self, source, queued):
        """A message the file worker moved into active/ and read: route and schedule it."""
        queue_id, path = queued.queue_id, queued.path
        message = ActiveMessage(queued, path)
        self.active[queue_id] = message
        pending = queued.pending()
        # An earlier pass (or a crashed queue manager) may have left bounce
        # records for done recipients: only a first pass may skip the re-read.
        message.clean = len(pending) == len(queued.recipients)
        if source == "incoming":
            log_line(log, f"{queue_id}: from=<{queued.sender}>, size={queued.content_size}, "
                          f"nrcpt={len(pending)} (queue active)")
        routes = {}
        for recipient in pending:
            try:
                route = self.router.route(recipient.address)
            except Exception as error:      # a table that cannot be read: try again later
                self._defer_recipients(message, [recipient], "4.3.0",
                                       f"transport_maps lookup failure: {error}")
                continue
            routes.setdefault((route.transport, route.nexthop), []).append(recipient.offset)
        now = time.time()
        for (transport, nexthop), offsets in routes.items():
            for job in self.scheduler.split(message, transport, nexthop, offsets):
                reason = self.scheduler.blocked(job, now)
                if reason is not None:
                    self._defer_job(job, reason)
                else:
                    message.outstanding += 1
                    self.scheduler.add(job)
        if message.outstanding == 0:
            self.finish(message)

    # --- deliveries -------------------------------------------------------------------
    def start_deliveries(self):
        for batch in self.scheduler.ready(time.time()):
            self._deliver(batch)

    def _deliver(self, batch):
        """Start the request for ``batch``; its end comes back through handle_results()."""
        socket_path = self.path("private", batch.transport)
        flags = {"use_cached_connection": batch.cache_flags, "store_connection": batch.cache_flags}
        if len(batch.jobs) == 1:
            (job,) = batch.jobs
            request = agent_client.single_request("active", job.message.queue_id, batch.nexthop,
                                                  job.offsets, **flags)
            check = lambda reply: [agent_client.single_reply(reply, socket_path)]  # noqa: E731
        else:
            count = len(batch.jobs)
            request = agent_client.batch_request(
                batch.nexthop, [("active", job.message.queue_id, job.offsets) for job in batch.jobs],
                **flags)
            check = lambda reply: agent_client.batch_replies(reply, socket_path, count)  # noqa: E731
        self.requests.start(batch, socket_path, request, check,
                            time.monotonic() + self.config.get("ipc_timeout"))

    def handle_results(self):
        while self.requests.done:
            self._batch_done(*self.requests.done.popleft())

    def _batch_done(self, batch, replies, error):
        now = time.time()
        if error is not None:
            self.scheduler.finished(batch, ok=False)
            reason = ("4.3.0", f"mail transport unavailable: {error}")
            log.warning("%s: %s transport problem: %s", batch.jobs[0].message.queue_id,
                        batch.transport, error)
            for job in batch.jobs:
                self._defer_job(job, reason)
            until = now + self.config.get("transport_retry_time")
            for waiting in self.scheduler.throttle_transport(batch.transport, reason, until):
                self._defer_job(waiting, reason)
                self._job_finished(waiting.message)
            for job in batch.jobs:
                self._job_finished(job.message)
            return
        down = next((r["destination_down"] for r in replies
                     if r.get("status") == "ok" and r.get("destination_down")), None)
        self.scheduler.finished(batch, ok=down is None and all(
            r.get("status") in ("ok", "skipped") for r in replies))
        if down is None and not self.stopping:
            # The agent is free: give it (or another) the next batch before the
            # book-keeping below, so that agents never wait for that.
            self.start_deliveries()
        skipped = []
        for job, reply in zip(batch.jobs, replies):
            status = reply.get("status")
            if status == "corrupt":
                job.message.cancelled = True
            elif status == "skipped":
                skipped.append(job)
                continue
            elif status != "ok":
                self._defer_job(job, ("4.3.0", f"mail system configuration error: {reply.get('reason')}"))
            elif not all(r.get("status") in ("sent", "done") for r in reply["results"]) \
                    or len(reply["results"]) < len(job.offsets):
                job.message.clean = False
            self._job_finished(job.message)
        if down is not None:
            reason = (down["dsn"], f"delivery temporarily suspended: {down['text']}")
            until = now + self.config.get("minimal_backoff_time")
            for waiting in skipped + self.scheduler.suspend(batch.key, reason, until):
                self._defer_job(waiting, reason)
                self._job_finished(waiting.message)
        else:
            # Not attempted because the agent is stopping (reload, master gone):
            # the jobs wait for another agent, as if never sent.  If this queue
            # manager stops too, they stay in active/ for the next one.
            for job in skipped:
                self.scheduler.add(job)

    def _job_finished(self, message):
        message.outstanding -= 1
        if message.outstanding == 0:
            self.finish(message)

    def _defer_job(self, job, reason):
        """Defer a job's recipients without delivering (suspension, agent trouble)."""
        by_offset = {r.offset: r for r in job.message.queued.recipients}
        self._defer_recipients(job.message, [by_offset[o] for o in job.offsets if o in by_offset],
                               *reason)

    def _defer_recipients(self, message, recipients, dsn, text):
        message.clean = False
        now = time.time()
        for recipient in recipients:
            record = statuslog.StatusRecord(
                recipient=recipient.address, original=recipient.original, orcpt=recipient.orcpt,
                notify=recipient.notify, offset=recipient.offset, status="deferred", dsn=dsn,
                text=text, time=now)
            try:
                statuslog.append_status(self.queue_directory, "defer", message.queue_id, record)
            except OSError as error:
                log.warning("%s: cannot write defer log: %s", message.queue_id, error)
            delay = f"{now - message.queued.arrival_time:.2f}".rstrip("0").rstrip(".")
            log.info("%s: to=<%s>, relay=none, delay=%s, delays=%s/0/0/0, dsn=%s, status=deferred (%s)",
                     message.queue_id, recipient.address, delay, delay, dsn, text)

    # --- the end of an active pass ------------------------------------------------------
    def finish(self, message):
        """All requests for the message are back: remove, return or defer it."""
        del self.active[message.queue_id]
        if message.cancelled:
            return
        if message.clean:
            queued = message.queued     # nothing pending or bounced: as activated
        else:
            try:
                queued = queuefile.read_queue_file(message.path)     # the truth
            except FileNotFoundError:
                # deleted or moved meanwhile (postclient super -d/-h/-r): a requeued
                # message is waiting in incoming/
                self.scan_incoming()
                return
            except queuefile.CorruptQueueFile as error:
                queuefile.move_to_corrupt(self.queue_directory, message.path, str(error))
                return
        queue_id = queued.queue_id
        pending = [] if message.clean else queued.pending()
        now = time.time()
        age = now - queued.arrival_time
        lifetime = self.config.get("maximal_queue_lifetime" if queued.sender else "bounce_queue_lifetime")
        if pending and age >= lifetime:
            self._expire(queued, pending, now)
            pending = []
        notices = []
        bounced = [] if message.clean else statuslog.read_status(self.queue_directory, "bounce", queue_id)
        if bounced:
            notices += self.notices.bounce(queued, bounced)
            self._remove_log("bounce", queue_id)
        if not pending:
            if not message.clean or any("SUCCESS" in r.notify.upper() for r in queued.recipients):
                traced = statuslog.read_status(self.queue_directory, "trace", queue_id)
                if traced:
                    notices += self.notices.success(queued, traced)
            self.files.remove(queue_id)     # unlink, status logs, "removed" (qmgr_files.py)
        else:
            notices += self._maybe_warn(queued, pending, age)
            backoff = min(max(age, self.config.get("minimal_backoff_time")),
                          self.config.get("maximal_backoff_time"))
            self._move(queue_id, "active", "deferred", mtime=now + backoff)
        if notices:
            self.scan_incoming()            # the notices just queued

    def _remove_log(self, kind, queue_id):
        try:
            os.unlink(os.path.join(self.queue_directory, kind, queue_id))
        except FileNotFoundError:
            pass

    def _latest_defer_records(self, queue_id):
        latest = {}
        for record in statuslog.read_status(self.queue_directory, "defer", queue_id):
            latest[record.offset if record.offset >= 0 else record.recipient] = record
        return latest

    def _expire(self, queued, pending, now):
        """Past its lifetime: every pending recipient is returned with its last reason."""
        latest = self._latest_defer_records(queued.queue_id)
        for recipient in pending:
            record = latest.get(recipient.offset) or statuslog.StatusRecord(
                recipient=recipient.address, dsn="4.0.0", text="message expired")
            record.status = "bounced"
            record.offset = recipient.offset
            record.original, record.orcpt, record.notify = recipient.original, recipient.orcpt, recipient.notify
            statuslog.append_status(self.queue_directory, "bounce", queued.queue_id, record)
            queuefile.mark_done(queued.path, recipient.offset)
        log.info("%s: from=<%s>, status=expired, returned to sender", queued.queue_id, queued.sender)

    def _maybe_warn(self, queued, pending, age):
        warn_after = self.config.get("delay_warning_time")
        marker = os.path.join(self.queue_directory, "defer", queued.queue_id + statuslog.WARNED_SUFFIX)
        if not warn_after or age < warn_after or os.path.exists(marker):
            return []
        latest = self._latest_defer_records(queued.queue_id)
        records = [latest[r.offset] for r in pending if r.offset in latest]
        notices = self.notices.delay(queued, records, age) if records else []
        with open(marker, "w"):
            pass
        return notices

    # --- requests on the qmgr socket ------------------------------------------------------
    def read_request(self, conn):
        """The request of one client on the qmgr socket, or None."""
        deadline = time.monotonic() + 10
        try:
            ipc.announce(conn, PROTOCOL, VERSION, deadline)
        except ipc.IpcError:
            pass        # a wakeup may send its request and close without reading this
        try:
            return ipc.receive_message(conn, deadline)
        except ipc.IpcError:
            return None

    def handle_request(self, request):
        kind = request.get("request")
        if kind == "wakeup":
            self.scan_incoming()
            if request.get("deferred") is True:     # postclient super -H: released mail is due
                self.scan_deferred()
        elif kind == "flush":
            self.scan_incoming()
            self.flush()
        elif kind == "flush_site" and isinstance(request.get("site"), str):
            self.flush(request["site"])
        else:
            log.warning("unknown qmgr request %r", kind)

    # --- the loop ---------------------------------------------------------------------
    def run(self, report_taken=None, report_available=None):
        self.recover_active()
        self.files.start()
        try:
            self._loop(report_taken, report_available)
        finally:
            self.files.stop()           # removals already decided are carried out
            self.requests.close()       # only after an error: the loop waits for them
            self.selector.close()
        if self.active or self.candidates or self.incoming_scan.running \
                or self.deferred_scan.running:
            self._wake_successor()

    def _wake_successor(self):
        """Mail is left in active/ (or waiting): make the master start the next
        queue manager now.  After a reload the master's own wakeup may have
        reached this one while it was stopping; the next would come only
        with new mail or the wakeup timer (300 s).  A connection to our public
        socket is what makes the master spawn one (once this process is gone)."""
        try:
            path = self.listen_socket.getsockname() if self.listen_socket is not None else None
        except OSError:
            path = None
        if path:
            wakeup.send_wakeup(path)    # fails when the master is gone: its next start recovers

    def _loop(self, report_taken, report_available):
        self.scan_incoming()
        self.next_deferred_scan = 0.0
        selector = self.selector
        selector.register(self.wake_read, selectors.EVENT_READ, "wake")
        if self.listen_socket is not None:
            self.listen_socket.setblocking(False)
            selector.register(self.listen_socket, selectors.EVENT_READ, "listen")
        if self.lifeline_fd is not None:
            selector.register(self.lifeline_fd, selectors.EVENT_READ, "lifeline")
        while True:
            now = time.time()
            if not self.stopping and now >= self.next_deferred_scan:
                self.scan_deferred()
                self.next_deferred_scan = now + self.config.get("queue_run_delay")
                self.scheduler.forget_idle(now)
            if not self.stopping:
                self.scan_step(now)
                self.take_loaded()
                self.activate_candidates()
                self.start_deliveries()
            if self.stopping and not self.requests:
                self.handle_results()
                if not self.requests:
                    return
            if not self.stopping and (not self.files.done.empty() or self.scanning() or (
                    self.candidates and self._room() and self.loading < LOAD_AHEAD)):
                timeout = 0             # more to scan or activate: only look at the events
            else:
                timeout = max(0.05, min(self.next_deferred_scan - time.time(), 1.0))
                deadline = self.requests.timeout(time.monotonic())
                if deadline is not None:
                    timeout = min(timeout, deadline)
            self.files.hand_over()      # this pass's loads and removals, as tasks (qmgr_files.py)
            # The lifeline first: a stopping queue manager must not take the
            # wakeup the master sends to its successor.
            for key, events in sorted(selector.select(timeout),
                                      key=lambda e: e[0].data != "lifeline"):
                if not isinstance(key.data, str):
                    self.requests.ready(key.data, events)
                elif key.data == "wake":
                    try:
                        os.read(self.wake_read, 4096)
                    except BlockingIOError:
                        pass
                elif key.data == "listen":
                    self._accept(report_taken, report_available)
                elif key.data == "lifeline":
                    if not os.read(self.lifeline_fd, 1):
                        self.stopping = True
                        selector.unregister(self.lifeline_fd)
                        if self.listen_socket is not None:
                            selector.unregister(self.listen_socket)
            self.requests.expire(time.monotonic())
            self.handle_results()

    def _accept(self, report_taken, report_available):
        try:
            conn, _ = self.listen_socket.accept()
        except (BlockingIOError, InterruptedError):
            return
        if report_taken:
            report_taken()
        try:
            conn.setblocking(True)
            request = self.read_request(conn)
        finally:
            conn.close()        # the client (postclient queue -f) need not wait for the work
            if report_available:
                report_available()
        if request is not None:
            self.handle_request(request)


def raise_priority(levels):
    """Lower this process's nice value by ``levels``, where the system allows it.

    Every delivery waits for the queue manager, yet the kernel gives it one
    share of the CPU among dozens of busy delivery agents: in the drain
    benchmark it fell behind, and delivered mail sat in active/ for up to
    0.2 s before its removal (bench/RESULTS.md, "Drain notes").  Only root
    (or CAP_SYS_NICE) may do this; anyone else keeps the priority it has, and
    is told so once.  Threads started afterwards inherit the value.
    """
    if levels <= 0:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) - levels)
    except PermissionError:
        log.info("qmgr_priority_boost = %d: not permitted for this user; "
                 "the queue manager keeps its priority", levels)


def run(context):
    """Service entry point (master.cf command "qmgr", one process)."""
    for name in ("incoming", "active", "deferred", "hold", "corrupt", "bounce", "defer", "trace"):
        directory = os.path.join(context.queue_directory, name)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as error:        # the scans say it again while it lasts
            log.error("cannot create queue directory %s: %s", directory, error.strerror or error)
    raise_priority(context.config.get("qmgr_priority_boost"))
    manager = QueueManager(context.config, context.queue_directory, context.listen_socket,
                           context.lifeline_fd)
    manager.run(context.report_taken, context.report_available)
