"""The queue manager's file I/O, in a thread of its own.

Exports FileWorker, Loaded and move().  Used by postclient.queue.qmgr.

Why threads: activating a message (rename into active/, lock probe, read)
and removing a delivered one (unlink of the file and its status logs) wait
for the file system.  An unlink can wait for the disk itself: on ext4
mounted with ``discard`` (this project's CI machines), freeing a file's
blocks issues a synchronous discard (kernel stack: do_unlinkat ... ext4_free_blocks
< blkdev_issue_discard < submit_bio_wait).  Done in the queue manager's loop,
every such wait left all delivery agents without work (the drain benchmark
showed them all idle while the loop sat in the kernel).  So one loader
thread activates files in order, REMOVERS threads unlink delivered ones
(waits for the disk overlap), and the loop goes on scheduling; Python
releases the GIL during the system calls.  Scheduling state stays in the
loop's thread: the workers only touch files and report what they found.

Tasks and results:
  - load(source, queue_id): rename the file from ``source`` into active/,
    probe the delivery agents' shared lock, read and validate it; the result
    is a Loaded (outcome "ok" with the QueueFile, or "vanished", "locked" -
    moved to deferred/ for minimal_backoff_time, as Postfix's
    QMGR_MESSAGE_LOCKED - "corrupt" - moved to corrupt/ - or "error");
  - remove(queue_id): unlink active/<id>, then its status logs, and log
    "removed"; a file that is gone (moved by postclient super meanwhile) is
    reported as a Loaded with outcome "requeued" so that the loop looks at
    incoming/.
The commit point of a removal is the unlink, as before; a crash before the
worker reaches it leaves a finished message in active/, which recovery
moves to incoming/ and the next pass removes (nothing is pending).
"""

import dataclasses
import fcntl
import logging
import os
import queue
import threading
import time

from ..log import line as log_line
from . import queuefile, statuslog

log = logging.getLogger("postclient.qmgr")
REMOVERS = 4


@dataclasses.dataclass
class Loaded:
    source: str
    queue_id: str
    outcome: str                 # ok, vanished, locked, corrupt, error, requeued
    queued: object = None        # the QueueFile when ok


class FileWorker:
    def __init__(self, queue_directory, locked_backoff, wake):
        """``locked_backoff``: seconds a locked message waits in deferred/;
        ``wake()``: tells the loop that results are waiting (thread-safe)."""
        self.queue_directory = queue_directory
        self.locked_backoff = locked_backoff
        self.wake = wake
        self.loads = queue.SimpleQueue()
        self.removals = queue.SimpleQueue()
        self.done = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._run, args=(self.loads,), daemon=True,
                                         name="qmgr-load")]
        self.threads += [threading.Thread(target=self._run, args=(self.removals,), daemon=True,
                                          name="qmgr-remove") for _ in range(REMOVERS)]

    def start(self):
        for thread in self.threads:
            thread.start()
        return self

    def load(self, source, queue_id):
        self.loads.put(("load", source, queue_id))

    def remove(self, queue_id):
        self.removals.put(("remove", None, queue_id))

    def results(self, limit):
        """Up to ``limit`` finished tasks' results (Loaded), without waiting."""
        found = []
        while len(found) < limit:
            try:
                found.append(self.done.get_nowait())
            except queue.Empty:
                break
        return found

    def stop(self):
        """Finish the tasks already given (removals included), then end the threads."""
        self.loads.put(None)
        for _ in range(REMOVERS):
            self.removals.put(None)
        for thread in self.threads:
            thread.join()

    # --- the threads -----------------------------------------------------------------
    def _run(self, tasks):
        while True:
            task = tasks.get()
            if task is None:
                return
            kind, source, queue_id = task
            try:
                result = self._load(source, queue_id) if kind == "load" else self._remove(queue_id)
            except Exception as error:        # never lose the thread (or the message)
                log.warning("%s: queue file %s failed: %s", queue_id, kind, error)
                result = Loaded(source, queue_id, "error") if kind == "load" else None
            if result is not None:
                self.done.put(result)
                if self.done.qsize() == 1:
                    self.wake()     # more results: the loop was woken for the first one

    def _path(self, queue_name, queue_id):
        return f"{self.queue_directory}/{queue_name}/{queue_id}"

    def _load(self, source, queue_id):
        path = self._path("active", queue_id)
        if not move(self.queue_directory, queue_id, source, "active"):
            return Loaded(source, queue_id, "vanished")
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except OSError as error:
            log.warning("%s: cannot open queue file: %s", queue_id, error)
            return Loaded(source, queue_id, "error")
        try:
            if _being_delivered(descriptor):
                # An agent of an earlier queue manager still delivers it: try
                # again later instead of sending it twice.
                log.info("%s: still being delivered by an earlier request; deferred", queue_id)
                move(self.queue_directory, queue_id, "active", "deferred",
                     mtime=time.time() + self.locked_backoff)
                return Loaded(source, queue_id, "locked")
            return Loaded(source, queue_id, "ok", queuefile.read_queue_file(path, descriptor))
        except queuefile.CorruptQueueFile as error:
            queuefile.move_to_corrupt(self.queue_directory, path, str(error))
            return Loaded(source, queue_id, "corrupt")
        except OSError as error:
            log.warning("%s: cannot read queue file: %s", queue_id, error)
            return Loaded(source, queue_id, "error")
        finally:
            os.close(descriptor)        # also releases the probe's lock

    def _remove(self, queue_id):
        try:
            os.unlink(self._path("active", queue_id))
        except FileNotFoundError:
            return Loaded("active", queue_id, "requeued")     # moved by postclient super
        statuslog.remove_status(self.queue_directory, queue_id)
        log_line(log, f"{queue_id}: removed")
        return None


def move(queue_directory, queue_id, source, target, mtime=None):
    """Rename a queue file between queue directories; False when it vanished.

    ``mtime``: set first (in deferred/, the time of the next attempt).  No
    directory fsync: the rename is atomic, the message itself is already
    durable, and a move lost in a crash only leaves the file in its previous
    queue directory, where recovery finds it (done marks live in the file).
    """
    old = f"{queue_directory}/{source}/{queue_id}"       # os.path.join costs more, per message
    new = f"{queue_directory}/{target}/{queue_id}"
    try:
        if mtime is not None:
            os.utime(old, (mtime, mtime))
        os.rename(old, new)
    except FileNotFoundError:
        return False
    return True


def _being_delivered(descriptor):
    """True while a delivery agent holds its shared lock on the file.

    The probe's own lock stays until the caller closes the descriptor."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False
