"""Managing the queue from outside a delivery: walk it, find a message, move it safely.

Exports the queue-name tuples MESSAGE_QUEUES, LISTING_ORDER and
SEARCH_ORDER; message_path(), queue_ids(), walk(), find_message();
move_message(), QueueMover, remove_defer_log(),
remove_orphan_status_logs(); current_delay_reasons(); notify_qmgr(),
QmgrUnavailable, QMGR_PROTOCOL and QMGR_VERSION.  Used by
``postclient queue``, ``super`` and ``cat`` (postclient/cli/), and meant for
the queue manager too.  Reads nothing itself: callers pass queue_directory
and the time limits.

Conventions shared with the queue manager (docs/queue-tools.md):
  - a message file lives flat in one of MESSAGE_QUEUES under
    $queue_directory and is named by its queue ID; a name starting with "."
    is a file being written and is never touched; message_path() is the one
    place that knows where a file lives, should hashed subdirectories come;
  - a deferred/ file's mtime is the time of its next delivery attempt;
  - a move is one rename(2) followed by an fsync of both directories, so a
    crash leaves the message in the old queue or the new one, never in
    both or neither; a move never replaces an existing file;
  - deleting unlinks the message file first (the commit point), then its
    bounce/, defer/ and trace/ logs: a crash in between leaves only
    orphan logs, which ``postclient super -d ALL`` removes;
  - the queue manager listens on $queue_directory/public/qmgr, announces
    {"protocol": "qmgr", "version": 1} and takes one request per
    connection ({"request": "wakeup"} - with "deferred": true also the
    deferred/ mail that is due - {"request": "flush"} or
    {"request": "flush_site", "site": DOMAIN}); it may answer
    {"status": "ok"} or {"status": "error", "reason": ...} before it closes.
"""

import errno
import os
import stat
import time

from .. import ipc
from . import fileio, queuefile, statuslog
from ._fileio_py import rename_noreplace
from .qid import valid_queue_id

MESSAGE_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")
# Postfix's showq order; corrupt/ is not part of the mail queue.
LISTING_ORDER = ("maildrop", "active", "incoming", "deferred", "hold")
# Where ``postclient cat`` looks for an ID (postcat -q), corrupt/ last.
SEARCH_ORDER = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")
QMGR_PROTOCOL = "qmgr"
QMGR_VERSION = 1
QUEUE_DIRECTORY_MODE = 0o700


class QmgrUnavailable(Exception):
    """Nobody answers on public/qmgr, or it is not a queue manager, or it refused."""


def _check_queue_name(queue_name):
    if queue_name not in MESSAGE_QUEUES:
        raise ValueError(f"unknown queue {queue_name!r}")


def _check_message(queue_name, queue_id):
    _check_queue_name(queue_name)
    if not valid_queue_id(queue_id):
        raise ValueError(f"invalid queue ID {queue_id!r}")


def message_path(queue_directory, queue_name, queue_id):
    """Where the file of ``queue_id`` lives (or would live) in ``queue_name``."""
    _check_message(queue_name, queue_id)
    return os.path.join(queue_directory, queue_name, queue_id)


def queue_ids(queue_directory, queue_name):
    """Sorted queue IDs of the message files in one queue ([] if it does not exist).

    Temporary files (".name"), names that are not queue IDs and anything that
    is not a regular file are left out.  Other OSErrors (a directory that
    cannot be read) are raised: the caller cannot tell an empty queue from
    an unreadable one otherwise.
    """
    _check_queue_name(queue_name)
    directory = os.path.join(queue_directory, queue_name)
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        if entry.name.startswith(".") or not valid_queue_id(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
        except OSError:
            continue
        found.append(entry.name)
    return sorted(found)


def walk(queue_directory, queue_names=LISTING_ORDER):
    """Yield (queue_name, queue_id, path) for every message file, queue by queue.

    The queue may change while it is walked: a message that moves from one
    queue to another may be seen twice or not at all, and a yielded path may
    be gone when the caller opens it (as with Postfix's showq).
    """
    for queue_name in queue_names:
        for queue_id in queue_ids(queue_directory, queue_name):
            yield queue_name, queue_id, os.path.join(queue_directory, queue_name, queue_id)


def find_message(queue_directory, queue_id, queue_names=SEARCH_ORDER):
    """(queue_name, path) of the message ``queue_id``, or None.

    Looks twice, so that a message the queue manager moves from a queue not
    yet searched into one already searched is still found.
    """
    if not valid_queue_id(queue_id):
        return None
    for _ in range(2):
        for queue_name in queue_names:
            path = message_path(queue_directory, queue_name, queue_id)
            if os.path.isfile(path) and not os.path.islink(path):
                return queue_name, path
    return None


def _ensure_queue(queue_directory, queue_name):
    directory = os.path.join(queue_directory, queue_name)
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=QUEUE_DIRECTORY_MODE, exist_ok=True)
        queuefile.fsync_directory(queue_directory)
    return directory


