"""Client side of the scache protocol, used by the smtp/lmtp service (smtp/reuse.py).

Exports ScacheClient, shared_client(queue_directory, timeout) and
MAX_FAILURES.  Reads nothing itself: the caller passes
$queue_directory/private/scache and connection_cache_protocol_timeout.

One persistent connection per process (Postfix's auto_clnt), opened at the
first call and kept between delivery requests.  The threads of a threaded
agent share it: one call at a time (a lock), each a short exchange.  Every
call is bounded by the protocol timeout (connect, announcement, request and
reply together).

The cache is an optimisation, never a dependency (security rule 14): every
problem is a miss.  A connection the service closed while we were idle (it
exited after max_idle, or was restarted) is noticed before the next request
and simply reopened.  Any other failure - nobody listening, a timeout, a
broken or nonsensical reply - counts; after MAX_FAILURES in a row the
client logs "warning: disabling connection caching" (once) and every later
call is a no-op miss for the rest of the process's life.  A find request
is tried again at once on a fresh connection after a first failure; a
save_endp request is not, so that one socket can never end up cached twice.

Descriptors: save_endp() sends a copy and leaves the caller's descriptor
open (the caller closes it); a find_*() hit returns a descriptor that the
caller owns.  Anything else received is closed here.
"""

import logging
import os
import select
import threading
import time

from .. import ipc
from ..pid import current as current_pid
from . import (FIND_DEST, FIND_ENDP, PROTOCOL, SAVE_DEST, SAVE_ENDP, STATUS_BAD, STATUS_FAIL,
               STATUS_OK, VERSION)

log = logging.getLogger("postclient.scache")

MAX_FAILURES = 2
SOCKET_NAME = "scache"


class _Failure(Exception):
    """The service did not answer sensibly (an ipc.IpcError or a protocol violation)."""


class ScacheClient:
    """save_endp / find_endp / save_dest / find_dest over one UNIX socket."""

    def __init__(self, path, timeout):
        self.path = path
        self.timeout = timeout
        self.sock = None
        self.failures = 0
        self.disabled = False
        self.pid = current_pid()
        self._lock = threading.Lock()     # one call at a time over the one connection

    # --- the four requests ------------------------------------------------------------
    def save_endp(self, ttl, label, properties, fd):
        """Cache a copy of ``fd`` under the endpoint ``label``; True when the service took it."""
        reply = self._call({"request": SAVE_ENDP, "ttl": int(ttl), "label": label,
                            "properties": properties}, fds=[fd], retry=False)
        return reply is not None and reply[0].get("status") == STATUS_OK

    def find_endp(self, label):
        """(fd, properties) of the oldest connection cached for ``label``, or None."""
        reply = self._call({"request": FIND_ENDP, "label": label}, want_fd=True)
        if reply is None or reply[1] is None:
            return None
        attributes, fd = reply
        return fd, attributes.get("properties", "")

    def save_dest(self, ttl, label, properties, endp_label):
        """Bind the destination ``label`` to ``endp_label``; True when the service took it."""
        reply = self._call({"request": SAVE_DEST, "ttl": int(ttl), "label": label,
                            "properties": properties, "endp_label": endp_label})
        return reply is not None and reply[0].get("status") == STATUS_OK

    def find_dest(self, label):
        """(fd, destination properties, endpoint properties) for ``label``, or None."""
        reply = self._call({"request": FIND_DEST, "label": label}, want_fd=True)
        if reply is None or reply[1] is None:
            return None
        attributes, fd = reply
        return fd, attributes.get("dest_properties", ""), attributes.get("endp_properties", "")

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    # --- one call, with failure accounting -------------------------------------------------
    def _call(self, request, fds=(), want_fd=False, retry=True):
        """(reply attributes, fd or None), or None when the cache is unusable."""
        with self._lock:
            return self._call_locked(request, fds, want_fd, retry)

    def _call_locked(self, request, fds, want_fd, retry):
        attempts = 0
        while not self.disabled:
            attempts += 1
            try:
                result = self._once(request, fds, want_fd)
            except _Failure as error:
                self.close()
                self.failures += 1
                if self.failures >= MAX_FAILURES:
                    log.warning("problem talking to service %s: %s", self.path, error)
                    log.warning("disabling connection caching")
                    self.disabled = True
                    return None
                log.info("problem talking to service %s: %s", self.path, error)
                if retry and attempts < MAX_FAILURES:
                    continue
                return None
            self.failures = 0
            return result
        return None

    def _connection(self, deadline):
        if self.sock is not None and self.pid != current_pid():
            self.sock = None            # the parent's connection: not ours to use (or close)
        if self.sock is not None and self._stale():
            self.close()                # the service hung up while we were idle: not a failure
        if self.sock is None:
            self.pid = current_pid()
            try:
                sock = ipc.connect_unix(self.path, deadline)
            except ipc.IpcError as error:
                raise _Failure(str(error)) from None
            try:
                ipc.expect_protocol(sock, PROTOCOL, VERSION, deadline)
            except ipc.IpcError as error:
                sock.close()
                raise _Failure(str(error)) from None
            self.sock = sock
        return self.sock

    def _stale(self):
        """Between requests the service never speaks: readable means EOF (or garbage)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def _once(self, request, fds, want_fd):
        deadline = time.monotonic() + self.timeout
        sock = self._connection(deadline)
        try:
            ipc.send_message(sock, request, deadline, fds=fds)
            attributes, received = ipc.receive_message(sock, deadline, want_fds=True)
        except ipc.IpcError as error:
            raise _Failure(str(error)) from None
        status = attributes.get("status")
        if status == STATUS_OK and want_fd:
            if len(received) != 1:
                ipc.close_fds(received)
                raise _Failure(f"{request['request']}: expected one file descriptor, "
                               f"got {len(received)}")
            return attributes, received[0]
        if received:
            ipc.close_fds(received)
            raise _Failure(f"{request['request']}: unexpected file descriptor in the reply")
        if status == STATUS_BAD:
            log.warning("%s: %s request refused: %s", self.path, request["request"],
                        attributes.get("reason", "bad request"))
        elif status not in (STATUS_OK, STATUS_FAIL):
            raise _Failure(f"{request['request']}: bad status {status!r} in the reply")
        return attributes, None


_shared = {}
_shared_lock = threading.Lock()


def shared_client(queue_directory, timeout):
    """This process's client for ``$queue_directory/private/scache`` (made at first use)."""
    path = os.path.join(queue_directory, "private", SOCKET_NAME)
    with _shared_lock:
        client = _shared.get(path)
        if client is None or client.pid != current_pid():
            client = _shared[path] = ScacheClient(path, timeout)
    client.timeout = timeout
    return client


__all__ = ["ScacheClient", "shared_client", "MAX_FAILURES", "SOCKET_NAME"]
