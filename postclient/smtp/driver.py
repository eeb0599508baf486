"""The socket driver: runs the sans-I/O protocol core over a real connection.

Exports connect(), Connection, run_session() and, for the connection cache
(reuse.py), probe() and quit_session().  Reads smtp_connect_timeout,
smtp_bind_address, smtp_bind_address6, tcp_windowsize,
smtp_pix_workaround_delay_time, smtp_pix_workaround_threshold_time and
smtp_line_length_limit (or the lmtp_* mirrors), through SessionOptions.

Time is a deadline (STYLE.md, dnspython): every state's timeout covers the
whole command and its reply, restarted only when the core's state or its
count of replies changes, so a server that drips one byte a second cannot
hold a session (security rule 7).  The body gets smtp_data_xfer_timeout plus
one second per 500 bytes already sent, like Postfix 3.7's per-request
deadline with its minimal data rate.

The body is the stored content passed through the codec (postclient.codec):
CRLF only, dot-stuffed, folded at smtp_line_length_limit, downgraded to 7bit
when the core says the server lacks 8BITMIME.  STARTTLS and AUTH slot in
where the core pauses in READY (``on_ready``), before MAIL.
"""

import dataclasses
import errno
import math
import os
import select
import socket
import time
from typing import Any

from .. import codec
from .events import (NEED_DATA, PAUSED, Closed, EndOfDataReply, ReadyForData, Ready,
                     RsetReply, SessionFailed, TransactionDone)
from .trouble import connect_failed

READ_SIZE = 65536
BODY_CHUNK = 256 * 1024
MIN_DATA_RATE = 500          # bytes per second granted beyond smtp_data_xfer_timeout


@dataclasses.dataclass
class SessionOptions:
    line_length_limit: Any = 990  # int
    pix_delay: Any = 10  # int
    pix_threshold: Any = 500  # int
    message_age: Any = 0.0  # float
    mime_nesting_limit: Any = 100  # int
    mime_boundary_length_limit: Any = 2048  # int

    def for_message(self, message_age):
        """These options with a message's age.  A copy is made per message, and
        copy.copy() alone took 2.8% of a delivery agent's CPU (py-spy): the
        constructor, called directly, is as cheap and works compiled too."""
        return SessionOptions(self.line_length_limit, self.pix_delay, self.pix_threshold,
                              message_age, self.mime_nesting_limit,
                              self.mime_boundary_length_limit)

    @classmethod
    def from_config(cls, config, protocol, message_age):
        from ..config.registry import protocol_name

        def get(name):
            return config.get(protocol_name(name, protocol))

        return cls(line_length_limit=get("smtp_line_length_limit"),
                   pix_delay=get("smtp_pix_workaround_delay_time"),
                   pix_threshold=get("smtp_pix_workaround_threshold_time"),
                   message_age=message_age,
                   mime_nesting_limit=config.get("mime_nesting_limit"),
                   mime_boundary_length_limit=config.get("mime_boundary_length_limit"))


class ConnectError(Exception):
    """Connecting failed; ``status`` is the 4.4.1 Status Postfix would record."""

    def __init__(self, status):
        super().__init__(status.text)
        self.status = status


def _reason(error):
    if isinstance(error, socket.timeout):
        return "Connection timed out"
    if error.errno:
        return os.strerror(error.errno)
    return str(error) or type(error).__name__


