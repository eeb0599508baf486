"""SMTP/LMTP peers for the delivery tests: smtp-sink, recording servers, misbehaving servers.

Exports SmtpSink, SinkMessage, Script, RecordingServer, RecordedSession,
RecordedMessage, DripServer, EndlessServer, BodyHangupServer, ConnectionRecord, CliRun,
free_tcp_port(), write_main_cf() (main.cf with short timeouts), deliver_now()
(the engine in-process), run_cli() (``postclient deliver`` in a subprocess, with
its exit status, JSON lines and peak RSS), the reply constants (OK_MAIL,
USER_UNKNOWN ...) and the pytest fixtures below.  A test module imports the
fixtures it uses by name (``from tests.integration.servers import smtp_sink``);
a module that imports nothing else from here may list it in ``pytest_plugins``
instead (doing both makes pytest warn that it cannot rewrite asserts here).

Fixtures (each a factory: call it to start a server; every server it started
is stopped after the test):

  smtp_sink(*options, lmtp=False)  Postfix smtp-sink on 127.0.0.1 and a free port,
                                   with its fault options ("-r", "rcpt", "-q", "." ...).
                                   Skips (a failure under CI=true) without smtp-sink.
  recording_server(script=None, host="127.0.0.1", port=0)
                                   an aiosmtpd-based SMTP/LMTP server that answers as
                                   the Script says and records the exact bytes.
  drip_server(drip_at="greeting", interval=1.0)
                                   a socket server that sends one reply one byte per
                                   interval (security rule 7).
  hangup_server(after_bytes=100_000, premature=None)
                                   a socket server that resets the connection in the
                                   middle of the body, optionally after a premature reply.
  endless_server(phase="greeting", line=None)
                                   a socket server that sends a reply that never ends:
                                   the greeting ("greeting", "endless-line") or the EHLO
                                   reply ("ehlo").

smtp-sink runs as "nobody" when the tests run as root (it insists on -u), with -v
(its conversation log: SmtpSink.commands()) and -d (one dump file per message:
SmtpSink.messages()).  Readiness is seen in /proc/net/tcp, so no probe connection
ever counts as a session.

The recording server subclasses aiosmtpd's SMTP session class.  It records at
three levels, so tests can check exact bytes:
  - every read as it arrived (``chunks``) and, interleaved, every reply written
    (``timeline``): with PIPELINING, "MAIL RCPT... DATA" must arrive as one read
    before any reply to MAIL was written; without it, one command per read, each
    after the previous reply;
  - every command line exactly as received, CRLF included (``lines``);
  - every DATA stream exactly as received, from after the 354 up to and including
    the final ".\\r\\n" (``RecordedMessage.raw``), and its unstuffed content.
aiosmtpd's own MAIL/RCPT/DATA handlers reject DSN parameters and unstuff dots, so
those three are replaced here; the greeting, EHLO/LHLO keywords and every reply
come from the Script.
"""

import asyncio
import collections
import dataclasses
import email
import email.policy
import json
import os
import pwd
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from aiosmtpd.smtp import SMTP

from tests.peers import need_program

READY_TIMEOUT = 10.0
PYTHON = sys.executable
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# --- reply constants ------------------------------------------------------------------

OK_MAIL = "250 2.1.0 Ok"
OK_RCPT = "250 2.1.5 Ok"
GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"
QUEUED = "250 2.0.0 Ok: queued as REC0001"
NO_VALID_RECIPIENTS = "554 5.5.1 Error: no valid recipients"
USER_UNKNOWN = "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"
MAILBOX_FULL = "452 4.2.2 <{rcpt}>: Mailbox full"
ALL_KEYWORDS = ("PIPELINING", "SIZE 10240000", "8BITMIME", "DSN", "ENHANCEDSTATUSCODES")


def free_tcp_port(*hosts):
    """A TCP port free on every one of ``hosts`` (default 127.0.0.1) at the time of asking."""
    hosts = hosts or ("127.0.0.1",)
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
            others = []
            try:
                for host in hosts[1:]:
                    other = socket.socket()
                    others.append(other)
                    other.bind((host, port))
            except OSError:
                continue
            finally:
                for other in others:
                    other.close()
            return port
    raise RuntimeError(f"no TCP port free on all of {hosts}")


