"""A fast SMTP server on loopback that counts every recipient it accepts, for the crash tests.

Exports CountingServer, Acceptance and Hold.

Why not smtp-sink: the crash tests must know, for every (message, recipient)
pair, how many times the server took responsibility for it and *when* (on the
test's own clock, time.monotonic()), so that an acceptance can be compared
with the moment the test saw the recipient marked done in its queue file.
smtp-sink's -v log has no sub-second timestamps and is written
asynchronously.  This server records each acceptance in memory, under a
lock, as soon as the final "." arrives - the moment a real MTA has queued
the message and is committed to it - and *before* it writes its 250 reply,
so "recorded" always happens-before the client can mark the recipient done;
and a client killed after sending "." leaves an acceptance it never heard
of: the duplicate window of security rule 13.

What it speaks: ESMTP with PIPELINING, 8BITMIME, SIZE and
ENHANCEDSTATUSCODES (no DSN, no STARTTLS); EHLO/HELO, MAIL, RCPT, DATA,
RSET, NOOP, QUIT.  Every MAIL and RCPT is accepted.  One selectors loop in a
daemon thread serves every connection (non-blocking sockets, pipelined
commands handled in order).

Timing controls (the connection concerned waits; the others go on):
  dot_delay        every 250 to "." comes that many seconds after the ".";
  hold(recipient, at, seconds)
                   the first transaction with that recipient has its reply
                   held: at="data" holds the 354 to DATA (the client is
                   stuck before it sends the body: nothing accepted yet),
                   at="dot" holds the 250 to "." (accepted, the client does
                   not know it yet); seconds=None holds until the client
                   goes away.  ``held(recipient)`` is the Hold once its
                   reply is being held (with the client's port, to find the
                   process that owns the connection), None before.

Records (all under ``lock``):
  acceptances   list of Acceptance(time, message_id, recipient, connection),
                one per recipient per "." received after an accepted RCPT;
  connections   number of TCP connections accepted;
  transactions  number of "." received.
``counts()`` gives {(message_id, recipient): times accepted}.  The
message id is the Message-Id header of the content (angle brackets
stripped), or "" when there is none.
"""

import collections
import dataclasses
import heapq
import re
import selectors
import socket
import threading
import time

_MESSAGE_ID = re.compile(rb"^Message-Id:[ \t]*<([^>\r\n]*)>", re.IGNORECASE | re.MULTILINE)
_ADDRESS = re.compile(rb"^(?:FROM|TO):\s*<([^>]*)>", re.IGNORECASE)
EHLO_REPLY = (b"250-counting.test\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n"
              b"250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n")
GO_AHEAD = b"354 End data with <CR><LF>.<CR><LF>\r\n"
QUEUED = b"250 2.0.0 Ok: queued\r\n"


@dataclasses.dataclass(frozen=True)
class Acceptance:
    time: float           # time.monotonic() when the final "." arrived (before the 250)
    message_id: str
    recipient: str
    connection: int


@dataclasses.dataclass
class Hold:
    recipient: str
    at: str               # "data" or "dot"
    seconds: float        # None: until the client goes away
    client_port: int = 0  # set once the reply is being held
    since: float = 0.0
    released: bool = False


class _Session:
    def __init__(self, sock, number, client_port):
        self.sock = sock
        self.number = number
        self.client_port = client_port
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.in_data = False
        self.data = bytearray()
        self.sender = None
        self.recipients = []
        self.closing = False
        self.closed = False
        self.paused = False          # a reply is being held: read nothing more for now
        self.holds = []