def connect(address, timeout, bind_address="", bind_address6="", windowsize=0):
    """A connected socket to ``address`` (a resolve.ServerAddress); ConnectError on failure.

    ``timeout`` 0 means the operating system's own limit (lmtp_connect_timeout).
    """
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        if address.family == socket.AF_INET and bind_address:
            sock.bind((bind_address, 0))
        elif address.family == socket.AF_INET6 and bind_address6:
            sock.bind((bind_address6, 0))
        if windowsize and address.family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, windowsize)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, windowsize)
        sock.settimeout(timeout or None)
        sock.connect(address.sockaddr)
    except OSError as error:
        sock.close()
        raise ConnectError(connect_failed(address.endpoint, _reason(error))) from None
    if address.family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Connection:
    """A socket plus deadline-bounded reads and writes.

    The socket is used in non-blocking mode and waited on with poll() up to
    the deadline: one send() per write that fits the socket buffer and one
    poll() plus one recv() per read, where a socket timeout would cost an
    ioctl, a poll and the call itself every time.
    """

    def __init__(self, sock):
        self.sock = sock
        self.bytes_written = 0
        if sock.gettimeout() != 0.0:
            sock.settimeout(0.0)
        self._poll = None

    def _wait(self, events, deadline):
        """Wait until the socket is ready for ``events``; TimeoutError past the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        if self._poll is None:
            poll = select.poll()
            try:
                poll.register(self.sock, events)
            except ValueError:          # a closed socket, as an operation on it would say
                raise OSError(errno.EBADF, os.strerror(errno.EBADF)) from None
            self._poll = poll
        else:
            self._poll.modify(self.sock, events)
        if not self._poll.poll(math.ceil(remaining * 1000)):
            raise TimeoutError

    def write(self, data, deadline):
        if deadline <= time.monotonic():
            raise TimeoutError
        sent = 0
        while True:
            try:
                sent += self.sock.send(memoryview(data)[sent:] if sent else data)
            except BlockingIOError:
                pass
            if sent >= len(data):
                break
            self._wait(select.POLLOUT, deadline)
        self.bytes_written += len(data)

    def read(self, deadline):
        """Bytes from the peer, b"" at end of file; TimeoutError past the deadline."""
        while True:
            self._wait(select.POLLIN, deadline)
            try:
                return self.sock.recv(READ_SIZE)
            except BlockingIOError:     # a spurious wake-up: wait again
                pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class _Deadline:
    """The current state's deadline, restarted when the state or reply count moves."""

    def __init__(self, client):
        self.client = client
        self.state = None
        self.replies = -1
        self.at = 0.0

    def current(self):
        client = self.client
        state = client.state
        if state != self.state or client.replies_received != self.replies:
            self.state, self.replies = state, client.replies_received
            self.at = time.monotonic() + (client.settings.timeouts.get(state) or 300)
        return self.at


def _io(connection, client, deadline):
    """Write what the core queued, then read once; feed the result back to the core."""
    out = client.data_to_send()
    try:
        if out:
            connection.write(out, deadline.current())
        data = connection.read(deadline.current())
    except TimeoutError:
        client.timed_out()
        return
    except OSError as error:
        if error.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN):
            raise
        client.receive_eof()
        return
    if data:
        client.receive_data(data)
    else:
        client.receive_eof()


def _chunks(content):
    """Stored content in BODY_CHUNK pieces: from bytes or from a binary file object."""
    if hasattr(content, "read"):
        while True:
            chunk = content.read(BODY_CHUNK)
            if not chunk:
                return
            yield chunk
    else:
        for start in range(0, len(content), BODY_CHUNK):
            yield content[start:start + BODY_CHUNK]


def _encoded(content, ready, options):
    """(piece, is_last) of the wire form; the last piece ends with the final ".\r\n"."""
    encoder = codec.Encoder(line_length_limit=options.line_length_limit, downgrade=ready.downgrade,
                            mime_nesting_limit=options.mime_nesting_limit,
                            mime_boundary_length_limit=options.mime_boundary_length_limit)
    for chunk in _chunks(content):
        yield encoder.feed(chunk), False
    yield encoder.finish(), True


def _send_body(connection, client, content, ready, options, on_body_error, on_next_mail=None):
    """Stream the encoded content; returns after end_of_data() or abort_body().

    Encoded pieces are written once BODY_CHUNK bytes are queued and at the
    end, so a small message and its final "." leave in one write, followed
    by the next message's MAIL, RCPT... DATA when ``on_next_mail()`` gives
    its envelope (Client.send_next_mail()).  With PIX delay_dotcrlf (for a
    message older than the threshold) the final "." is held back, the body
    flushed, and "." sent after the delay.
    """
    delay_dot = ready.delay_dotcrlf and options.message_age >= options.pix_threshold
    deadline_base = time.monotonic() + (client.timeout or 180)
    sent = queued = 0
    held = []                       # encoded pieces not yet given to the core
    ended = False                   # end_of_data() was called
    pieces = _encoded(content, ready, options)
    while True:
        try:
            piece, last = next(pieces, (None, True))
        except codec.MimeError as error:
            on_body_error(error)
            client.abort_body(error.dsn, str(error))
            return
        if piece is None:
            break
        if delay_dot and last:
            piece = piece[:-3]      # hold back the final ".\r\n"
        if piece:
            held.append(piece)
            queued += len(piece)
        if not queued or (queued < BODY_CHUNK and not last):
            continue
        client.send_body(held[0] if len(held) == 1 else b"".join(held))
        held, queued = [], 0
        if last and not delay_dot:
            ended = True
            client.end_of_data()
            envelope = on_next_mail() if on_next_mail is not None else None
            if envelope is not None:
                client.send_next_mail(envelope)
        out = client.data_to_send()
        try:
            connection.write(out, deadline_base + sent / MIN_DATA_RATE)
        except TimeoutError:
            if ended:
                client.body_write_failed()      # "while sending message body", as before "."
            client.timed_out()
            return
        except OSError:
            client.body_write_failed()
            return
        sent += len(out)
    if not ended:
        if delay_dot:
            time.sleep(options.pix_delay)
        client.end_of_data()


