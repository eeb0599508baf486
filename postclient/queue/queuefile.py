"""Queue files: one file per message, complete or absent, recipients marked done in place.

Exports write_queue_file(), read_queue_file(), mark_done(), open_for_marking(),
mark_done_fd(), open_content(), move_to_corrupt(), fsync_directory(),
records() (the record reader, shared with postclient cat), QueueFile,
QueuedRecipient, CorruptQueueFile and the status bytes PENDING and DONE.
The format is documented in docs/queue-format.md.

Layout: the magic line ``PCQ1\\n``, then records ``<type><length>:<payload>\\n``
(type one ASCII letter, length in decimal).  Envelope records come first,
then one ``R`` record per recipient whose first payload byte is its status
(``P`` pending, ``D`` done), then the content (``M``), then the end record
``E``.  A file without its end record, with a length that runs past the end
of the file, an unknown record type or missing envelope records is corrupt.

Durability (DESIGN.md "Queue"): the file is written under a temporary name,
fsynced, renamed into place and its directory fsynced, so a crash leaves the
message complete or absent.  A recipient is marked done by overwriting its
status byte (a write to the kernel, no fsync, as Postfix's deliver_completed()):
a killed process loses nothing, and only a crash of the whole system before
the page reaches the disk can send a recipient again - inside the documented
duplicate window between "." -> 250 and the done mark reaching disk.  What
must not be lost before a done mark (bounce and trace records) is fsynced
first by statuslog.append_status().
"""

import os
import re

from .. import extensions
from ..record import Record

MAGIC = b"PCQ1\n"
PENDING = b"P"
DONE = b"D"
MAX_ENVELOPE_RECORD = 64 * 1024
HEAD_BYTES = 16 * 1024        # the first read of a queue file (see records())
# A record's type byte, 1 to 13 length digits and the colon, within _MAX_HEAD bytes.
_RECORD_HEAD = re.compile(rb"(?s)(.)([0-9]{1,13}):")
_MAX_HEAD = 16
ENVELOPE_TYPES = {b"A": "arrival_time", b"S": "sender", b"I": "envid", b"T": "ret",
                  b"B": "encoding", b"U": "smtputf8", b"X": "client"}
ENCODINGS = ("7bit", "8bit", "unknown")


_records, SCANNER, _ = extensions.load("postclient.queue._records_c")
_scan = _records.scan if _records is not None else None     # records() is the same without it


class CorruptQueueFile(Exception):
    """The file is truncated or malformed; ``str()`` says where and what."""


class QueuedRecipient(Record):
    __slots__ = ("address", "original", "orcpt", "notify", "offset", "done")

    def __init__(self, address, original="", orcpt="", notify="", offset=-1, done=False):
        self.address = address
        self.original = original
        self.orcpt = orcpt
        self.notify = notify
        self.offset = offset        # file offset of the status byte
        self.done = done


class QueueFile(Record):
    __slots__ = ("path", "queue_id", "arrival_time", "sender", "recipients", "content_offset",
                 "content_size", "envid", "ret", "encoding", "smtputf8", "client", "content")

    def __init__(self, path, queue_id, arrival_time, sender, recipients, content_offset,
                 content_size, envid="", ret="", encoding="unknown", smtputf8=False, client=None,
                 content=None):
        self.path = path
        self.queue_id = queue_id
        self.arrival_time = arrival_time
        self.sender = sender
        self.recipients = recipients            # [QueuedRecipient]
        self.content_offset = content_offset
        self.content_size = content_size
        self.envid = envid
        self.ret = ret
        self.encoding = encoding
        self.smtputf8 = smtputf8
        self.client = {} if client is None else client      # XFORWARD attributes
        self.content = content      # its bytes, if read_queue_file(with_content=True) had them

    def pending(self):
        return [r for r in self.recipients if not r.done]


def _record(kind, payload):
    return kind + str(len(payload)).encode() + b":" + payload + b"\n"


def _text(value):
    return value.encode("utf-8", "surrogateescape")


