"""Per-message status logs: what happened to each recipient, for DSNs and the queue listing.

Exports append_status(), read_status(), remove_status(), status_paths(), StatusRecord,
LOG_KINDS ("bounce", "defer", "trace") and WARNED_SUFFIX.

Postfix keeps one logfile per message under bounce/, defer/ and trace/; the
bounce and delay notices, ``postclient queue`` and the success notices are
built from them.  Each record is one JSON object on one line, appended and
fsynced before the recipient is marked done (bounce) or the delivery agent
replies (defer), so that no notice is lost in a crash.  A torn last line
(a crash in the middle of an append) is skipped when reading.
"""

import json
import os
import time

from ..record import Record

LOG_KINDS = ("bounce", "defer", "trace")
WARNED_SUFFIX = ".warned"      # defer/<id>.warned: the delay warning was sent


class StatusRecord(Record):
    __slots__ = ("recipient", "original", "orcpt", "notify", "offset", "status", "dsn", "relay",
                 "reply", "text", "time")

    def __init__(self, recipient, original="", orcpt="", notify="", offset=-1, status="", dsn="",
                 relay="none", reply="", text="", time=0.0):
        self.recipient = recipient
        self.original = original
        self.orcpt = orcpt
        self.notify = notify
        self.offset = offset
        self.status = status        # sent, deferred, bounced, delivered, relayed
        self.dsn = dsn              # DSN status code, e.g. 5.1.1
        self.relay = relay          # remote MTA, host[addr]:port
        self.reply = reply          # the remote server's reply (Diagnostic-Code)
        self.text = text            # what was logged in parentheses
        self.time = time


def _path(queue_directory, kind, queue_id):
    if kind not in LOG_KINDS:
        raise ValueError(f"unknown status log {kind!r}")
    return f"{queue_directory}/{kind}/{queue_id}"     # os.path.join costs more, per message


def append_status(queue_directory, kind, queue_id, record):
    """Append one record to ``kind/queue_id`` and flush it to disk."""
    if not record.time:
        record.time = time.time()
    line = json.dumps(record.as_dict(), ensure_ascii=True, separators=(",", ":")) + "\n"
    descriptor = os.open(_path(queue_directory, kind, queue_id),
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, line.encode("ascii"))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_status(queue_directory, kind, queue_id):
    """Every complete record of ``kind/queue_id`` ([] when there is no such log)."""
    try:
        with open(_path(queue_directory, kind, queue_id), "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return []
    records = []
    fields = set(StatusRecord.__slots__)
    for line in data.split(b"\n"):
        try:
            values = json.loads(line)
        except ValueError:
            continue            # torn or empty line
        if isinstance(values, dict) and "recipient" in values:
            records.append(StatusRecord(**{k: v for k, v in values.items() if k in fields}))
    return records


def status_paths(queue_directory, queue_id):
    """Every status log a message may have, and its delay-warning mark."""
    paths = [_path(queue_directory, kind, queue_id) for kind in LOG_KINDS]
    paths.append(_path(queue_directory, "defer", queue_id) + WARNED_SUFFIX)
    return paths


def remove_status(queue_directory, queue_id):
    """Remove every status log of a message, and its delay-warning mark."""
    for path in status_paths(queue_directory, queue_id):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