def _listening(port):
    """True when some socket listens on TCP ``port`` (IPv4), from /proc/net/tcp."""
    try:
        with open("/proc/net/tcp", encoding="ascii") as table:
            next(table)
            for row in table:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return True
    except OSError:
        pass
    return False


# --- Postfix smtp-sink -------------------------------------------------------------------

SINK_VERBS = {"CONNECT", "HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", ".", "RSET", "NOOP",
              "QUIT", "VRFY", "XFORWARD", "XCLIENT", "STARTTLS", "AUTH", "ETRN", "BDAT"}


@dataclasses.dataclass
class SinkMessage:
    """One message as smtp-sink dumped it (-d): its X- records and the content.

    ``content`` is what smtp-sink received after DATA, dots unstuffed and lines
    ending in LF (the dump format), without the dump's own trailing empty line.
    """

    client_proto: str
    helo_args: str
    mail_args: str
    rcpt_args: list
    content: bytes


def _parse_dump(data):
    lines = data.split(b"\n")
    records = collections.defaultdict(list)
    index = 0
    while index < len(lines) and lines[index].startswith(b"X-"):
        name, _, value = lines[index].partition(b": ")
        records[name.decode()].append(value.decode("utf-8", "replace"))
        index += 1
    if index < len(lines) and lines[index].startswith(b"Received: "):
        index += 1
        while index < len(lines) and lines[index][:1] in (b" ", b"\t"):
            index += 1
    rest = lines[index:]
    if rest and rest[-1] == b"":           # the file's final newline
        rest = rest[:-1]
    if rest and rest[-1] == b"":           # the dump's separating empty line
        rest = rest[:-1]
    content = b"\n".join(rest) + b"\n" if rest else b""
    return SinkMessage(client_proto=(records["X-Client-Proto"] or [""])[0],
                       helo_args=(records["X-Helo-Args"] or [""])[0],
                       mail_args=(records["X-Mail-Args"] or [""])[0],
                       rcpt_args=list(records["X-Rcpt-Args"]), content=content)