def run_session(connection, client, envelope, content, options, *,
                on_ready=None, on_end_of_data=None, on_body_error=None, quit_after=True,
                on_next_mail=None):
    """Run one session to its end; returns the list of events that matter to the caller.

    ``on_ready(client)`` is called at the first Ready (the STARTTLS/AUTH slot)
    and may start a handshake of its own; it returns True when the core should
    go on with the transaction.  ``on_end_of_data(event)`` sees each reply
    after "." at once, so that delivered recipients are marked done before
    anything else happens (security rule 2).

    ``on_next_mail()`` (a batch, with the session kept open) gives the next
    message's envelope, or None, when this message's "." is about to leave;
    its transaction is then sent behind the ".", and this returns at this
    message's TransactionDone with that transaction under way.  The next
    message's own run_session() goes on with it: ``envelope`` must be the
    one given (``client.next_envelope``).
    """
    deadline = _Deadline(client)
    events = []
    mail_sent = False
    if client.next_envelope is not None:
        if client.next_envelope is not envelope:
            raise ValueError("the session carries another message's transaction")
        client.claim_next()
        mail_sent = True
    while True:
        event = client.next_event()
        if event is NEED_DATA:
            _io(connection, client, deadline)
        elif event is PAUSED:
            raise AssertionError(f"protocol core paused in state {client.state}")
        elif isinstance(event, Ready):
            if not mail_sent and envelope is not None:
                if on_ready is not None and not on_ready(client):
                    continue
                mail_sent = True
                client.send_mail(envelope, quit_after=quit_after)
            elif quit_after or envelope is None:
                client.quit()
            else:
                events.append(event)
                return events
        elif isinstance(event, ReadyForData):
            _send_body(connection, client, content, event, options,
                       on_body_error or (lambda error: None),
                       None if quit_after else on_next_mail)
        elif isinstance(event, EndOfDataReply):
            if on_end_of_data is not None:
                on_end_of_data(event)
            events.append(event)
        elif isinstance(event, (TransactionDone, SessionFailed)):
            events.append(event)
            if isinstance(event, SessionFailed) and client.state == "FAILED":
                client.quit()
            elif isinstance(event, TransactionDone) and client.next_envelope is not None:
                return events       # the next message's transaction is under way
        elif isinstance(event, Closed):
            out = client.data_to_send()
            if out:
                try:
                    connection.write(out, time.monotonic() + 5)
                except (OSError, TimeoutError):
                    pass
            connection.close()
            events.append(event)
            return events
        else:
            events.append(event)


# --- connection cache (reuse.py) -------------------------------------------------------

def probe(connection, client):
    """RSET probe of a connection taken from the cache (security rule 14); True when good.

    ``client`` is a Client.resume() core.  On success the core's Ready event
    is still queued, so run_session() starts the transaction as on a new
    session; on failure the caller closes the connection.
    """
    client.rset()
    deadline = _Deadline(client)
    while True:
        event = client.next_event()
        if event is NEED_DATA:
            try:
                _io(connection, client, deadline)
            except OSError:
                return False
        elif isinstance(event, RsetReply):
            return event.ok
        elif isinstance(event, Closed) or event is PAUSED:
            return False


def quit_session(connection, client):
    """End an idle session (READY, run_session(quit_after=False) returned) with QUIT."""
    client.quit()
    deadline = _Deadline(client)
    while True:
        event = client.next_event()
        if event is NEED_DATA:
            try:
                _io(connection, client, deadline)
            except OSError:
                connection.close()
                return
        elif isinstance(event, Closed) or event is PAUSED:
            out = client.data_to_send()
            if out:
                try:
                    connection.write(out, time.monotonic() + 5)
                except (OSError, TimeoutError):
                    pass
            connection.close()
            return