class QueueMover:
    """Moves and deletes messages, many at a time (``postclient super -H ALL``, ``-d ALL``).

    Each queue directory is opened once and every utime, rename and unlink is
    made relative to its descriptor, so a message costs one or two system
    calls (the rename never replaces: rename_noreplace()) and no path
    lookups; without an mtime an existence check replaces the utime.  sync()
    fsyncs each directory that changed once, through the same descriptors,
    and only then removes the status logs of the messages deleted since the
    last sync(): a crash never leaves a message without the logs it may
    still owe notices for.  A move or deletion is durable only after
    sync(); report nothing as done before it.  close() when finished.
    """

    def __init__(self, queue_directory):
        self.queue_directory = queue_directory
        self._descriptors = {}
        self._touched = {}          # queue names, in order, to fsync
        self._deleted = []          # queue IDs whose status logs go after the next fsync

    def _descriptor(self, queue_name, create=False):
        descriptor = self._descriptors.get(queue_name)
        if descriptor is None:
            directory = (_ensure_queue(self.queue_directory, queue_name) if create
                         else os.path.join(self.queue_directory, queue_name))
            descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            self._descriptors[queue_name] = descriptor
        return descriptor

    def move(self, queue_id, from_queue, to_queue, mtime=None):
        """Move one message file; True if moved, False if it was not there.

        ``mtime`` (seconds), when given, is set before the rename, so that
        the file appears in ``to_queue`` with it already (deferred/: the time
        of the next attempt).  The destination queue directory is created if
        missing.  FileExistsError if ``to_queue`` already holds that ID
        (never replaced).
        """
        _check_message(from_queue, queue_id)
        _check_queue_name(to_queue)
        if from_queue == to_queue:
            return os.path.isfile(message_path(self.queue_directory, from_queue, queue_id))
        try:
            source = self._descriptor(from_queue)
            if mtime is not None:
                os.utime(queue_id, (mtime, mtime), dir_fd=source)
            elif not _is_file(queue_id, source):
                return False
            target = self._descriptor(to_queue, create=True)
            rename_noreplace(queue_id, source, target)
        except FileNotFoundError:
            return False
        except FileExistsError:
            raise FileExistsError(f"{to_queue}/{queue_id} already exists") from None
        self._touched[to_queue] = self._touched[from_queue] = None
        return True

    def move_many(self, queue_ids, from_queue, to_queue, mtime=None):
        """move() for many messages of one queue, in one compiled call
        (fileio.move_names()): the errno of each, in order (0 moved, ENOENT
        not there, EEXIST already in ``to_queue``).  Every message is tried."""
        _check_queue_name(to_queue)
        for queue_id in queue_ids:
            _check_message(from_queue, queue_id)
        if from_queue == to_queue:
            raise ValueError(f"a move from {from_queue} to itself")
        try:
            source = self._descriptor(from_queue)
        except FileNotFoundError:
            return [errno.ENOENT] * len(queue_ids)
        errors = fileio.move_names(source, self._descriptor(to_queue, create=True), queue_ids, mtime)
        if 0 in errors:
            self._touched[to_queue] = self._touched[from_queue] = None
        return errors

    def delete(self, queue_id, queue_name):
        """Unlink one message file (the commit point); True if it was there.

        Its bounce/, defer/ and trace/ logs go at the next sync(), once the
        unlink is durable."""
        _check_message(queue_name, queue_id)
        try:
            os.unlink(queue_id, dir_fd=self._descriptor(queue_name))
        except FileNotFoundError:
            return False
        self._touched[queue_name] = None
        self._deleted.append(queue_id)
        return True

    def sync(self):
        """fsync each directory changed since the last sync(), once; then remove
        the status logs of the messages deleted meanwhile."""
        for queue_name in self._touched:
            try:
                os.fsync(self._descriptors[queue_name])
            except OSError as error:        # named, for the user's error message
                raise OSError(error.errno, error.strerror,
                              os.path.join(self.queue_directory, queue_name)) from None
        self._touched.clear()
        while self._deleted:
            statuslog.remove_status(self.queue_directory, self._deleted.pop())

    def close(self):
        for descriptor in self._descriptors.values():
            os.close(descriptor)
        self._descriptors.clear()