class SmtpSink:
    """A Postfix smtp-sink process on 127.0.0.1 and a free port until stop()."""

    def __init__(self, options=(), program="/usr/sbin/smtp-sink", host="127.0.0.1"):
        self.options = [str(o) for o in options]
        self.program = program
        self.host = host
        self.port = None
        self.process = None
        self.directory = None
        self.dump_dir = None
        self.log_path = None

    @property
    def nexthop(self):
        """The SMTP next-hop: ``[127.0.0.1]:PORT`` (no MX lookup)."""
        return f"[{self.host}]:{self.port}"

    @property
    def lmtp_nexthop(self):
        return f"inet:{self.host}:{self.port}"

    def command(self, port):
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        return [self.program, *user, "-v", "-d", os.path.join(self.dump_dir, "%Y%m%d%H%M%S."),
                *self.options, f"{self.host}:{port}", "64"]

    def start(self):
        self.directory = tempfile.mkdtemp(prefix="postclient-sink-")
        os.chmod(self.directory, 0o755)
        self.dump_dir = os.path.join(self.directory, "dump")
        os.mkdir(self.dump_dir)
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dump_dir, nobody.pw_uid, nobody.pw_gid)
        self.log_path = os.path.join(self.directory, "smtp-sink.log")
        for _ in range(3):                  # the free port may be taken meanwhile
            port = free_tcp_port(self.host)
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(self.command(port), stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + READY_TIMEOUT
            while time.monotonic() < deadline and self.process.poll() is None:
                if _listening(port):
                    self.port = port
                    return self
                time.sleep(0.02)
            self._terminate()
        log = self.log()
        self.stop()
        raise RuntimeError(f"smtp-sink did not start; its log:\n{log}")

    def log(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return log.read()
        except (OSError, TypeError):
            return ""

    def commands(self, timeout=2.0):
        """The commands smtp-sink saw (from -v), with "connect"/"disconnect" marking
        sessions; waits (up to ``timeout``) until every session it saw has ended."""
        deadline = time.monotonic() + timeout
        while True:
            seen = []
            for line in self.log().splitlines():
                prefix, _, text = line.partition("smtp-sink: ")
                if not text:
                    continue
                if text.startswith("connect (") or text == "disconnect":
                    seen.append(text.split(" ")[0])
                elif text.split(" ")[0].upper() in SINK_VERBS:
                    seen.append(text)
            if seen.count("connect") == seen.count("disconnect") or time.monotonic() > deadline:
                return seen
            time.sleep(0.02)

    def verbs(self):
        return [c.split(" ")[0].upper() for c in self.commands()]

    def messages(self, count=None, timeout=3.0):
        """The dumped messages, oldest first; with ``count``, wait until that many exist."""
        deadline = time.monotonic() + timeout
        while True:
            names = sorted(os.listdir(self.dump_dir),
                           key=lambda n: os.stat(os.path.join(self.dump_dir, n)).st_mtime_ns)
            if count is None or len(names) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        messages = []
        for name in names:
            with open(os.path.join(self.dump_dir, name), "rb") as dump:
                messages.append(_parse_dump(dump.read()))
        return messages

    def _terminate(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def stop(self):
        self._terminate()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


# --- the recording server (aiosmtpd) -------------------------------------------------------

@dataclasses.dataclass
class Script:
    """What a RecordingServer answers.

    Replies are strings without the final CRLF; a multi-line reply joins its lines
    with CRLF.  ``rcpt_replies`` and ``lmtp_dot_replies`` map a recipient address
    (lower case) to its reply; "{rcpt}" in a reply is replaced by the address.
    ``lmtp_hangup_after`` makes an LMTP server close the connection after that
    many of its per-recipient replies to ".".
    ``ehlo_reply`` replaces the whole EHLO (LHLO) reply; otherwise it is
    "250-<hostname>" followed by ``ehlo_keywords``.  ``data_without_recipients``
    answers DATA when no RCPT was accepted (None: answer ``data_reply`` anyway,
    as a lenient server would).
    """

    lmtp: bool = False
    hostname: str = "recorder.test"
    greeting: str = None
    ehlo_keywords: tuple = ALL_KEYWORDS
    ehlo_reply: str = None
    helo_reply: str = None
    mail_reply: str = OK_MAIL
    rcpt_reply: str = OK_RCPT
    rcpt_replies: dict = dataclasses.field(default_factory=dict)
    data_reply: str = GO_AHEAD
    data_without_recipients: str = NO_VALID_RECIPIENTS
    dot_reply: str = QUEUED
    lmtp_dot_replies: dict = dataclasses.field(default_factory=dict)
    lmtp_hangup_after: int = None       # LMTP: send this many "." replies, then hang up

    def greeting_line(self):
        if self.greeting is not None:
            return self.greeting
        return f"220 {self.hostname} {'LMTP' if self.lmtp else 'ESMTP'} ready"

    def for_rcpt(self, replies, default, address):
        return replies.get(address.lower(), default).replace("{rcpt}", address)


@dataclasses.dataclass
class RecordedMessage:
    """One DATA transaction that reached the final "."."""

    mail_line: bytes            # the MAIL command line as received, CRLF included
    rcpt_lines: list            # every RCPT line of the transaction, accepted or not
    sender: str
    recipients: list            # accepted recipients, in RCPT order
    raw: bytes                  # the DATA stream from after 354 through the final ".\r\n"

    @property
    def content(self):
        """The message as the server stores it: dots unstuffed, final "." removed."""
        body = self.raw[:-3]
        lines = body.split(b"\r\n")
        return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)

    def email(self):
        """The content parsed by Python's email package (lines ending in LF, as stored)."""
        return email.message_from_bytes(self.content.replace(b"\r\n", b"\n"),
                                        policy=email.policy.default)


class RecordedSession:
    """Everything one connection to a RecordingServer saw and said."""

    def __init__(self, peer):
        self.peer = peer
        self.chunks = []            # each read, as it arrived
        self.timeline = []          # ("recv", bytes) and ("send", bytes), in order
        self.lines = []             # command lines as received (CRLF included)
        self.messages = []          # RecordedMessage per completed DATA
        self.partial_body = None    # DATA bytes received when the client went away mid-body
        self.closed = threading.Event()

    @property
    def raw(self):
        return b"".join(self.chunks)

    def commands(self):
        return [line.rstrip(b"\r\n").decode("utf-8", "surrogateescape") for line in self.lines]

    def verbs(self):
        return [command.split(" ")[0].upper() for command in self.commands()]

    def replies_sent_before(self, needle):
        """How many replies were written before the read that holds ``needle`` arrived."""
        sent = 0
        for kind, data in self.timeline:
            if kind == "send":
                sent += 1
            elif needle in data:
                return sent
        raise AssertionError(f"{needle!r} never arrived")

    def read_holding(self, needle):
        for chunk in self.chunks:
            if needle in chunk:
                return chunk
        raise AssertionError(f"{needle!r} never arrived")


class _RecordingReader:
    """A StreamReader proxy that records every command line aiosmtpd reads."""

    def __init__(self, reader, protocol):
        self._reader = reader
        self._protocol = protocol

    async def readuntil(self, separator=b"\n"):
        line = await self._reader.readuntil(separator)
        if not self._protocol.in_data:
            self._protocol.record.lines.append(bytes(line))
        return line

    def __getattr__(self, name):
        return getattr(self._reader, name)


_ADDRESS = re.compile(r"^(?:FROM|TO):\s*<([^>]*)>\s*(.*)$", re.IGNORECASE | re.DOTALL)


class RecordingSMTP(SMTP):
    """aiosmtpd's SMTP session, answering from a Script and recording exact bytes."""

    line_length_limit = 1 << 20         # read DATA lines of any length (recorded exactly)
    command_size_limit = 1 << 16
    command_size_limits = collections.defaultdict(lambda: 1 << 16)

    def __init__(self, server):
        super().__init__(_NoHooks(), hostname=server.script.hostname, enable_SMTPUTF8=True,
                         data_size_limit=None, timeout=60, loop=server.loop)
        self.server = server
        self.script = server.script
        self.record = None
        self.in_data = False
        self._greeted = False
        self._txn_lines = []

    # recording
    def connection_made(self, transport):
        self.record = RecordedSession(transport.get_extra_info("peername"))
        self.server.sessions.append(self.record)
        super().connection_made(transport)

    def connection_lost(self, error):
        super().connection_lost(error)
        self.record.closed.set()

    def data_received(self, data):
        self.record.chunks.append(bytes(data))
        self.record.timeline.append(("recv", bytes(data)))
        super().data_received(data)

    def _cb_client_connected(self, reader, writer):
        super()._cb_client_connected(_RecordingReader(reader, self), writer)

    async def push(self, status):
        if not self._greeted:               # aiosmtpd's own first push is the greeting
            self._greeted = True
            status = self.script.greeting_line()
        data = status.encode("utf-8") if isinstance(status, str) else status
        self.record.timeline.append(("send", data + b"\r\n"))
        await super().push(data)

    # the handshake
    async def _hello(self, hostname):
        if self.script.ehlo_reply is not None:
            await self.push(self.script.ehlo_reply)
            return
        self._set_rset_state()
        self.session.extended_smtp = True
        self.session.host_name = hostname
        lines = [self.script.hostname, *self.script.ehlo_keywords]
        await self.push("\r\n".join(f"250{' ' if i == len(lines) - 1 else '-'}{line}"
                                    for i, line in enumerate(lines)))

    async def smtp_EHLO(self, hostname):
        if self.script.lmtp:
            await self.push('500 5.5.1 Error: command "EHLO" not recognized')
        else:
            await self._hello(hostname)

    async def smtp_LHLO(self, hostname):
        if not self.script.lmtp:
            await self.push('500 5.5.1 Error: command "LHLO" not recognized')
        else:
            await self._hello(hostname)

    async def smtp_HELO(self, hostname):
        if self.script.lmtp:
            await self.push('500 5.5.1 Error: command "HELO" not recognized')
        elif self.script.helo_reply is not None:
            await self.push(self.script.helo_reply)
        else:
            self._set_rset_state()
            self.session.extended_smtp = False
            self.session.host_name = hostname
            await self.push(f"250 {self.script.hostname}")

    # the transaction (aiosmtpd's own handlers refuse DSN parameters)
    async def smtp_MAIL(self, arg):
        match = _ADDRESS.match(arg or "")
        if not match or not (arg or "").upper().startswith("FROM:"):
            await self.push("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        self._txn_lines = [self.record.lines[-1]]
        reply = self.script.mail_reply
        if reply.startswith("2"):
            self.envelope.mail_from = match.group(1)
            self.envelope.rcpt_tos = []
        await self.push(reply)

    async def smtp_RCPT(self, arg):
        match = _ADDRESS.match(arg or "")
        if not match or not (arg or "").upper().startswith("TO:"):
            await self.push("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        self._txn_lines.append(self.record.lines[-1])
        if self.envelope.mail_from is None:
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        address = match.group(1)
        reply = self.script.for_rcpt(self.script.rcpt_replies, self.script.rcpt_reply, address)
        if reply.startswith("2"):
            self.envelope.rcpt_tos.append(address)
        await self.push(reply)

    async def smtp_DATA(self, arg):
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        accepted = list(self.envelope.rcpt_tos)
        reply = self.script.data_reply
        if not accepted and self.script.data_without_recipients is not None:
            reply = self.script.data_without_recipients
        if not reply.startswith("354"):
            await self.push(reply)
            return
        self.in_data = True
        raw = bytearray()
        self.record.partial_body = raw
        try:
            await self.push(reply)
            at_line_start = True
            while True:
                try:
                    line = await self._reader.readuntil(b"\r\n")
                except asyncio.LimitOverrunError as error:
                    raw += await self._reader.read(error.consumed)
                    at_line_start = False
                    continue
                except asyncio.IncompleteReadError as error:
                    raw += error.partial
                    return
                raw += line
                if at_line_start and line == b".\r\n":
                    break
                at_line_start = True
        finally:
            self.in_data = False
        self.record.partial_body = None
        message = RecordedMessage(mail_line=self._txn_lines[0] if self._txn_lines else b"",
                                  rcpt_lines=list(self._txn_lines[1:]),
                                  sender=self.envelope.mail_from or "", recipients=accepted,
                                  raw=bytes(raw))
        self.record.messages.append(message)
        self.server.messages.append(message)
        self._set_post_data_state()
        if not self.script.lmtp:
            await self.push(self.script.dot_reply)
            return
        replies = [self.script.for_rcpt(self.script.lmtp_dot_replies, self.script.dot_reply,
                                        address) for address in accepted]
        if self.script.lmtp_hangup_after is not None:
            replies = replies[:self.script.lmtp_hangup_after]
        if replies:
            await self.push("\r\n".join(replies))
        if self.script.lmtp_hangup_after is not None:
            self.transport.close()


class _NoHooks:
    """aiosmtpd handler without hooks: every reply comes from the Script."""


class RecordingServer:
    """An aiosmtpd RecordingSMTP server in a thread of its own, until stop()."""

    def __init__(self, script=None, host="127.0.0.1", port=0):
        self.script = script or Script()
        self.host = host
        self.port = port
        self.sessions = []          # RecordedSession per connection, in order
        self.messages = []          # RecordedMessage, across sessions
        self.loop = None
        self._server = None
        self._thread = None

    @property
    def nexthop(self):
        return f"[{self.host}]:{self.port}"

    @property
    def lmtp_nexthop(self):
        return f"inet:{self.host}:{self.port}"

    def start(self):
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure = []

        def run():
            asyncio.set_event_loop(self.loop)
            try:
                self._server = self.loop.run_until_complete(
                    self.loop.create_server(lambda: RecordingSMTP(self), self.host, self.port,
                                            reuse_address=True))
            except Exception as error:      # reported to the starting thread
                failure.append(error)
                ready.set()
                return
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="recording-smtp")
        self._thread.start()
        if not ready.wait(READY_TIMEOUT) or failure:
            raise RuntimeError(f"recording server did not start: {failure}")
        return self

    def wait_sessions(self, count=1, timeout=5.0):
        """The first ``count`` sessions, once each has closed."""
        deadline = time.monotonic() + timeout
        while len(self.sessions) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        sessions = self.sessions[:count]
        for session in sessions:
            session.closed.wait(max(0.0, deadline - time.monotonic()))
        assert len(sessions) == count, f"expected {count} sessions, saw {len(self.sessions)}"
        return sessions

    def stop(self):
        if self._thread is None:
            return

        async def shutdown():
            self._server.close()
            for task in asyncio.all_tasks(self.loop):
                if task is not asyncio.current_task():
                    task.cancel()
            await asyncio.sleep(0)
            self.loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
        self._thread.join(5)
        self._thread = None


# --- tiny socket servers that misbehave --------------------------------------------------

@dataclasses.dataclass
class ConnectionRecord:
    accepted_at: float
    closed_at: float = None         # when the client hung up (seen by the server)
    received: bytes = b""
    bytes_sent: int = 0


class _ThreadedServer:
    """Listen on 127.0.0.1:free port; handle() each connection in its own thread."""

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.port = None
        self.connections = []
        self._stopping = threading.Event()
        self._listener = None
        self._threads = []
        self._sockets = []

    @property
    def nexthop(self):
        return f"[{self.host}]:{self.port}"

    def start(self):
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        thread = threading.Thread(target=self._accept_loop, daemon=True, name=type(self).__name__)
        thread.start()
        self._threads.append(thread)
        return self

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            record = ConnectionRecord(time.monotonic())
            self.connections.append(record)
            self._sockets.append(connection)
            thread = threading.Thread(target=self._serve, args=(connection, record), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, connection, record):
        try:
            self.handle(connection, record)
        except OSError:
            pass
        finally:
            if record.closed_at is None:
                record.closed_at = time.monotonic()
            try:
                connection.close()
            except OSError:
                pass

    def peer_closed(self, connection, record):
        """True (and closed_at recorded) once the client has closed its side."""
        readable, _, _ = select.select([connection], [], [], 0)
        if not readable:
            return False
        try:
            data = connection.recv(65536)
        except OSError:
            data = b""
        if data:
            record.received += data
            return False
        record.closed_at = time.monotonic()
        return True

    def read_line(self, connection, record, timeout=10.0):
        """One line from the client (through LF), or None at EOF/timeout/stop."""
        deadline = time.monotonic() + timeout
        buffer = b""
        while b"\n" not in buffer:
            if self._stopping.is_set() or time.monotonic() > deadline:
                return None
            readable, _, _ = select.select([connection], [], [], 0.05)
            if not readable:
                continue
            data = connection.recv(65536)
            if not data:
                record.closed_at = time.monotonic()
                return None
            record.received += data
            buffer += data
        return buffer

    def handle(self, connection, record):
        raise NotImplementedError

    def wait_closed(self, timeout=2.0):
        """The connections, once the client has hung up on each (or ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while (any(c.closed_at is None for c in self.connections)
               and time.monotonic() < deadline):
            time.sleep(0.01)
        return list(self.connections)

    def stop(self):
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        for connection in self._sockets:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(5)


class DripServer(_ThreadedServer):
    """Answers like a plain SMTP server, but sends the reply of ``drip_at``
    ("greeting", "ehlo", "mail", "rcpt", "data" or "dot") one byte every
    ``interval`` seconds, until the client hangs up.  It announces no
    PIPELINING and reads one command per reply."""

    REPLIES = {"greeting": b"220 drip.test ESMTP ready\r\n",
               "ehlo": b"250-drip.test\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n",
               "mail": b"250 2.1.0 Ok\r\n", "rcpt": b"250 2.1.5 Ok\r\n",
               "data": b"354 End data with <CR><LF>.<CR><LF>\r\n",
               "dot": b"250 2.0.0 Ok: queued as DRIP\r\n", "quit": b"221 2.0.0 Bye\r\n",
               "rset": b"250 2.0.0 Ok\r\n"}

    def __init__(self, drip_at="greeting", interval=1.0, host="127.0.0.1"):
        super().__init__(host)
        self.drip_at = drip_at
        self.interval = interval

    def _reply(self, connection, record, step):
        data = self.REPLIES[step]
        if step != self.drip_at:
            connection.sendall(data)
            record.bytes_sent += len(data)
            return True
        for index in range(len(data)):
            if self._stopping.is_set():
                return False
            connection.sendall(data[index:index + 1])
            record.bytes_sent += 1
            end = time.monotonic() + self.interval
            while time.monotonic() < end:
                if self.peer_closed(connection, record) or self._stopping.is_set():
                    return False
                time.sleep(0.02)
        return True

    def handle(self, connection, record):
        if not self._reply(connection, record, "greeting"):
            return
        while True:
            line = self.read_line(connection, record)
            if line is None:
                return
            verb = line.split(b" ")[0].strip().lower()
            step = {b"ehlo": "ehlo", b"helo": "ehlo", b"mail": "mail", b"rcpt": "rcpt",
                    b"data": "data", b"quit": "quit", b"rset": "rset"}.get(verb)
            if step is None:
                connection.sendall(b"502 5.5.2 Error: command not recognized\r\n")
                continue
            if not self._reply(connection, record, step):
                return
            if step == "quit":
                return
            if step == "data":
                body = b""
                while not body.endswith(b"\r\n.\r\n"):
                    chunk = self.read_line(connection, record)
                    if chunk is None:
                        return
                    body += chunk
                if not self._reply(connection, record, "dot"):
                    return


class EndlessServer(_ThreadedServer):
    """Sends a reply that never ends, as fast as the client reads it.

    ``phase`` "greeting": the greeting itself never ends ("220-x..." lines);
    "endless-line": the greeting is "220 " and one line that never ends; "ehlo":
    a normal greeting, then the EHLO reply never ends ("250-x..." lines).
    ``line`` (repeated forever) replaces the default line of the phase.
    ``bytes_sent`` on each ConnectionRecord says how much the client was made
    to swallow.
    """

    def __init__(self, phase="greeting", line=None, host="127.0.0.1"):
        super().__init__(host)
        self.phase = phase
        if line is None:
            line = (b"220-" if phase == "greeting" else b"250-") + b"x" * 994 + b"\r\n"
        self.payload = line * max(1, 65536 // len(line))

    def handle(self, connection, record):
        if self.phase == "ehlo":
            connection.sendall(b"220 endless.test ESMTP\r\n")
            if self.read_line(connection, record) is None:
                return
        elif self.phase == "endless-line":
            connection.sendall(b"220 ")
        while not self._stopping.is_set():
            try:
                connection.sendall(self.payload)
            except OSError:
                record.closed_at = time.monotonic()
                return
            record.bytes_sent += len(self.payload)


class BodyHangupServer(_ThreadedServer):
    """Takes a one-recipient envelope (no PIPELINING), answers DATA with 354,
    reads ``after_bytes`` of the body, optionally sends a ``premature`` reply
    (e.g. a 552), then resets the connection (SO_LINGER 0) while the client is
    still writing."""

    def __init__(self, after_bytes=100_000, premature=None, host="127.0.0.1"):
        super().__init__(host)
        self.after_bytes = after_bytes
        self.premature = premature

    def handle(self, connection, record):
        connection.sendall(b"220 hangup.test ESMTP\r\n")
        for reply in (b"250-hangup.test\r\n250 8BITMIME\r\n", b"250 2.1.0 Ok\r\n",
                      b"250 2.1.5 Ok\r\n", b"354 End data with <CR><LF>.<CR><LF>\r\n"):
            if self.read_line(connection, record) is None:
                return
            connection.sendall(reply)
        received = 0
        while received < self.after_bytes:
            data = connection.recv(65536)
            if not data:
                return
            received += len(data)
        if self.premature:
            connection.sendall(self.premature)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()


# --- driving postclient ---------------------------------------------------------------

def write_main_cf(directory, **settings):
    """A main.cf in ``directory`` for tests: loopback only, short timeouts, then ``settings``."""
    values = {"myhostname": "client.postclient.test", "inet_interfaces": "127.0.0.1",
              "smtp_connect_timeout": "5s", "smtp_helo_timeout": "10s",
              "smtp_mail_timeout": "10s", "smtp_rcpt_timeout": "10s",
              "smtp_data_init_timeout": "10s", "smtp_data_xfer_timeout": "10s",
              "smtp_data_done_timeout": "10s", "smtp_rset_timeout": "5s",
              "smtp_quit_timeout": "5s", "lmtp_lhlo_timeout": "10s",
              "lmtp_data_done_timeout": "10s"}
    values.update(settings)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(str(directory), "main.cf"), "w", encoding="utf-8") as main_cf:
        for name, value in values.items():
            main_cf.write(f"{name} = {value}\n")
    return str(directory)


def deliver_now(config_dir, nexthop, recipients, content, *, sender="sender@client.test",
                protocol="smtp", overrides=(), encoding="unknown", envid="", ret="",
                notify="", orcpt="", queue_id="TESTQUEUEID"):
    """Deliver in-process with postclient.smtp.engine.deliver(); (Outcome, on_result calls)."""
    from postclient.config.config import Config
    from postclient.smtp import engine
    from postclient.smtp.request import DeliveryRequest, Recipient

    config = Config.load(str(config_dir), overrides=list(overrides))
    request = DeliveryRequest(
        queue_id=queue_id, nexthop=nexthop, sender=sender,
        recipients=[Recipient(address, original=address, notify=notify, orcpt=orcpt)
                    for address in recipients],
        content=content, encoding=encoding, envid=envid, ret=ret)
    reported = []
    outcome = engine.deliver(config, request, protocol,
                             on_result=lambda index, result: reported.append((index, result)))
    return outcome, reported


@dataclasses.dataclass
class CliRun:
    returncode: int
    results: list           # the JSON objects printed, one per recipient
    stdout: str
    stderr: str
    elapsed: float
    maxrss_kib: int         # peak resident set size of the process


def run_cli(config_dir, args, content=b"", *, overrides=(), before=(), timeout=60.0):
    """``python -m postclient -c DIR [BEFORE...] deliver [-o OVERRIDE...] ARGS``, ``content`` on
    stdin.  The process is reaped with wait4() so that its own peak RSS is known."""
    command = [PYTHON, "-m", "postclient", "-c", str(config_dir), *before, "deliver"]
    for override in overrides:
        command += ["-o", override]
    command += list(args)
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stdout, \
            tempfile.TemporaryFile() as stderr:
        stdin.write(content)
        stdin.seek(0)
        started = time.monotonic()
        process = subprocess.Popen(command, stdin=stdin, stdout=stdout, stderr=stderr,
                                   cwd=PROJECT_ROOT)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > started + timeout:
                process.kill()
                os.wait4(process.pid, 0)
                process.returncode = -9
                raise AssertionError(f"postclient deliver ran over {timeout}s: {command}")
            time.sleep(0.01)
        process.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.monotonic() - started
        stdout.seek(0)
        stderr.seek(0)
        text = stdout.read().decode("utf-8", "replace")
        error_text = stderr.read().decode("utf-8", "replace")
    results = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return CliRun(process.returncode, results, text, error_text, elapsed, usage.ru_maxrss)


# --- fixtures ------------------------------------------------------------------------

def serving(make):
    """The body of a server fixture: yields start(*args, **kwargs), which makes a
    server with make(*args, **kwargs) and starts it; after the test every
    server made is stopped.  Use as ``yield from serving(make)``."""
    started = []

    def start(*args, **kwargs):
        server = make(*args, **kwargs)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def smtp_sink():
    """start(*options, lmtp=False) -> a running SmtpSink ("-L" added for LMTP)."""
    program = need_program("smtp-sink")
    yield from serving(
        lambda *options, lmtp=False: SmtpSink((["-L"] if lmtp else []) + list(options), program))


@pytest.fixture
def recording_server():
    """start(script=None, host="127.0.0.1", port=0) -> a running RecordingServer."""
    yield from serving(RecordingServer)


@pytest.fixture
def drip_server():
    """start(drip_at="greeting", interval=1.0) -> a running DripServer."""
    yield from serving(DripServer)


@pytest.fixture
def hangup_server():
    """start(after_bytes=100_000, premature=None) -> a running BodyHangupServer."""
    yield from serving(BodyHangupServer)


@pytest.fixture
def endless_server():
    """start(phase="greeting", line=None) -> a running EndlessServer."""
    yield from serving(EndlessServer)