class CountingServer:
    """start() -> listening on 127.0.0.1:<free port>; stop() ends it."""

    def __init__(self, host="127.0.0.1", dot_delay=0.0):
        self.host = host
        self.dot_delay = dot_delay
        self.port = None
        self.lock = threading.Lock()
        self.acceptances = []
        self.connections = 0
        self.transactions = 0
        self._holds = {}             # recipient -> Hold (armed, then held)
        self._delayed = []           # heap of (due, sequence, session, reply)
        self._sequence = 0
        self._listener = None
        self._selector = None
        self._thread = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()

    @property
    def nexthop(self):
        return f"[{self.host}]:{self.port}"

    # --- public -------------------------------------------------------------------------
    def start(self):
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self._listener.listen(256)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._loop, name="counting-server", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(5)
        for key in list(self._selector.get_map().values()):
            try:
                key.fileobj.close()
            except OSError:
                pass
        self._selector.close()
        self._wake_w.close()

    def hold(self, recipient, at="dot", seconds=None):
        if at not in ("data", "dot"):
            raise ValueError(at)
        with self.lock:
            self._holds[recipient] = Hold(recipient, at, seconds)

    def held(self, recipient):
        """The Hold of ``recipient`` once its reply is being held, else None."""
        with self.lock:
            hold = self._holds.get(recipient)
            return dataclasses.replace(hold) if hold and hold.client_port else None

    def snapshot(self):
        """A copy of the acceptances so far (a list)."""
        with self.lock:
            return list(self.acceptances)

    def counts(self, acceptances=None):
        counter = collections.Counter()
        for acceptance in self.snapshot() if acceptances is None else acceptances:
            counter[(acceptance.message_id, acceptance.recipient)] += 1
        return counter

    # --- the loop -------------------------------------------------------------------------
    def _loop(self):
        number = 0
        while not self._stop.is_set():
            timeout = 0.5
            if self._delayed:
                timeout = max(0.0, min(timeout, self._delayed[0][0] - time.monotonic()))
            events = self._selector.select(timeout)
            while self._delayed and self._delayed[0][0] <= time.monotonic():
                _, _, session, reply = heapq.heappop(self._delayed)
                if not session.closed:
                    self._release(session, reply)
                    self._process(session)
                    self._update(session)
            for key, mask in events:
                if key.data == "wake":
                    continue
                if key.data is None:
                    try:
                        while True:
                            conn, peer = self._listener.accept()
                            conn.setblocking(False)
                            number += 1
                            with self.lock:
                                self.connections += 1
                            session = _Session(conn, number, peer[1])
                            session.outbuf += b"220 counting.test ESMTP\r\n"
                            self._selector.register(conn, selectors.EVENT_READ | selectors.EVENT_WRITE,
                                                    session)
                    except (BlockingIOError, InterruptedError):
                        pass
                    continue
                session = key.data
                if session.closed:
                    continue
                if mask & selectors.EVENT_READ:
                    self._read(session)
                self._update(session)

    def _update(self, session):
        if session.outbuf and not session.closed:
            self._flush(session)
        if not session.closed:
            if session.closing and not session.outbuf:
                self._close(session)
            else:
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if session.outbuf else 0)
                self._selector.modify(session.sock, events, session)

    def _close(self, session):
        session.closed = True
        with self.lock:
            for hold in session.holds:
                hold.released = True
        try:
            self._selector.unregister(session.sock)
        except (KeyError, ValueError):
            pass
        session.sock.close()

    def _flush(self, session):
        try:
            sent = session.sock.send(session.outbuf)
            del session.outbuf[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close(session)

    def _read(self, session):
        try:
            data = session.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(session)
            return
        session.inbuf += data
        self._process(session)

    def _process(self, session):
        while not session.closing and not session.paused:
            if session.in_data:
                end = session.inbuf.find(b"\r\n.\r\n")
                if end < 0:
                    # keep the last 4 bytes: the terminator may straddle reads
                    if len(session.inbuf) > 4:
                        session.data += session.inbuf[:-4]
                        del session.inbuf[:-4]
                    return
                session.data += session.inbuf[:end + 2]
                del session.inbuf[:end + 5]
                self._end_of_data(session)
                continue
            line_end = session.inbuf.find(b"\r\n")
            if line_end < 0:
                return
            line = bytes(session.inbuf[:line_end])
            del session.inbuf[:line_end + 2]
            self._command(session, line)

    # --- held and delayed replies ------------------------------------------------------
    def _take_hold(self, session, at):
        """The armed Hold for one of the transaction's recipients at this stage, if any."""
        with self.lock:
            for recipient in session.recipients:
                hold = self._holds.get(recipient)
                if hold and hold.at == at and not hold.client_port:
                    hold.client_port = session.client_port
                    hold.since = time.monotonic()
                    session.holds.append(hold)
                    return hold
        return None

    def _delay(self, session, seconds, reply):
        session.paused = True
        if seconds is not None:
            self._sequence += 1
            heapq.heappush(self._delayed, (time.monotonic() + seconds, self._sequence, session, reply))

    def _release(self, session, reply):
        session.paused = False
        with self.lock:
            for hold in session.holds:
                hold.released = True
        session.outbuf += reply

    # --- SMTP ------------------------------------------------------------------------------
    def _command(self, session, line):
        verb = line[:4].upper()
        argument = line[5:] if len(line) > 4 else b""
        if verb == b"EHLO":
            session.outbuf += EHLO_REPLY
        elif verb == b"HELO":
            session.outbuf += b"250 counting.test\r\n"
        elif verb == b"MAIL":
            session.sender = b""
            session.recipients = []
            session.outbuf += b"250 2.1.0 Ok\r\n"
        elif verb == b"RCPT":
            match = _ADDRESS.match(argument)
            if session.sender is None or not match:
                session.outbuf += b"503 5.5.1 Error: need MAIL command\r\n"
            else:
                session.recipients.append(match.group(1).decode("utf-8", "replace"))
                session.outbuf += b"250 2.1.5 Ok\r\n"
        elif verb == b"DATA":
            if not session.recipients:
                session.outbuf += b"554 5.5.1 Error: no valid recipients\r\n"
            else:
                session.in_data = True
                session.data = bytearray()
                session.inbuf[:0] = b"\r\n"      # so an empty body (".") ends it too
                hold = self._take_hold(session, "data")
                if hold is not None:
                    self._delay(session, hold.seconds, GO_AHEAD)
                else:
                    session.outbuf += GO_AHEAD
        elif verb == b"RSET":
            session.sender = None
            session.recipients = []
            session.outbuf += b"250 2.0.0 Ok\r\n"
        elif verb == b"NOOP":
            session.outbuf += b"250 2.0.0 Ok\r\n"
        elif verb == b"QUIT":
            session.outbuf += b"221 2.0.0 Bye\r\n"
            session.closing = True
        else:
            session.outbuf += b"502 5.5.2 Error: command not recognized\r\n"

    def _end_of_data(self, session):
        """Commit to the message when "." arrives, then answer 250 (maybe later)."""
        session.in_data = False
        header = bytes(session.data[:8192])
        match = _MESSAGE_ID.search(header)
        message_id = match.group(1).decode("utf-8", "replace") if match else ""
        now = time.monotonic()
        with self.lock:
            for recipient in session.recipients:
                self.acceptances.append(Acceptance(now, message_id, recipient, session.number))
            self.transactions += 1
        hold = self._take_hold(session, "dot")
        session.sender = None
        session.recipients = []
        session.data = bytearray()
        if hold is not None:
            self._delay(session, hold.seconds, QUEUED)
        elif self.dot_delay > 0:
            self._delay(session, self.dot_delay, QUEUED)
        else:
            session.outbuf += QUEUED
