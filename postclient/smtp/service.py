"""The smtp and lmtp services: delivery requests in, per-recipient results out.

Exports serve(conn, context) and shutdown(context) (the "single" service
callbacks run by the child skeleton; serve() may run in several threads at
once: smtp_agent_threads), handle_request(), handle_batch() and
PROTOCOL/VERSION.  The request/reply
protocol is documented in docs/protocols.md; postclient.smtp.agent_client is
its client side.  Reads everything the delivery engine reads, plus
queue_directory and ipc_timeout.

For each request: open and validate the queue file (a file that fails
validation is moved to corrupt/ with a log line), deliver the recipients
it names with the engine, and as soon as a recipient's fate is known:
  - sent: mark it done in the queue file (no fsync: queuefile.py) - and, when the sender asked
    for NOTIFY=SUCCESS and the server did not announce DSN (so the success
    notice is ours to send), append a trace record first;
  - bounced: append a bounce record (fsync), then mark it done;
  - deferred: append a defer record (fsync); it stays pending.
That order means a crash at any point loses no notice and never re-sends a
recipient already marked done (security rules 2 and 13).  Recipients the
queue file already marks done are skipped, whoever asks for them.

A batched request (``messages``: several queue files for one next-hop) is
delivered message by message, each exactly as a request of its own, over
one session kept between them; after a message reports the destination down
(or a best-MX hand-off), or once the master has gone away (the skeleton's
lifeline: a stopping agent finishes the message at hand, as Postfix's agents
finish their request, but starts no other), the rest are not attempted and
come back "skipped".  Every message of a batch is locked from the moment the
request comes (_lock_batch()), not only while it is being delivered.  With
smtp_batch_pipelining, each next message is taken up (_prepare()) when the
one before it ends its data, so that its MAIL... can follow that "."
(docs/protocols.md).
"""

import fcntl
import logging
import os
import time

from .. import ipc
from ..pid import current as current_pid
from ..queue import queuefile, statuslog
from . import engine, reuse
from .request import DeliveryRequest, Recipient

PROTOCOL = "delivery"
VERSION = 1
QUEUE_NAMES = ("incoming", "active", "deferred", "hold")

log = logging.getLogger("postclient.smtp")


class RequestError(Exception):
    """The request itself is unusable (bad attributes, missing or corrupt queue file)."""

    def __init__(self, reason, corrupt=False):
        super().__init__(reason)
        self.corrupt = corrupt


def _queue_path(queue_directory, attributes):
    name = attributes.get("queue_name")
    queue_id = attributes.get("queue_id")
    if name not in QUEUE_NAMES or not isinstance(queue_id, str) or not queue_id \
            or "/" in queue_id or queue_id.startswith("."):
        raise RequestError(f"bad queue name or id: {name!r} {queue_id!r}")
    return f"{queue_directory}/{name}/{queue_id}"     # os.path.join costs more, per message


def _requested_recipients(attributes, queued):
    """The queue file's pending recipients that the request names by offset."""
    by_offset = {r.offset: r for r in queued.recipients}
    wanted = attributes.get("recipients")
    if not isinstance(wanted, list) or not wanted:
        raise RequestError("request names no recipients")
    chosen, skipped = [], []
    for item in wanted:
        offset = item.get("offset") if isinstance(item, dict) else None
        record = by_offset.get(offset)
        if record is None:
            raise RequestError(f"no recipient record at offset {offset!r} in the queue file")
        if record.done:
            skipped.append(record)
        else:
            chosen.append(record)
    return chosen, skipped


MAX_BATCH = 1000        # messages in one batched request


