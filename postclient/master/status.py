"""Reading the children's status reports: available, taken.

Exports read_reports() and apply_report().  Reads nothing.

Children report on their service's status channel (proto.py) when they take
a client and when they are available again.  The master believes none of it
blindly ("it's all gossip after all", Postfix's master_status.c): a report
from a pid it does not know (already reaped, or not a child at all) is
dropped, one whose generation does not match the child's is logged and
dropped, an unknown status is warned about, and a report that repeats the
known state changes nothing.  A change from taken to available counts one
client served (the use count that decides whether an abnormal exit throttles).
"""

import logging

from ..log import LOGGER_NAME
from .proto import AVAILABLE, TAKEN, decode_status

logger = logging.getLogger(LOGGER_NAME)
_MAX_READS = 1000   # per wake-up, so a flooding child cannot starve the loop


def read_reports(service):
    """Every record waiting on the service's status channel, decoded."""
    records = []
    if service.status_socket is None:
        return records
    for _ in range(_MAX_READS):
        try:
            data = service.status_socket.recv(64)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        record = decode_status(data)
        if record is None:
            logger.warning("%s: ignoring a status report of %d bytes", service.title, len(data))
            continue
        records.append(record)
    return records


def apply_report(service, pid, generation, status):
    """Update the child's state; returns what happened (for tests and debugging)."""
    child = service.children.get(pid)
    if child is None:
        return "unknown pid"
    if child.generation != generation:
        logger.info("ignoring status update from child pid %d generation %d", pid, generation)
        return "wrong generation"
    if status not in (AVAILABLE, TAKEN):
        logger.warning("%s: ignoring unknown status %d allegedly from pid %d",
                       service.title, status, pid)
        return "unknown status"
    available = status == AVAILABLE
    if child.available == available:
        return "redundant"
    if available:
        child.use_count += 1
    child.available = available
    return "available" if available else "taken"
