"""sd_notify: tell systemd (Type=notify) that the master is ready or stopping.

Exports notify(state).  Reads $NOTIFY_SOCKET.

Written here rather than taken from a library: one datagram with
``READY=1``, ``RELOADING=1`` or ``STOPPING=1`` to the UNIX socket named in
NOTIFY_SOCKET -- a path, or an abstract name when it starts with "@".
Without NOTIFY_SOCKET nothing is sent.  Failures are reported, never fatal.
"""

import os
import socket


def notify(state, environ=None):
    """Send ``state``; True when a datagram went out."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    if not address or address[0] not in "@/":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode("utf-8"), address)
    except OSError:
        return False
    return True
