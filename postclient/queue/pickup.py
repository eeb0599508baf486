"""The pickup service: maildrop/ -> incoming/, after checking what users dropped there.

Exports serve(), init(), pickup_maildrop(), pickup_file(), PROTOCOL, VERSION and
STALE_TEMPORARY_AGE.  Reads queue_directory (from the context),
message_size_limit and ipc_timeout.

A "single" service (master.cf ``pickup unix n - n 60 1 pickup``: a public
socket, woken every 60 seconds and by every unprivileged ``postclient
sendmail``).  On accept it announces ``{"protocol": "pickup", "version": 1}``,
reads one ``{"request": "wakeup"}`` (within 5 seconds: any local user may
connect, and one process must not be held by a silent client), then scans
maildrop/ until a pass moves nothing, and wakes the queue manager through
``public/qmgr`` when it moved anything.  It never replies.

maildrop/ (mode 1733) holds files written by unprivileged users, so nothing in
it is trusted, as with Postfix's pickup:
  - names starting with "." are files still being written: skipped (removed
    once older than STALE_TEMPORARY_AGE, left behind by a killed sendmail);
  - a name that is not a queue ID, something that is not a regular file, or
    a file with more than one link is set aside in corrupt/ with a warning;
  - the file is opened without following symlinks and copied, at most its
    size when opened, into a private temporary file in incoming/ (mode 0700,
    out of the user's reach), and only that copy is validated: the user
    cannot change it afterwards through a descriptor kept open;
  - the copy must be a sound queue file (read_queue_file) with every
    recipient pending, no client (XFORWARD) attributes, no CR/LF/NUL or
    control characters in the sender, recipients or ENVID, valid NOTIFY and
    RET values, content within message_size_limit and an arrival time not
    more than two hours in the future; otherwise the maildrop file goes to
    corrupt/ and a warning says why;
  - the copy gets the file's name (its queue ID) in incoming/ with link(),
    which never replaces an existing file, and only when no other queue
    holds that ID; incoming/ is fsynced, then the maildrop file is removed.
    A crash in between leaves the message queued and a duplicate in maildrop,
    which the next scan sets aside (queue ID in use): nothing is lost.
Each message taken is logged as Postfix does: ``QUEUEID: uid=N from=<sender>``,
where N is the owner of the maildrop file (the Received: header inside the
message was written by the unprivileged sendmail and is only its claim).
"""

import logging
import os
import stat
import time

from .. import ipc
from ..log import LOGGER_NAME
from . import manage, queuefile, submit
from .qid import valid_queue_id

PROTOCOL = "pickup"
VERSION = 1
REQUEST_TIMEOUT = 5             # seconds for a client to send its wakeup request
STALE_TEMPORARY_AGE = 86400     # seconds before a leftover ".name" file is removed
FUTURE_TOLERANCE = 2 * 3600     # arrival times later than now + this are refused
COPY_CHUNK = 256 * 1024
ENVELOPE_ALLOWANCE = 64 * 1024 * 1024   # bytes beyond message_size_limit before copying stops
OTHER_QUEUES = ("incoming", "active", "deferred", "hold")
logger = logging.getLogger(LOGGER_NAME)


class _Reject(Exception):
    """The maildrop file is not acceptable; the text says why."""


def init(context):
    """Nothing to prepare: the master wakes the service as soon as it starts."""


def serve(conn, context):
    try:
        ipc.announce(conn, PROTOCOL, VERSION, time.monotonic() + REQUEST_TIMEOUT)
    except ipc.IpcError:
        pass      # a trigger may send its request and close without reading
    try:
        request = ipc.receive_message(conn, time.monotonic() + min(REQUEST_TIMEOUT, context.ipc_timeout))
    except ipc.IpcClosed:
        return
    except ipc.IpcError as error:
        logger.warning("pickup: client: %s", error)
        return
    if request.get("request") != "wakeup":
        logger.warning("pickup: unexpected request %.100r -- ignored", request.get("request"))
        return
    moved = pickup_maildrop(context.queue_directory, context.config.get("message_size_limit"))
    if moved:
        submit.wake(context.queue_directory, "qmgr")


def pickup_maildrop(queue_directory, size_limit, now=None):
    """Move every acceptable file from maildrop/ to incoming/; returns how many moved.

    Scans again after a pass that moved something (mail that arrived during
    the pass), as Postfix's pickup does.
    """
    maildrop = os.path.join(queue_directory, "maildrop")
    total = 0
    while True:
        try:
            names = sorted(os.listdir(maildrop))
        except OSError as error:
            logger.warning("pickup: cannot read %s: %s", maildrop, error.strerror or error)
            return total
        moved = sum(1 for name in names if pickup_file(queue_directory, name, size_limit, now))
        total += moved
        if not moved:
            return total