def handle_batch(attributes, context):
    """Deliver a batched request; returns {"status", "messages": [reply...], "pid"}."""
    messages = attributes.get("messages")
    if not isinstance(messages, list) or not messages or len(messages) > MAX_BATCH \
            or not all(isinstance(m, dict) for m in messages):
        reason = f"a batch needs 1 to {MAX_BATCH} messages"
        log.warning("delivery request refused: %s", reason)
        return {"status": "error", "reason": reason, "messages": [], "pid": current_pid()}
    flags = attributes.get("flags") or {}
    batch = engine.Batch()      # lets each message go on with the previous one's session
    locks = _lock_batch(messages, context.queue_directory)
    try:
        replies = _deliver_batch(attributes, messages, flags, batch, context, locks)
    finally:
        reuse.keep_batch_session(batch)     # the last session waits for the next request
        for descriptor in locks:
            if descriptor is not None:
                os.close(descriptor)
    return {"status": "ok", "messages": replies, "pid": current_pid()}


def _lock_batch(messages, queue_directory):
    """A shared lock on every queue file of the batch, from the start: a list
    with an open descriptor for each message (None where the file cannot be
    opened), which its delivery then reads and marks through.

    A message waits for its turn in the batch, but it is this agent's from the
    moment the request came: a queue manager that restarts meanwhile (the one
    that sent the batch was killed) finds it locked and leaves it alone,
    instead of sending it a second time alongside this agent.  Postfix's
    agent locks its one message as soon as the request comes.  Files that
    cannot be opened are left to handle_request(), which reports them.
    """
    locks = []
    for message in messages:
        try:
            descriptor = queuefile.open_for_marking(_queue_path(queue_directory, message))
        except (RequestError, OSError):
            locks.append(None)
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH)
        except OSError:
            os.close(descriptor)    # handle_request() tries again, and reports a failure
            descriptor = None
        locks.append(descriptor)
    return locks


def _deliver_batch(attributes, messages, flags, batch, context, locks):
    replies, stop = [], None
    stopping = getattr(context, "lifeline_closed", None)   # the master went away (skeleton)
    prepared = {}       # position -> _prepare() result, made once
    singles = {}        # position -> single(), made once

    def single(position):
        if position not in singles:
            last = position == len(messages) - 1
            singles[position] = dict(messages[position], nexthop=attributes.get("nexthop"), flags={
                # keep the session open for the next message; the last follows the batch's flags
                "use_cached_connection": bool(flags.get("use_cached_connection")) or position > 0,
                "store_connection": bool(flags.get("store_connection")) or not last})
        return singles[position]

    def prepare(position):
        if position not in prepared:
            prepared[position] = _prepare(single(position), context, True, batch, locks[position])
        return prepared[position]

    def prepare_next(position):
        """For the session of the message before: the next message's delivery
        (engine.Batch.prepare_next).  If its turn does not come after all (the
        batch stops), the session that carries its transaction is closed
        before any of its content is sent (reuse.py)."""
        if locks[position] is None:
            return None
        try:
            found = prepare(position)
        except Exception as error:      # its own turn reports it
            log.warning("%s: preparing the next message of a batch: %s",
                        messages[position].get("queue_id", "?"), error)
            return None
        return found.delivery if isinstance(found, _Prepared) else None

    try:
        for position in range(len(messages)):
            if stop is None and position and stopping is not None and stopping():
                stop = "delivery agent stopping"    # finish the message at hand, start no other
            if stop is not None:
                replies.append({"status": "skipped", "reason": stop, "results": [],
                                "pid": current_pid()})
                continue
            more = position + 1 < len(messages)
            batch.prepare_next = (lambda after=position + 1: prepare_next(after)) if more else None
            reply = handle_request(single(position), context, hold_idle=True, batch=batch,
                                   descriptor=locks[position], prepared=prepare(position))
            replies.append(reply)
            if reply.get("destination_down"):
                stop = "destination down"
            elif reply.get("best_mx_transport"):
                stop = "best MX hand-off"
    finally:
        batch.prepare_next = None
    return replies


