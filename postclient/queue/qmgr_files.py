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
(waits for the disk overlap), and the loop goes on scheduling.  Scheduling
state stays in the loop's thread: the workers only touch files and report
what they found.

Why batches: a thread's system call releases the GIL and must take it back
from the loop, a hand-off that costs more than most of the calls (fileio.py).
So a load makes its calls in one fileio.load_file(); loads and removals are
collected by load() and remove() and handed over once per pass of the loop
(hand_over()), each kind as one task.  The loader reports its results
REPORT_EVERY at a time, with one wakeup of the loop for each group (a
wakeup per file was a pipe write, a read and a pass of the loop per
message: bench/RESULTS.md, "Session 14").  A remover unlinks the batch's
files in one call, then their status logs in another, and logs their
"removed" lines in one write.

Tasks and results:
  - load(source, queue_id), then hand_over(): rename the file from ``source`` into active/,
    probe the delivery agents' shared lock, read and validate it; the result
    is a Loaded (outcome "ok" with the QueueFile, or "vanished", "locked" -
    moved to deferred/ for minimal_backoff_time, as Postfix's
    QMGR_MESSAGE_LOCKED - "corrupt" - moved to corrupt/ - or "error");
  - remove(queue_id), then hand_over(): unlink active/<id>, then its status
    logs, and log "removed"; a file that is gone (moved by postclient super
    meanwhile) is reported as a Loaded with outcome "requeued" so that the
    loop looks at incoming/.
The commit point of a removal is the unlink, as before; a crash before the
worker reaches it leaves a finished message in active/, which recovery
moves to incoming/ and the next pass removes (nothing is pending).
"""

import dataclasses
import errno
import logging
import os
import queue
import threading
import time

from ..log import lines as log_lines
from . import fileio, queuefile, statuslog

log = logging.getLogger("postclient.qmgr")
REMOVERS = 4
REPORT_EVERY = 20       # loads reported to the loop at a time


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
        self._loads_waiting = []        # load()ed, not yet handed over
        self._removals_waiting = []     # remove()d, not yet handed over
        self.threads = [threading.Thread(target=self._run, args=(self.loads,), daemon=True,
                                         name="qmgr-load")]
        self.threads += [threading.Thread(target=self._run, args=(self.removals,), daemon=True,
                                          name="qmgr-remove") for _ in range(REMOVERS)]

    def start(self):
        for thread in self.threads:
            thread.start()
        return self

    def load(self, source, queue_id):
        """Move a file from ``source`` into active/ and read it: at the next hand_over()."""
        self._loads_waiting.append((source, queue_id))

    def remove(self, queue_id):
        """Remove a delivered message: at the next hand_over()."""
        self._removals_waiting.append(queue_id)

    def hand_over(self):
        """Give the loads collected since the last call to the loader, and the
        removals to a remover, each as one task (the loop calls this once per pass)."""
        if self._loads_waiting:
            self.loads.put(("load", self._loads_waiting))
            self._loads_waiting = []
        if self._removals_waiting:
            self.removals.put(("remove", self._removals_waiting))
            self._removals_waiting = []

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
        self.hand_over()
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
            kind, which = task      # which: (source, queue ID) pairs, or queue IDs (remove)
            if kind == "load":
                self._load_all(which)
                continue
            try:
                found = self._remove(which)
            except Exception as error:        # never lose the thread
                log.warning("%s: queue file remove failed: %s", ", ".join(which), error)
                found = []
            self._report(found)

    def _load_all(self, pairs):
        found = []
        for source, queue_id in pairs:
            try:
                found.append(self._load(source, queue_id))
            except Exception as error:        # never lose the thread (or the message)
                log.warning("%s: queue file load failed: %s", queue_id, error)
                found.append(Loaded(source, queue_id, "error"))
            if len(found) == REPORT_EVERY:
                self._report(found)
                found = []
        self._report(found)

    def _report(self, found):
        """Hand results to the loop, and wake it unless older results still wait
        ahead of these: it was woken for those, and takes everything in order
        before it sleeps again."""
        for result in found:
            self.done.put(result)
        if found and self.done.qsize() <= len(found):
            self.wake()

    def _path(self, queue_name, queue_id):
        return f"{self.queue_directory}/{queue_name}/{queue_id}"

    def _load(self, source, queue_id):
        path = self._path("active", queue_id)
        error, stage, locked, size, head = fileio.load_file(
            self._path(source, queue_id), path, queuefile.HEAD_BYTES)
        if error == errno.ENOENT and stage == "rename":
            return Loaded(source, queue_id, "vanished")
        if error:
            log.warning("%s: cannot %s queue file: %s", queue_id, stage, os.strerror(error))
            return Loaded(source, queue_id, "error")
        if locked:
            # An agent of an earlier queue manager still delivers it: try
            # again later instead of sending it twice.
            log.info("%s: still being delivered by an earlier request; deferred", queue_id)
            move(self.queue_directory, queue_id, "active", "deferred",
                 mtime=time.time() + self.locked_backoff)
            return Loaded(source, queue_id, "locked")
        try:
            return Loaded(source, queue_id, "ok",
                          queuefile.read_queue_file(path, size=size, head=head))
        except queuefile.CorruptQueueFile as error:
            queuefile.move_to_corrupt(self.queue_directory, path, str(error))
            return Loaded(source, queue_id, "corrupt")
        except OSError as error:        # a file larger than the head, read again
            log.warning("%s: cannot read queue file: %s", queue_id, error)
            return Loaded(source, queue_id, "error")

    def _remove(self, queue_ids):
        """Remove delivered messages: every file first (each unlink is its
        message's commit point), then the status logs of those removed."""
        errors = fileio.unlink_paths([self._path("active", queue_id) for queue_id in queue_ids])
        removed, found = [], []
        for queue_id, error in zip(queue_ids, errors):
            if not error:
                removed.append(queue_id)
            elif error == errno.ENOENT:
                found.append(Loaded("active", queue_id, "requeued"))    # moved by postclient super
            else:
                log.warning("%s: cannot remove queue file: %s", queue_id, os.strerror(error))
        if removed:
            fileio.unlink_paths([path for queue_id in removed
                                 for path in statuslog.status_paths(self.queue_directory, queue_id)])
            log_lines(log, [f"{queue_id}: removed" for queue_id in removed])
        return found


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