def _is_file(name, directory_descriptor):
    """os.path.isfile() relative to an open directory."""
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=directory_descriptor).st_mode)
    except (OSError, ValueError):
        return False


def move_message(queue_directory, queue_id, from_queue, to_queue, mtime=None):
    """Move one message file between queues durably (QueueMover.move(), then
    an fsync of both directories); True if moved, False if it was not there."""
    mover = QueueMover(queue_directory)
    try:
        moved = mover.move(queue_id, from_queue, to_queue, mtime)
        mover.sync()
        return moved
    finally:
        mover.close()


def remove_defer_log(queue_directory, queue_id):
    """Forget a message's delay reasons (a requeued message starts afresh).

    The delay-warning mark (defer/<id>.warned) stays: the sender was warned
    once and is not warned again for the same message.
    """
    try:
        os.unlink(os.path.join(queue_directory, "defer", queue_id))
    except FileNotFoundError:
        return False
    return True


def remove_orphan_status_logs(queue_directory):
    """Remove status logs (and delay-warning marks) whose message is in no queue.

    Returns how many files went.
    """
    removed = 0
    for kind in statuslog.LOG_KINDS:
        directory = os.path.join(queue_directory, kind)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            continue
        for name in sorted(names):
            queue_id = name
            if kind == "defer" and name.endswith(statuslog.WARNED_SUFFIX):
                queue_id = name[:-len(statuslog.WARNED_SUFFIX)]
            if not valid_queue_id(queue_id) or find_message(queue_directory, queue_id) is not None:
                continue
            try:
                os.unlink(os.path.join(directory, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def current_delay_reasons(queue_directory, queue_file):
    """{recipient offset: StatusRecord} of the latest defer record of each pending recipient.

    A record is matched to its recipient by the status-byte offset the
    delivery agent wrote into it, or by address when the offset does not
    name a recipient with that address.  The defer log is append-only, so
    the last matching record is the current reason.
    """
    records = statuslog.read_status(queue_directory, "defer", queue_file.queue_id)
    if not records:
        return {}
    pending = [r for r in queue_file.recipients if not r.done]
    by_offset = {r.offset: r for r in pending}
    by_address = {}
    for recipient in pending:
        by_address.setdefault(recipient.address, []).append(recipient)
    reasons = {}
    for record in records:
        target = by_offset.get(record.offset)
        if target is not None and target.address == record.recipient:
            reasons[target.offset] = record
            continue
        for recipient in by_address.get(record.recipient, ()):
            reasons[recipient.offset] = record
    return reasons


def notify_qmgr(queue_directory, request, timeout):
    """Send one request to the queue manager; QmgrUnavailable when that fails.

    ``timeout`` (seconds) bounds connecting, the announcement and sending.
    Once the request is sent, waiting for the queue manager's answer or its
    close is bounded by the same time: a queue manager that is slow to
    answer has still received the request.  An answer with a "status"
    other than "ok" is reported as QmgrUnavailable with its "reason".
    """
    path = os.path.join(queue_directory, "public", "qmgr")
    deadline = time.monotonic() + timeout
    try:
        sock = ipc.connect_unix(path, deadline)
    except ipc.IpcError as error:
        raise QmgrUnavailable(str(error)) from None
    try:
        try:
            ipc.expect_protocol(sock, QMGR_PROTOCOL, QMGR_VERSION, deadline)
            ipc.send_message(sock, request, deadline)
        except ipc.IpcError as error:
            raise QmgrUnavailable(f"{path}: {error}") from None
        try:
            answer = ipc.receive_message(sock, time.monotonic() + timeout)
        except ipc.IpcError:
            return None                 # closed after handling, or slow: it has the request
        status = answer.get("status", "ok")
        if status != "ok":
            raise QmgrUnavailable(f"{path}: the queue manager refused the request: "
                                  f"{answer.get('reason') or status}")
        return answer
    finally:
        sock.close()