def pickup_file(queue_directory, name, size_limit, now=None):
    """Take one maildrop entry; True when it went to incoming/."""
    now = time.time() if now is None else now
    path = os.path.join(queue_directory, "maildrop", name)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as error:
        logger.warning("pickup: %s: %s", path, error.strerror or error)
        return False
    if name.startswith("."):
        _remove_stale_temporary(path, info, now)
        return False
    temporary = None
    try:
        if not valid_queue_id(name):
            raise _Reject("file name is not a queue ID")
        if not stat.S_ISREG(info.st_mode):
            raise _Reject("not a regular file")
        if info.st_nlink > 1:
            raise _Reject(f"file has {info.st_nlink} links")
        if size_limit and info.st_size > size_limit + ENVELOPE_ALLOWANCE:
            raise _Reject(f"message file too big ({info.st_size} bytes)")
        temporary = _private_copy(queue_directory, path, name, info)
        queued = _validate(temporary, size_limit, now)
        _claim_queue_id(queue_directory, name)
        target = os.path.join(queue_directory, "incoming", name)
        try:
            os.link(temporary, target)
        except FileExistsError:
            raise _Reject("queue ID already in use") from None
        _unlink(temporary)
        temporary = None
        queuefile.fsync_directory(os.path.dirname(target))
    except _Reject as reason:
        if temporary:
            _unlink(temporary)
        _set_aside(queue_directory, path, name, info, str(reason))
        return False
    except OSError as error:
        if temporary:
            _unlink(temporary)
        logger.warning("pickup: %s: %s -- will try again", path, error.strerror or error)
        return False
    logger.info("%s: uid=%d from=<%s>", name, info.st_uid, queued.sender)
    try:
        os.unlink(path)
    except OSError as error:
        logger.warning("pickup: %s: queued, but cannot remove the maildrop file: %s",
                       name, error.strerror or error)
    return True


def _remove_stale_temporary(path, info, now):
    if stat.S_ISREG(info.st_mode) and now - info.st_mtime > STALE_TEMPORARY_AGE:
        try:
            os.unlink(path)
        except OSError:
            return
        logger.info("pickup: removed %s, a temporary file left %d hours ago (uid=%d)",
                    path, (now - info.st_mtime) // 3600, info.st_uid)


def _private_copy(queue_directory, path, name, info):
    """Copy the maildrop file into incoming/.<name>.pickup; returns that path."""
    try:
        source = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        raise _Reject(f"cannot open: {error.strerror or error}") from None
    try:
        opened = os.fstat(source)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino) or not stat.S_ISREG(opened.st_mode):
            raise _Reject("file was replaced while being opened")
        temporary = os.path.join(queue_directory, "incoming", f".{name}.pickup")
        _unlink(temporary)           # pickup's own leftover from a crash, if any
        target = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            left = opened.st_size
            while left > 0:
                data = os.read(source, min(COPY_CHUNK, left))
                if not data:
                    break
                left -= len(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(target, view):]
            os.fsync(target)
        except BaseException:
            os.close(target)
            _unlink(temporary)
            raise
        os.close(target)
        return temporary
    finally:
        os.close(source)


def _validate(path, size_limit, now):
    try:
        queued = queuefile.read_queue_file(path)
    except queuefile.CorruptQueueFile as error:
        raise _Reject(str(error)) from None
    if queued.client:
        raise _Reject("client attributes are not allowed in a maildrop file")
    try:
        submit.check_text(queued.sender, "sender")
        submit.check_text(queued.envid, "ENVID")
        for recipient in queued.recipients:
            for value in (recipient.address, recipient.original, recipient.orcpt):
                submit.check_text(value, "recipient")
            if recipient.notify:
                submit.notify_value(recipient.notify)
        if queued.ret:
            submit.ret_value(queued.ret)
    except ValueError as error:
        raise _Reject(str(error)) from None
    if any(r.done for r in queued.recipients):
        raise _Reject("recipients already marked done")
    if size_limit and queued.content_size > size_limit:
        raise _Reject(f"message file too big ({queued.content_size} bytes; "
                      f"message_size_limit = {size_limit})")
    if not queued.arrival_time <= now + FUTURE_TOLERANCE:      # also refuses NaN
        raise _Reject("arrival time in the future")
    return queued


def _claim_queue_id(queue_directory, name):
    for queue in OTHER_QUEUES:
        if os.path.lexists(manage.message_path(queue_directory, queue, name)):
            raise _Reject(f"queue ID already in use (in {queue}/)")


def _set_aside(queue_directory, path, name, info, reason):
    """Move a rejected maildrop entry to corrupt/, never replacing what is there."""
    if os.path.lexists(os.path.join(queue_directory, "corrupt", name)):
        logger.warning("%s: bad maildrop file from uid=%d (%s); corrupt/%s exists -- removed",
                       name, info.st_uid, reason, name)
        _unlink(path)
        return
    queuefile.move_to_corrupt(queue_directory, path, f"maildrop file from uid={info.st_uid}: {reason}")


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
