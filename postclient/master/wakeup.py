"""master.cf wakeup timers: poke a service every N seconds.

Exports arm(), due(), fire(), next_deadline() and send_wakeup().  Reads the
wakeup column of master.cf.

A service with ``wakeup N`` is woken every N seconds from start; with
``N?`` only once it has been used (its first child was spawned), as with
Postfix, whose master_wakeup.c also wakes a service at once when its timer
starts.  Waking means connecting to the service's socket, sending the
attribute list ``{"request": "wakeup"}`` and closing, without waiting for a
reply; the connection is what makes the master spawn a child if none is
there.  A service that cannot take the connection now (backlog full) is
simply woken next time.
"""

import socket
import time

from .. import ipc

WAKEUP_REQUEST = {"request": "wakeup"}
_SEND_TIME = 0.5


def arm(service, now):
    """Start the timer when the service is eligible and it is not running yet."""
    spec = service.spec
    if (spec.wakeup and service.wakeup_at is None and not service.stopping
            and not service.removed and (not spec.wakeup_after_use or service.used)):
        service.wakeup_at = now


def due(service, now):
    return service.wakeup_at is not None and now >= service.wakeup_at


def fire(service, now, send=None):
    """Wake the service and schedule the next wakeup; returns whether it was sent."""
    service.wakeup_at = now + service.spec.wakeup
    return (send or send_wakeup)(service.socket_path)


def next_deadline(service):
    return service.wakeup_at


def send_wakeup(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.connect(path)
        ipc.send_message(sock, WAKEUP_REQUEST, time.monotonic() + _SEND_TIME)
        return True
    except (OSError, ipc.IpcError):
        return False
    finally:
        sock.close()