def fsync_directory(path):
    """fsync a directory, so that a rename or unlink in it is durable."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_filesystem(path):
    """Flush the file system that holds ``path`` (syncfs(2); sync(2) where it is missing)."""
    import ctypes       # here: the queue tools should not load it to start
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = getattr(libc, "syncfs", None)
        if syncfs is None:
            os.sync()
        elif syncfs(descriptor) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))
    finally:
        os.close(descriptor)


def _make_entry_durable(directory, path):
    """fsync the directory after a rename; where this user may not open it
    (maildrop/ is mode 1733: create, but not list) flush the file system
    through the new file instead (security rule 13)."""
    try:
        fsync_directory(directory)
    except PermissionError:
        _sync_filesystem(path)


def write_queue_file(directory, queue_id, *, sender, recipients, content, arrival_time,
                     envid="", ret="", encoding="unknown", smtputf8=False, client=None):
    """Write a complete queue file ``directory/queue_id`` durably; returns its path.

    ``recipients`` are objects with address, original, orcpt and notify
    attributes (or plain address strings).  ``content`` is bytes.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"bad body encoding {encoding!r}")
    if not recipients:
        raise ValueError("a queue file needs at least one recipient")
    parts = [MAGIC, _record(b"A", repr(float(arrival_time)).encode()), _record(b"S", _text(sender)),
             _record(b"B", encoding.encode()), _record(b"U", b"1" if smtputf8 else b"0")]
    if envid:
        parts.append(_record(b"I", _text(envid)))
    if ret:
        parts.append(_record(b"T", ret.encode()))
    for name, value in sorted((client or {}).items()):
        parts.append(_record(b"X", _text(f"{name}={value}")))
    for recipient in recipients:
        if isinstance(recipient, str):
            fields = (recipient, "", "", "")
        else:
            fields = (recipient.address, recipient.original or "", recipient.orcpt or "",
                      recipient.notify or "")
        if any("\0" in field for field in fields):
            raise ValueError("NUL in a recipient field")
        parts.append(_record(b"R", PENDING + b"\0".join(_text(f) for f in fields)))
    parts.append(_record(b"M", content))
    parts.append(_record(b"E", b""))
    path = os.path.join(directory, queue_id)
    temporary = os.path.join(directory, f".{queue_id}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            for part in parts:
                handle.write(part)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _make_entry_durable(directory, path)
    return path


def records(descriptor, size, limit=MAX_ENVELOPE_RECORD, with_content=False, head=None):
    """Yield the records of an open queue file of ``size`` bytes, the end record last,
    as (type, payload or None, payload offset, next position); payload None for M,
    unless ``with_content`` and the first read held all of it.

    CorruptQueueFile for a bad magic or a record that is malformed or
    truncated.  The first pread takes HEAD_BYTES, which hold the envelope
    (and for most messages the whole file), and records are cut from that
    buffer in place: the queue file is read twice per delivery, so this
    makes one system call and little work per record.  A record outside the
    buffer (a long envelope, the end after a large content record) is read
    with another pread; the content never is.  pread leaves the
    descriptor's position alone.  ``head``: that first read, made already
    by the caller (the file's first min(size, HEAD_BYTES) bytes);
    ``descriptor`` may then be None if ``head`` is the whole file.
    """
    data, found, position = _first_records(descriptor, size, limit, with_content, head)
    yield from found                    # before any error found later (postclient cat)
    if not found or found[-1][0] != b"E":
        yield from _more_records(descriptor, size, limit, with_content, data, position)


def _record_list(descriptor, size, limit, with_content, head):
    """records(), as a list."""
    data, found, position = _first_records(descriptor, size, limit, with_content, head)
    if not found or found[-1][0] != b"E":
        found.extend(_more_records(descriptor, size, limit, with_content, data, position))
    return found


def _first_records(descriptor, size, limit, with_content, head):
    """The first read, checked for the magic, and what the compiled scanner cut
    from it: (data, records, position where _more_records() goes on)."""
    data = head if head is not None else os.pread(descriptor, min(size, HEAD_BYTES), 0)
    if data[:len(MAGIC)] != MAGIC:
        raise CorruptQueueFile("not a postclient queue file (bad magic)")
    if _scan is None:
        return data, [], len(MAGIC)
    found, position = _scan(data, 0, len(MAGIC), size, limit, with_content)
    return data, found, position


def _more_records(descriptor, size, limit, with_content, data, position):
    """The records from ``position`` on (``data`` holds the file's first bytes): the
    rules of the format, every check and every error message (records())."""
    start, loaded = 0, len(data)        # data holds the file's bytes [start, loaded)
    match = _RECORD_HEAD.match
    while True:
        if position + _MAX_HEAD > loaded < size:
            data = os.pread(descriptor, HEAD_BYTES, position)
            start, loaded = position, position + len(data)
        if position >= loaded:
            raise CorruptQueueFile(f"offset {position}: file ends without its end record")
        head = match(data, position - start)
        if head is None:
            raise CorruptQueueFile(f"offset {position}: bad record length")
        kind, digits = head.groups()
        length = int(digits)
        payload_offset = start + head.end()
        end = payload_offset + length           # where the record's newline belongs
        if end >= size:
            raise CorruptQueueFile(f"offset {position}: record of {length} bytes runs past the end of the file")
        if kind != b"M" and length > limit:
            raise CorruptQueueFile(f"offset {position}: {kind.decode(errors='replace')} record too long")
        if end >= loaded:
            first = end if kind == b"M" else payload_offset
            data = os.pread(descriptor, max(end + 1 - first, HEAD_BYTES), first)
            start, loaded = first, first + len(data)
        if end >= loaded or data[end - start] != 10:        # 10: b"\n"
            raise CorruptQueueFile(f"offset {position}: record does not end with a newline")
        position = end + 1
        if kind != b"M" or (with_content and payload_offset >= start):
            yield kind, data[payload_offset - start:end - start], payload_offset, position
        else:
            yield kind, None, payload_offset, position
        if kind == b"E":
            return


def read_queue_file(path, descriptor=None, size=None, with_content=False, head=None):
    """Parse and validate the envelope of ``path``; CorruptQueueFile if it is not sound.

    The content is not read (open_content() streams it): only its record's
    length is checked against the file size, the newline after it and the
    end record.  ``descriptor``: read through this open descriptor of
    ``path`` (left open) instead of opening the file; ``size``: its size,
    where the caller has just fstat()ed it (one system call less per message).
    ``with_content``: keep the content's bytes in QueueFile.content when the first
    read held them (most messages: HEAD_BYTES), for a delivery agent that
    sends it next - one pread less per message; else QueueFile.content is None.
    ``head``: the file's first min(size, HEAD_BYTES) bytes, read already
    with ``size`` (the queue manager's fileio.load_file()); the file is
    opened only if the envelope goes on past them.
    """
    whole = head is not None and size is not None and len(head) == size
    own = descriptor is None and not whole
    if own:
        descriptor = os.open(path, os.O_RDONLY)
    try:
        if size is None or (own and head is None):
            size = os.fstat(descriptor).st_size
        values = {}
        client = {}
        recipients = []
        content = None
        inline = None
        found = _record_list(descriptor, size, MAX_ENVELOPE_RECORD, with_content, head)
        for kind, payload, payload_offset, position in found:
            if kind == b"R":
                fields = payload[1:].decode("utf-8", "surrogateescape").split("\0")
                status = payload[:1]
                if status not in (PENDING, DONE) or len(fields) != 4 or not fields[0]:
                    raise CorruptQueueFile(f"offset {payload_offset}: bad recipient record")
                recipients.append(QueuedRecipient(*fields, offset=payload_offset, done=status == DONE))
            elif kind == b"M":
                if content is not None:
                    raise CorruptQueueFile("two content records")
                content = (payload_offset, position - payload_offset - 1)
                inline = payload
            elif kind in ENVELOPE_TYPES:
                text = payload.decode("utf-8", "surrogateescape")
                if kind == b"X":
                    name, _, value = text.partition("=")
                    client[name] = value
                else:
                    values[ENVELOPE_TYPES[kind]] = text
            elif kind != b"E":
                raise CorruptQueueFile(f"offset {payload_offset - 2}: unknown record type {kind!r}")
        if position != size:
            raise CorruptQueueFile(f"offset {position}: data after the end record")
    finally:
        if own:
            os.close(descriptor)
    if content is None or not recipients or "arrival_time" not in values or "sender" not in values:
        raise CorruptQueueFile("missing envelope records (arrival time, sender, recipients or content)")
    try:
        arrival = float(values["arrival_time"])
    except ValueError:
        raise CorruptQueueFile(f"bad arrival time {values['arrival_time']!r}") from None
    encoding = values.get("encoding", "unknown")
    if encoding not in ENCODINGS:
        raise CorruptQueueFile(f"bad body encoding {encoding!r}")
    return QueueFile(path=path, queue_id=path.rpartition("/")[2], arrival_time=arrival,
                     sender=values["sender"], recipients=recipients, content_offset=content[0],
                     content_size=content[1], envid=values.get("envid", ""),
                     ret=values.get("ret", ""), encoding=encoding,
                     smtputf8=values.get("smtputf8") == "1", client=client, content=inline)


class _ContentReader:
    """A read-only file object limited to the content record.

    It reads with pread(2) at its own position: no buffered file object,
    duplicate descriptor or seek per message.  A borrowed descriptor is
    left open on close().
    """

    def __init__(self, path, offset, size, descriptor=None):
        self._own = descriptor is None
        self._descriptor = os.open(path, os.O_RDONLY) if self._own else descriptor
        self._position = offset
        self._left = size

    def read(self, size=-1):
        if size is None or size < 0 or size > self._left:
            size = self._left
        data = os.pread(self._descriptor, size, self._position) if size else b""
        self._position += len(data)
        self._left -= len(data)
        return data

    def close(self):
        if self._own and self._descriptor is not None:
            os.close(self._descriptor)
        self._descriptor = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_content(queue_file, descriptor=None):
    """A file object that reads the message content as a stream.

    With ``descriptor`` (an open descriptor of the file, which the caller
    keeps open until the reader is closed) it reads through it, so that a
    rename of the file meanwhile does not matter.
    """
    return _ContentReader(queue_file.path, queue_file.content_offset, queue_file.content_size,
                          descriptor)


def mark_done(path, offset):
    """Overwrite one recipient's status byte with DONE (see the module docstring)."""
    descriptor = open_for_marking(path)
    try:
        mark_done_fd(descriptor, offset, path)
    finally:
        os.close(descriptor)


def open_for_marking(path):
    """A descriptor for mark_done_fd(): it keeps working if the file is renamed
    meanwhile (postclient super -h/-r moving a message that is being delivered)."""
    return os.open(path, os.O_RDWR)


def mark_done_fd(descriptor, offset, name="queue file", parsed=False):
    """mark_done() through an open descriptor.

    ``parsed``: the caller took ``offset`` from read_queue_file() through this
    same descriptor, so a status byte is known to be there (only status bytes
    of a queue file ever change) and is not read back first.  In a delivery
    agent each system call can mean a handoff of the GIL between its threads
    (bench/RESULTS.md, "Session 8").
    """
    if not parsed:
        current = os.pread(descriptor, 1, offset)
        if current not in (PENDING, DONE):
            raise CorruptQueueFile(f"offset {offset}: no recipient status byte there")
    if os.pwrite(descriptor, DONE, offset) != 1:
        raise OSError(f"short write marking a recipient done in {name}")


def move_to_corrupt(queue_directory, path, reason):
    """Move a file that failed validation to corrupt/ and log why; never raises.

    The queue must go on: a bad file is set aside for the operator, not
    retried and not allowed to stop anything (security rule 15).
    """
    import logging      # here: the queue tools should not load it to start
    queue_id = os.path.basename(path)
    target = os.path.join(queue_directory, "corrupt", queue_id)
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(path, target)
        fsync_directory(os.path.dirname(target))
    except OSError as error:
        logging.getLogger("postclient.queue").warning(
            "%s: corrupt queue file (%s); cannot move it to corrupt/: %s",
            queue_id, reason, error.strerror or error)
        return False
    logging.getLogger("postclient.queue").warning(
        "%s: corrupt queue file (%s); moved to corrupt/", queue_id, reason)
    return True
