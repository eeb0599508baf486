"""Queue directory scans a little at a time, as Postfix's qmgr_scan.c.

Exports QueueScan.  Reads nothing itself: the queue manager (qmgr.py) says
what to scan for and takes what each step() finds.

Why: the queue manager has one loop for everything (agents' replies,
wakeups, activations).  A scan that listed deferred/ and looked at every
file in one go held that loop for as long as the directory was large:
seconds for a few hundred thousand deferred messages, every
queue_run_delay, and worse for ``postclient queue -s site``, which reads
each file to learn where its recipients go.  Here step() looks at a
bounded number of a scan's entries: the loop runs a step between its other
work, and only while it has room for more candidates.  deferred/ is read as
it goes (os.scandir, as Postfix's readdir()), so that neither the listing
of a huge directory nor its memory comes at once; a file that the queue
manager moves out and back in during the scan may then be seen twice (one
more attempt, never a second delivery: done marks are in the file).
incoming/ is listed at once and sorted, so that new mail goes out in
arrival order.

What a scan offers is decided per file from the scan's request:
  ``everything``  every file (incoming/, ``postclient queue -f``);
  ``due``         files whose mtime (the next attempt time) has come
                  (the timed deferred scan, ``postclient super -H``);
  ``sites``       files with a pending recipient for one of these sites
                  (``postclient queue -s site``; the caller's ``concerns``).
Names the caller already holds (``offered``: waiting as candidates, or
active) are passed over without a look: a due or site scan that comes while
a large flush is still being activated would otherwise stat() or read each
of them for nothing.
A request that comes while a scan runs is merged into one more scan after
it (Postfix does the same): the running scan is not restarted, so a stream
of wakeups cannot keep it from reaching the end of a large directory, and
no file listed after the request is missed.

A directory that cannot be read (EIO, a permission or a file where the
directory belongs) is an empty scan with a warning, once until the error
changes or the directory can be read again; a file that cannot be looked at
is skipped with a warning.  Its mail waits where it is, and the queue manager
goes on with the other queues (Postfix's qmgr stops instead, and the master
restarts it into the same error).
"""

import logging
import os

log = logging.getLogger("postclient.qmgr")

STEP_ENTRIES = 200      # directory entries looked at by one step()
STEP_READS = 20         # files read (site checks) by one step()


class _Request:
    """What one scan offers; merge() ORs two requests into one."""

    def __init__(self, everything=False, due=False, sites=()):
        self.everything = everything
        self.due = due
        self.sites = frozenset(site.lower() for site in sites)

    def merge(self, other):
        return _Request(self.everything or other.everything, self.due or other.due,
                        self.sites | other.sites)


class QueueScan:
    """The scan of one queue directory: request() starts or queues one, step() walks it."""

    def __init__(self, directory, concerns=None, ordered=False, offered=None):
        self.directory = directory
        self.concerns = concerns    # (path, sites) -> whether the file has mail for them
        self.offered = offered      # queue ID -> already taken by the caller (no look)
        self.ordered = ordered      # sorted listing: incoming/ in arrival order (queue IDs)
        self.names = None           # the entries being walked (an iterator), or None
        self.position = 0           # entries looked at so far in this scan
        self.current = None         # the running scan's _Request
        self.next = None            # merged requests that came during it
        self.trouble = None         # why the last listing failed (warned once), or None

    @property
    def running(self):
        """A scan is under way or waiting to start (step() has work)."""
        return self.current is not None or self.next is not None

    def request(self, everything=False, due=False, sites=()):
        wanted = _Request(everything, due, sites)
        self.next = wanted if self.next is None else self.next.merge(wanted)

    def step(self, now, entries=STEP_ENTRIES, reads=STEP_READS):
        """Queue IDs to offer from the next few entries (at most ``entries``
        looked at, ``reads`` files read); [] when the scan is done or idle."""
        if self.current is None:
            if self.next is None:
                return []
            self.current, self.next = self.next, None
            self.names, self.position = self._entries(), 0
        found = []
        request, names, directory = self.current, self.names, self.directory
        while entries > 0 and reads > 0:
            queue_id = next(names, None)
            if queue_id is None:
                self.current = self.names = None    # done; a queued request starts next time
                break
            self.position += 1
            entries -= 1
            if request.everything:
                found.append(queue_id)
                continue
            if self.offered is not None and self.offered(queue_id):
                continue
            path = f"{directory}/{queue_id}"
            if request.due:
                try:
                    if os.stat(path).st_mtime <= now:
                        found.append(queue_id)
                        continue
                except FileNotFoundError:
                    continue            # moved meanwhile
                except OSError as error:
                    log.warning("cannot look at queue file %s: %s; it stays where it is",
                                path, error.strerror or error)
                    continue
            if request.sites and self.concerns is not None:
                reads -= 1
                if self.concerns(path, request.sites):
                    found.append(queue_id)
        return found

    def _entries(self):
        """The names to walk (not "." files: being written): sorted, or as read."""
        if self.ordered:
            try:
                names = os.listdir(self.directory)
            except FileNotFoundError:
                names = []
            except OSError as error:
                self._unreadable(error)
                return iter(())
            self._readable()
            return iter(sorted(name for name in names if not name.startswith(".")))
        return self._read()

    def _read(self):
        try:
            with os.scandir(self.directory) as entries:
                self._readable()
                for entry in entries:
                    if not entry.name.startswith("."):
                        yield entry.name
        except FileNotFoundError:
            return
        except OSError as error:        # at the opening, or part-way through
            self._unreadable(error)

    def _unreadable(self, error):
        reason = error.strerror or str(error)
        if reason != self.trouble:
            log.warning("cannot read queue directory %s: %s; its mail waits there until it can "
                        "be read", self.directory, reason)
            self.trouble = reason

    def _readable(self):
        if self.trouble is not None:
            log.info("queue directory %s can be read again", self.directory)
            self.trouble = None
