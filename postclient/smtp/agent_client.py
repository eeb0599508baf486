"""Client side of the delivery protocol: ask an smtp/lmtp service to deliver.

Exports deliver_request() and AgentError.  Used by the queue manager and by
tests; the protocol is in docs/protocols.md.

The caller names the queue file and the recipients by their record offsets;
the agent reads everything else from the queue file, so a request cannot
make it send something the queue does not hold.
"""

import time

from .. import ipc
from .service import PROTOCOL, VERSION


class AgentError(Exception):
    """The delivery agent could not be reached or broke off (it may have crashed).

    Postfix's queue manager defers such recipients (4.3.0) and throttles the
    transport briefly.
    """


def deliver_request(socket_path, queue_name, queue_id, nexthop, offsets, *, timeout,
                    use_cached_connection=False, store_connection=False):
    """Send one delivery request and wait for its reply (a dict; see docs/protocols.md).

    ``timeout`` bounds connecting and the whole delivery: a delivery can take
    many minutes (several servers, each with its own timeouts), so callers pass
    something like ipc_timeout, not a short value.
    """
    deadline = time.monotonic() + timeout
    try:
        sock = ipc.connect_unix(socket_path, deadline)
    except ipc.IpcError as error:
        raise AgentError(str(error)) from None
    try:
        ipc.expect_protocol(sock, PROTOCOL, VERSION, deadline)
        ipc.send_message(sock, {
            "request": "deliver", "queue_name": queue_name, "queue_id": queue_id,
            "nexthop": nexthop, "recipients": [{"offset": offset} for offset in offsets],
            "flags": {"use_cached_connection": use_cached_connection,
                      "store_connection": store_connection},
        }, deadline)
        reply = ipc.receive_message(sock, deadline)
    except ipc.IpcError as error:
        raise AgentError(f"{socket_path}: {error}") from None
    finally:
        sock.close()
    if reply.get("status") not in ("ok", "error", "corrupt") or not isinstance(reply.get("results"), list):
        raise AgentError(f"{socket_path}: malformed reply")
    return reply
