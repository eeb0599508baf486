"""Queue IDs: unique, sortable by time, safe as file names.

Exports new_queue_id(), queue_id_time() and valid_queue_id().

An ID is 14 upper-case hex digits of microseconds since the epoch, then 5
of the process ID and 3 of a per-process counter (22 characters):
``0660CF1CE689CF05CFD000``.
IDs made by one process are strictly increasing; IDs of different processes
sort by time.  The fixed width keeps plain string order equal to time order; it fits Postfix habits (long IDs) and the
log scripts that expect an alphanumeric ID before the colon.
"""

import os
import re
import threading
import time

_VALID = re.compile(r"^[0-9A-F]{22}$")
_lock = threading.Lock()
_last = [0, 0, 0]      # [pid, microseconds, counter]


def new_queue_id(now=None):
    """A fresh queue ID (``now`` in seconds, for tests)."""
    with _lock:
        pid = os.getpid()
        micros = int((time.time() if now is None else now) * 1_000_000)
        if _last[0] != pid:
            _last[:] = [pid, 0, 0]
        if micros <= _last[1]:
            micros = _last[1]
            _last[2] += 1
            if _last[2] > 0xFFF:
                micros += 1
                _last[2] = 0
        else:
            _last[2] = 0
        _last[1] = micros
        return f"{micros:014X}{pid & 0xFFFFF:05X}{_last[2]:03X}"


def valid_queue_id(text):
    return bool(_VALID.match(text or ""))


def queue_id_time(queue_id):
    """Seconds since the epoch when the ID was made."""
    return int(queue_id[:14], 16) / 1_000_000
