"""Client side of the delivery protocol: ask an smtp/lmtp service to deliver.

Exports deliver_request(), deliver_batch() and AgentError, which wait for the agent, and
the pieces they are made of for a caller with its own event loop: single_request(),
single_reply(), batch_request() and batch_replies() (the queue manager,
postclient/queue/qmgr_requests.py).  The protocol is in docs/protocols.md.

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
    request = single_request(queue_name, queue_id, nexthop, offsets,
                             use_cached_connection=use_cached_connection,
                             store_connection=store_connection)
    return single_reply(_exchange(socket_path, request, timeout), socket_path)


def deliver_batch(socket_path, nexthop, messages, *, timeout, use_cached_connection=False,
                  store_connection=False):
    """One request for several messages to one next-hop; returns their replies in order.

    ``messages``: (queue_name, queue_id, offsets) tuples.  Each reply is what
    deliver_request() would return for that message alone, or
    {"status": "skipped"} for one the agent did not attempt (the destination
    went down earlier in the batch).  ``timeout`` bounds the whole batch.
    """
    request = batch_request(nexthop, messages, use_cached_connection=use_cached_connection,
                            store_connection=store_connection)
    return batch_replies(_exchange(socket_path, request, timeout), socket_path, len(messages))


# The requests and the checks of their replies, apart from the exchange, for a
# caller that talks to the agent itself (the queue manager's event loop).
def single_request(queue_name, queue_id, nexthop, offsets, *, use_cached_connection=False,
                   store_connection=False):
    """The attribute list of deliver_request()."""
    return {"request": "deliver", "queue_name": queue_name, "queue_id": queue_id,
            "nexthop": nexthop, "recipients": [{"offset": offset} for offset in offsets],
            "flags": {"use_cached_connection": use_cached_connection,
                      "store_connection": store_connection}}


def single_reply(reply, socket_path):
    """deliver_request()'s reply, checked; AgentError when it is malformed."""
    _check(reply, socket_path)
    return reply


def batch_request(nexthop, messages, *, use_cached_connection=False, store_connection=False):
    """The attribute list of deliver_batch()."""
    return {"request": "deliver", "nexthop": nexthop,
            "messages": [{"queue_name": name, "queue_id": queue_id,
                          "recipients": [{"offset": offset} for offset in offsets]}
                         for name, queue_id, offsets in messages],
            "flags": {"use_cached_connection": use_cached_connection,
                      "store_connection": store_connection}}


def batch_replies(reply, socket_path, count):
    """deliver_batch()'s per-message replies out of the agent's ``reply`` to a
    request for ``count`` messages; AgentError when it refused or is malformed."""
    replies = reply.get("messages")
    if reply.get("status") == "error" and not replies:
        raise AgentError(f"{socket_path}: batch refused: {reply.get('reason')}")
    if reply.get("status") != "ok" or not isinstance(replies, list) or len(replies) != count:
        raise AgentError(f"{socket_path}: malformed reply")
    for each in replies:
        _check(each, socket_path, ("ok", "error", "corrupt", "skipped"))
    return replies


def _exchange(socket_path, request, timeout):
    deadline = time.monotonic() + timeout
    try:
        sock = ipc.connect_unix(socket_path, deadline)
    except ipc.IpcError as error:
        raise AgentError(str(error)) from None
    try:
        ipc.expect_protocol(sock, PROTOCOL, VERSION, deadline)
        ipc.send_message(sock, request, deadline)
        return ipc.receive_message(sock, deadline)
    except ipc.IpcError as error:
        raise AgentError(f"{socket_path}: {error}") from None
    finally:
        sock.close()


def _check(reply, socket_path, statuses=("ok", "error", "corrupt")):
    if not isinstance(reply, dict) or reply.get("status") not in statuses \
            or not isinstance(reply.get("results"), list):
        raise AgentError(f"{socket_path}: malformed reply")