class _Prepared:
    """A request read and checked, its delivery made (engine.prepare()), not yet run."""

    def __init__(self, marker, own_marker, skipped, delivery):
        self.marker = marker            # the queue file's locked descriptor
        self.own_marker = own_marker    # closed by handle_request() (else the batch's)
        self.skipped = skipped          # recipients the queue file marks done already
        self.delivery = delivery


def handle_request(attributes, context, hold_idle=False, batch=None, descriptor=None,
                   prepared=None):
    """Deliver one request; returns the reply attributes.

    ``hold_idle``: keep a cacheable idle session in this process for the next
    request (engine.deliver(); serve() asks for it).  ``batch``: the batched
    request this message is part of (handle_batch()), and ``descriptor`` the
    queue file's descriptor it opened and locked (left open here);
    ``prepared``: what _prepare() made of this request already (a batch
    prepares its next message while the one before is being sent).
    """
    if prepared is None:
        prepared = _prepare(attributes, context, hold_idle, batch, descriptor)
    if not isinstance(prepared, _Prepared):
        return prepared                 # refused: the reply
    try:
        outcome = prepared.delivery.run()
    finally:
        if prepared.own_marker:
            os.close(prepared.marker)
    results = [dict(result.as_json(), offset=result.recipient.offset) for result in outcome.results]
    results += [{"recipient": r.address, "offset": r.offset, "status": "done"}
                for r in prepared.skipped]
    reply = {"status": "ok", "results": results, "pid": current_pid()}
    if outcome.destination_down is not None:
        reply["destination_down"] = {"dsn": outcome.destination_down.dsn,
                                     "text": outcome.destination_down.text}
    if outcome.best_mx_transport:
        reply["best_mx_transport"] = outcome.best_mx_transport
    return reply


def _prepare(attributes, context, hold_idle, batch, descriptor):
    """Open, lock and read the queue file and make the delivery: a _Prepared, or
    the reply that refuses the request."""
    queue_directory = context.queue_directory
    marker = None
    own_marker = descriptor is None         # else the batch closes it
    try:
        path = _queue_path(queue_directory, attributes)
        nexthop = attributes.get("nexthop")
        if not isinstance(nexthop, str) or not nexthop:
            raise RequestError("request has no next-hop")
        # The file is read, and recipients marked done, through this one
        # descriptor, so the marks still reach the file if it is renamed
        # while we deliver (postclient super -h/-r).
        marker, size = _open_marker(path, descriptor)
        try:
            queued = queuefile.read_queue_file(path, marker, size, with_content=True)
        except queuefile.CorruptQueueFile as error:
            queuefile.move_to_corrupt(queue_directory, path, str(error))
            raise RequestError(f"corrupt queue file {path}: {error}", corrupt=True) from None
        chosen, skipped = _requested_recipients(attributes, queued)
    except RequestError as error:
        if marker is not None and own_marker:
            os.close(marker)
        log.warning("%s: delivery request refused: %s", attributes.get("queue_id", "?"), error)
        return {"status": "corrupt" if error.corrupt else "error", "reason": str(error),
                "results": [], "pid": current_pid()}
    except BaseException:
        if marker is not None and own_marker:
            os.close(marker)
        raise
    flags = attributes.get("flags") or {}
    request = DeliveryRequest(
        queue_id=queued.queue_id, nexthop=nexthop, sender=queued.sender,
        recipients=[Recipient(r.address, r.original, r.orcpt, r.notify, r.offset) for r in chosen],
        # A small message came with the envelope's read; a larger one is streamed.
        content=queued.content if queued.content is not None else b"",
        content_size=queued.content_size,
        open_content=None if queued.content is not None else (
            lambda: queuefile.open_content(queued, marker)),
        encoding=queued.encoding, envid=queued.envid, ret=queued.ret, smtputf8=queued.smtputf8,
        arrival_time=queued.arrival_time, client=queued.client,
        use_cached_connection=bool(flags.get("use_cached_connection")),
        store_connection=bool(flags.get("store_connection")))
    protocol = "lmtp" if context.command == "lmtp" else "smtp"

    def status_record(recipient, result):
        return statuslog.StatusRecord(
            recipient=recipient.address, original=recipient.original, orcpt=recipient.orcpt,
            notify=recipient.notify, offset=recipient.offset, status=result.status, dsn=result.dsn,
            relay=result.relay, reply=result.reply, text=result.text, time=time.time())

    def record(index, result):
        recipient = request.recipients[index]
        if result.status == "sent":
            if "SUCCESS" in recipient.notify.upper() and not result.server_dsn:
                # A success notice is ours to send (§8): "relayed", or for LMTP
                # with lmtp_assume_final "delivered".
                status = status_record(recipient, result)
                if protocol == "lmtp" and context.config.get("lmtp_assume_final"):
                    status.status = "delivered"
                statuslog.append_status(queue_directory, "trace", queued.queue_id, status)
            queuefile.mark_done_fd(marker, recipient.offset, path, parsed=True)
        elif result.status == "bounced":
            statuslog.append_status(queue_directory, "bounce", queued.queue_id,
                                    status_record(recipient, result))
            queuefile.mark_done_fd(marker, recipient.offset, path, parsed=True)
        else:
            statuslog.append_status(queue_directory, "defer", queued.queue_id,
                                    status_record(recipient, result))

    try:
        delivery = engine.prepare(context.config, request, protocol, on_result=record,
                                  hold_idle=hold_idle, batch=batch)
    except BaseException:
        if own_marker:
            os.close(marker)
        raise
    return _Prepared(marker, own_marker, skipped, delivery)


