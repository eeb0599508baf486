"""Per-message status logs: what happened to each recipient, for DSNs and the queue listing.

Exports append_status(), read_status(), remove_status(), StatusRecord,
LOG_KINDS ("bounce", "defer", "trace") and WARNED_SUFFIX.

Postfix keeps one logfile per message under bounce/, defer/ and trace/; the
bounce and delay notices, ``postclient queue`` and the success notices are
built from them.  Each record is one JSON object on one line, appended and
fsynced before the recipient is marked done (bounce) or the delivery agent
replies (defer), so that no notice is lost in a crash.  A torn last line
(a crash in the middle of an append) is skipped when reading.
"""

import dataclasses
import json
import os
import time

LOG_KINDS = ("bounce", "defer", "trace")
WARNED_SUFFIX = ".warned"      # defer/<id>.warned: the delay warning was sent


@dataclasses.dataclass
class StatusRecord:
    recipient: str
    original: str = ""
    orcpt: str = ""
    notify: str = ""
    offset: int = -1
    status: str = ""        # sent, deferred, bounced, delivered, relayed
    dsn: str = ""           # DSN status code, e.g. 5.1.1
    relay: str = "none"     # remote MTA, host[addr]:port
    reply: str = ""         # the remote server's reply (Diagnostic-Code)
    text: str = ""          # what was logged in parentheses
    time: float = 0.0


def _path(queue_directory, kind, queue_id):
    if kind not in LOG_KINDS:
        raise ValueError(f"unknown status log {kind!r}")
    return f"{queue_directory}/{kind}/{queue_id}"     # os.path.join costs more, per message


def append_status(queue_directory, kind, queue_id, record):
    """Append one record to ``kind/queue_id`` and flush it to disk."""
    if not record.time:
        record.time = time.time()
    line = json.dumps(dataclasses.asdict(record), ensure_ascii=True, separators=(",", ":")) + "\n"
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
    fields = {f.name for f in dataclasses.fields(StatusRecord)}
    for line in data.split(b"\n"):
        try:
            values = json.loads(line)
        except ValueError:
            continue            # torn or empty line
        if isinstance(values, dict) and "recipient" in values:
            records.append(StatusRecord(**{k: v for k, v in values.items() if k in fields}))
    return records


def remove_status(queue_directory, queue_id):
    """Remove every status log of a message, and its delay-warning mark."""
    paths = [_path(queue_directory, kind, queue_id) for kind in LOG_KINDS]
    paths.append(_path(queue_directory, "defer", queue_id) + WARNED_SUFFIX)
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
