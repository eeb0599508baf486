"""Delivery requests of the queue manager, carried by its event loop: no thread each.

Exports Requests.  Reads nothing itself: the queue manager gives each request
its deadline (ipc_timeout).

One request is one connection to a delivery agent's service socket
(private/<transport>), as in agent_client.py: the agent announces its
protocol, the queue manager sends the request, the agent replies once the
delivery is over, and the connection closes.  Here the socket is
non-blocking and registered with the queue manager's selector; ready()
moves an exchange on whenever its socket can be read or written, and
expire() ends those past their deadline.  Each finished request becomes one
(batch, replies, error) tuple in ``done``, for the loop to take:
``replies`` as agent_client.deliver_batch() returns them, or ``error``, a
text, when the agent could not be reached, broke off (it may have crashed),
timed out or sent something malformed: what agent_client.AgentError says.

Why not a thread per request, blocking in agent_client: in the drain
benchmark a thread cost about 0.25 ms of CPU to start and end, and the
blocking exchange, with a socket timeout set before every read and write,
about 0.3 ms; at 260 requests per 2,000 messages that was about 7% of the
relay's CPU (bench/RESULTS.md, "Session 14").  Postfix's qmgr, too, talks
to its delivery agents from its one event loop.
"""

import collections
import selectors
import socket

from .. import ipc
from ..smtp.agent_client import AgentError
from ..smtp.service import PROTOCOL, VERSION

READ_SIZE = 65536


class _Exchange:
    """One request on its way: the socket, what is left to send, what was read."""

    __slots__ = ("batch", "path", "sock", "request", "check", "deadline", "reader", "outgoing",
                 "announced", "events")

    def __init__(self, batch, path, sock, request, check, deadline):
        self.batch = batch
        self.path = path
        self.sock = sock
        self.request = request          # the attribute list, encoded once announced
        self.check = check              # reply -> replies, or AgentError
        self.deadline = deadline        # time.monotonic()
        self.reader = ipc.MessageReader()
        self.outgoing = b""
        self.announced = False
        self.events = selectors.EVENT_READ


class Requests:
    """The delivery requests in flight; ``done`` holds those that ended."""

    def __init__(self, selector):
        self.selector = selector
        self.exchanges = set()
        self.done = collections.deque()     # (batch, replies or None, error or None)

    def __len__(self):
        return len(self.exchanges)

    def start(self, batch, path, request, check, deadline):
        """Connect to the agent's socket ``path`` for ``request``; ``check(reply)``
        gives the replies or raises AgentError."""
        sock = None
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            sock.connect(path)
        except OSError as error:        # EMFILE too: the request fails, the loop goes on
            if sock is not None:
                sock.close()
            # As a blocking connect would: a full listen queue (EAGAIN) is a failure too.
            self.done.append((batch, None, f"connect to {path}: {error.strerror or error}"))
            return
        exchange = _Exchange(batch, path, sock, request, check, deadline)
        self.exchanges.add(exchange)
        self.selector.register(sock, selectors.EVENT_READ, exchange)

    def ready(self, exchange, events):
        """The selector found ``exchange``'s socket ready for ``events``."""
        try:
            if events & selectors.EVENT_WRITE:
                self._send(exchange)
            if events & selectors.EVENT_READ:
                self._read(exchange)
        except ipc.IpcError as error:
            self._end(exchange, None, f"{exchange.path}: {error}")
        except AgentError as error:
            self._end(exchange, None, str(error))
        except Exception as error:          # never lose track of a request
            self._end(exchange, None, f"{exchange.path}: {type(error).__name__}: {error}")

    def timeout(self, now):
        """Seconds until the next deadline (None when nothing is in flight)."""
        if not self.exchanges:
            return None
        return max(0.0, min(exchange.deadline for exchange in self.exchanges) - now)

    def expire(self, now):
        """End the requests whose deadline (time.monotonic()) has passed."""
        for exchange in [e for e in self.exchanges if e.deadline <= now]:
            self._end(exchange, None, f"{exchange.path}: timeout")

    def _read(self, exchange):
        try:
            data = exchange.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            raise ipc.IpcError(f"read error: {error.strerror or error}") from None
        if not data:
            if exchange.reader.partial:
                raise ipc.IpcError("lost connection in the middle of a message")
            raise ipc.IpcError("connection closed")
        exchange.reader.feed(data)
        while exchange in self.exchanges:
            message = exchange.reader.next_message()
            if message is None:
                return
            if not exchange.announced:
                ipc.check_protocol(message, PROTOCOL, VERSION)
                exchange.announced = True
                exchange.outgoing = ipc.encode_message(exchange.request)
                self._send(exchange)
            else:
                self._end(exchange, exchange.check(message), None)

    def _send(self, exchange):
        try:
            while exchange.outgoing:
                sent = exchange.sock.send(exchange.outgoing)
                exchange.outgoing = exchange.outgoing[sent:]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as error:
            raise ipc.IpcError(f"write error: {error.strerror or error}") from None
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if exchange.outgoing else 0)
        if wanted != exchange.events:
            exchange.events = wanted
            self.selector.modify(exchange.sock, wanted, exchange)

    def _end(self, exchange, replies, error):
        self._drop(exchange)
        self.done.append((exchange.batch, replies, error))

    def _drop(self, exchange):
        self.exchanges.discard(exchange)
        try:
            self.selector.unregister(exchange.sock)
        except (KeyError, ValueError):
            pass
        exchange.sock.close()

    def close(self):
        """Drop every request in flight (the loop is gone); their agents see the
        connection close, as when a queue manager dies."""
        for exchange in list(self.exchanges):
            self._drop(exchange)


__all__ = ["Requests"]
