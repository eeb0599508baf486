"""A batch's next message pipelined behind the previous message's "." (smtp_batch_pipelining).

The agent (service.handle_batch(), with a real scache process) talks to a
scripted PIPELINING server that records, for each ".", whether the next
MAIL FROM had arrived before it answered - which only happens when the
client sent it without waiting for the reply.  The server can answer a
chosen message's "." with any reply and hang up after it.
"""

import logging
import select
import time

import pytest

from postclient.queue import queuefile
from postclient.scache import SAVE_ENDP
from postclient.smtp import engine, service
from tests.integration.servers import _ThreadedServer, serving
from tests.integration.test_reuse import (BatchContext, pending_after, queue_batch,  # noqa: F401
                                          queue_dir, scache_calls, scache_process, write_config)

pytestmark = pytest.mark.integration


class PipeliningServer(_ThreadedServer):
    """ESMTP with PIPELINING.  ``dot_replies``: message number (0-based, in the order
    the server sees "." lines) -> (reply or None for none, hang up after it)."""

    def __init__(self, dot_replies=None, wait=0.5):
        super().__init__()
        self.dot_replies = dot_replies or {}
        self.wait = wait
        self.dots = 0
        self.bodies = []            # the connection number of each message accepted
        self.mail_before_reply = []  # per ".": the next MAIL had arrived before the reply
        self.rsets = 0

    def handle(self, connection, record):
        number = len(self.connections) - 1
        buffer = [b""]

        def more(timeout):
            readable, _, _ = select.select([connection], [], [], timeout)
            if not readable:
                return False
            data = connection.recv(65536)
            if not data:
                record.closed_at = time.monotonic()
                raise EOFError
            record.received += data
            buffer[0] += data
            return True

        def line():
            while b"\r\n" not in buffer[0]:
                if self._stopping.is_set():
                    raise EOFError
                more(0.1)
            text, buffer[0] = buffer[0].split(b"\r\n", 1)
            return text.decode("ascii", "replace")

        connection.sendall(b"220 pipe.test ESMTP\r\n")
        try:
            while True:
                verb = line().split(" ")[0].split(":")[0].upper()
                if verb == "EHLO":
                    connection.sendall(b"250-pipe.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                       b"250 ENHANCEDSTATUSCODES\r\n")
                elif verb == "RCPT":
                    connection.sendall(b"250 2.1.5 Ok\r\n")
                elif verb == "MAIL":
                    connection.sendall(b"250 2.1.0 Ok\r\n")
                elif verb == "RSET":
                    self.rsets += 1
                    connection.sendall(b"250 2.0.0 Ok\r\n")
                elif verb == "DATA":
                    connection.sendall(b"354 go ahead\r\n")
                    while line() != ".":
                        pass
                    deadline = time.monotonic() + self.wait
                    while b"MAIL FROM" not in buffer[0] and time.monotonic() < deadline:
                        more(0.02)
                    self.mail_before_reply.append(b"MAIL FROM" in buffer[0])
                    reply, hang_up = self.dot_replies.get(self.dots,
                                                          ("250 2.0.0 Ok: queued", False))
                    if reply is not None and reply.startswith("250"):
                        self.bodies.append(number)
                    self.dots += 1
                    if reply is not None:
                        connection.sendall(reply.encode() + b"\r\n")
                    if hang_up:
                        return
                elif verb == "QUIT":
                    connection.sendall(b"221 2.0.0 Bye\r\n")
                    return
                else:
                    connection.sendall(b"502 5.5.2 Error: command not recognized\r\n")
        except (EOFError, OSError):
            return


@pytest.fixture
def pipelining_server():
    yield from serving(PipeliningServer)


@pytest.fixture
def batch_setup(queue_dir, pipelining_server, scache_process, scache_calls):
    """start(count, settings={}, **server_options) -> (config_dir, server, messages):
    main.cf, a scache process, the server and ``count`` queued one-recipient messages."""
    def start(count, settings=None, **server_options):
        config_dir = write_config(queue_dir, **(settings or {}))
        scache_process(config_dir)
        return config_dir, pipelining_server(**server_options), queue_batch(config_dir, count)
    return start


def deliver_batch(config_dir, server, messages, context=None):
    return service.handle_batch(
        {"request": "deliver", "nexthop": server.nexthop, "messages": messages,
         "flags": {"use_cached_connection": True, "store_connection": False}},
        context or BatchContext(config_dir))


def statuses_of(reply):
    return [[r["status"] for r in m["results"]] or m["status"] for m in reply["messages"]]


@pytest.mark.parametrize("setting, early", [("yes", [True, True, True, False]),
                                            ("no", [False, False, False, False])])
def test_each_next_message_leaves_behind_the_dot(batch_setup, setting, early):
    config_dir, server, messages = batch_setup(4, {"smtp_batch_pipelining": setting}, wait=0.3)
    reply = deliver_batch(config_dir, server, messages)
    assert statuses_of(reply) == [["sent"]] * 4
    assert server.mail_before_reply == early      # the last one ends with QUIT
    assert len(server.connections) == 1 and server.rsets == 0 and len(server.bodies) == 4
    assert pending_after(config_dir, messages) == [0, 0, 0, 0]


def test_a_refused_dot_fails_its_own_message_and_the_next_goes_on(batch_setup):
    config_dir, server, messages = batch_setup(
        3, dot_replies={1: ("554 5.7.1 Message rejected", False)})
    reply = deliver_batch(config_dir, server, messages)
    assert statuses_of(reply) == [["sent"], ["bounced"], ["sent"]]
    assert reply["messages"][1]["results"][0]["dsn"] == "5.7.1"
    assert server.mail_before_reply == [True, True, False] and len(server.connections) == 1
    bounces = open(f"{config_dir}/q/bounce/{messages[1]['queue_id']}").read()
    assert "554 5.7.1 Message rejected" in bounces


def test_a_server_that_hangs_up_at_the_dot_costs_the_next_message_nothing(batch_setup):
    # The reply to message 0's "." comes, then the server closes: message 1's
    # MAIL was already sent, but nothing of its content.  It goes out once, on
    # a new connection, and nothing is held against it.
    config_dir, server, messages = batch_setup(
        3, dot_replies={0: ("250 2.0.0 Ok: queued, bye", True)})
    reply = deliver_batch(config_dir, server, messages)
    assert statuses_of(reply) == [["sent"]] * 3
    assert server.mail_before_reply[0] is True
    assert server.bodies == [0, 1, 1]     # each message once
    assert len(server.connections) == 2
    assert pending_after(config_dir, messages) == [0, 0, 0]


def test_a_lost_connection_at_the_dot_defers_that_message_and_sends_no_other(batch_setup):
    # A lost connection puts the destination down: the batch stops, and the
    # next message, whose MAIL had left, was never sent (it stays queued).
    # no reply: the server hangs up
    config_dir, server, messages = batch_setup(2, dot_replies={0: (None, True)})
    reply = deliver_batch(config_dir, server, messages)
    first, second = reply["messages"]
    assert first["results"][0]["status"] == "deferred" and "destination_down" in first
    assert first["results"][0]["text"].endswith(
        "while sending end of data -- message may be sent more than once")
    assert server.mail_before_reply == [True]
    assert second["status"] == "skipped" and server.bodies == []
    assert len(server.connections) == 1 and pending_after(config_dir, messages) == [1, 1]


def test_a_next_message_whose_turn_does_not_come_is_never_sent(batch_setup, scache_calls):
    # The master goes away during message 0: message 1's MAIL, RCPT and DATA
    # left behind message 0's ".", but its turn never comes.  The session is
    # closed, never cached, and the server got no content for it.
    config_dir, server, messages = batch_setup(3)
    context = BatchContext(config_dir)
    context.lifeline_closed = lambda: True
    reply = deliver_batch(config_dir, server, messages, context)
    assert statuses_of(reply) == [["sent"], "skipped", "skipped"]
    assert server.mail_before_reply == [True]
    assert len(server.bodies) == 1
    [connection] = server.wait_closed()
    assert connection.closed_at is not None and SAVE_ENDP not in scache_calls
    assert b"QUIT" not in connection.received
    assert pending_after(config_dir, messages) == [0, 1, 1]
    assert queuefile.read_queue_file(f"{config_dir}/q/active/{messages[1]['queue_id']}").pending()


def test_trouble_taking_up_the_next_message_does_not_hold_back_the_dot(
        batch_setup, monkeypatch, caplog):
    config_dir, server, messages = batch_setup(2, wait=0.2)
    original = engine._Delivery.first_envelope
    calls = []

    def failing(self):
        calls.append(self.request.queue_id)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return original(self)

    monkeypatch.setattr(engine._Delivery, "first_envelope", failing)
    with caplog.at_level(logging.WARNING, logger="postclient.smtp"):
        reply = deliver_batch(config_dir, server, messages)
    assert statuses_of(reply) == [["sent"], ["sent"]]
    assert server.mail_before_reply == [False, False] and len(server.connections) == 1
    assert "B0: cannot take up the next message of the batch: a bug" in caplog.text