def _open_marker(path, descriptor):
    """The queue file's descriptor, locked shared for the whole delivery (a queue
    manager that restarts meanwhile sees the file is being delivered and leaves
    it alone), and its size where it was just learnt (else None).  A batch
    opened it already (``descriptor``): it is used if the path still names
    that file, which super -d, -h or -r may have changed while the message
    waited for its turn."""
    if descriptor is not None:
        try:
            now, opened = os.stat(path), os.fstat(descriptor)
        except FileNotFoundError:
            now = opened = None
        if now is None or (now.st_ino, now.st_dev) != (opened.st_ino, opened.st_dev):
            raise RequestError(f"queue file {path} does not exist")
        return descriptor, opened.st_size
    try:
        marker = queuefile.open_for_marking(path)
    except FileNotFoundError:
        raise RequestError(f"queue file {path} does not exist") from None
    try:
        fcntl.flock(marker, fcntl.LOCK_SH)
    except BaseException:
        os.close(marker)
        raise
    return marker, None


def serve(conn, context):
    """One client connection: announce, then answer requests until it closes.

    A cacheable idle session may stay in this process between requests
    (reuse.py); shutdown() hands it over before the process exits.
    """
    _serve(conn, context)


def shutdown(context):
    """The skeleton's last call before the process exits (max_use, max_idle or
    the master gone): every kept session goes to scache now."""
    reuse.release_held()


def _serve(conn, context):
    timeout = context.ipc_timeout
    try:
        ipc.announce(conn, PROTOCOL, VERSION, time.monotonic() + timeout)
    except ipc.IpcError:
        pass            # a wakeup may send its request and close without reading this
    while True:
        try:
            attributes = ipc.receive_message(conn, time.monotonic() + timeout)
        except ipc.IpcClosed:
            return
        except ipc.IpcError as error:
            log.warning("delivery request: %s", error)
            return
        kind = attributes.get("request")
        if kind == "wakeup":
            return
        if kind != "deliver":
            log.warning("unknown request %r from client; disconnecting", kind)
            return
        if "messages" in attributes:
            reply = handle_batch(attributes, context)
        else:
            reply = handle_request(attributes, context, hold_idle=True)
        try:
            ipc.send_message(conn, reply, time.monotonic() + timeout)
        except ipc.IpcError as error:
            log.warning("%s: cannot send the delivery reply: %s", attributes.get("queue_id"), error)
            return
