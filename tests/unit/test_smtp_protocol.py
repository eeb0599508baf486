"""The SMTP/LMTP protocol core driven through whole conversations with a scripted peer.

No sockets: a FakeServer turns the client's writes into reply bytes, and the
Harness runs the loop a driver would run, feeding those bytes whole, byte by
byte or in random pieces.  Every write the client makes is recorded, so
PIPELINING grouping is checked byte for byte.
"""

import random

import pytest

from postclient.config.config import Config, parse_override
from postclient.smtp.events import Failure
from postclient.smtp.reply import Reply
from postclient.smtp.protocol import (NEED_DATA, PAUSED, STATES, AuthReply, Capabilities, Client,
                                      Closed, EndOfDataReply, Envelope, Greeting,
                                      LocalProtocolError, Rcpt, Ready, ReadyForData, RsetReply,
                                      SessionFailed, Settings, StartTLSReply, State,
                                      TransactionDone, UnsafeValueError)

PEER = "mx.example.com[192.0.2.1]"

# --- named replies ------------------------------------------------------------------
GREETING = "220 mx.example.com ESMTP Postfix"
GREETING_PLAIN = "220 mx.example.com Microsoft SMTP ready"
GREETING_PIX = "220 ********************************"
EHLO_PIPELINING = "\n".join(["250-mx.example.com", "250-PIPELINING", "250-SIZE 10240000",
                             "250-8BITMIME", "250-DSN", "250 ENHANCEDSTATUSCODES"])
EHLO_NO_PIPELINING = "\n".join(["250-mx.example.com", "250-8BITMIME", "250 DSN"])
EHLO_BASIC = "\n".join(["250-mx.example.com", "250 PIPELINING"])
EHLO_STARTTLS = "\n".join(["250-mx.example.com", "250-PIPELINING", "250 STARTTLS"])
OK = "250 2.0.0 Ok"
MAIL_OK = "250 2.1.0 Ok"
RCPT_OK = "250 2.1.5 Ok"
DATA_GO = "354 End data with <CR><LF>.<CR><LF>"
QUEUED = "250 2.0.0 Ok: queued as 4Xy9z"
BYE = "221 2.0.0 Bye"
USER_UNKNOWN = "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown"
MAILBOX_FULL = "452 4.2.2 <full@example.com>: Mailbox full"
SENDER_REJECTED = "553 5.7.1 <sender@example.org>: Sender address rejected"
NO_VALID_RECIPIENTS = "554 5.5.1 Error: no valid recipients"
TRY_LATER = "451 4.3.0 Error: queue file write error"
TOO_BIG = "552 5.3.4 Message size exceeds fixed limit"
SHUTTING_DOWN = "421 4.3.2 Service shutting down"
NOT_IMPLEMENTED = "502 5.5.2 Error: command not recognized"
BODY = b"Subject: test\r\n\r\nhello\r\n"
DISCONNECT = object()

SPLITS = ["whole", "bytes", "random"]


def wire(text):
    return text.replace("\n", "\r\n").encode() + b"\r\n"


class FakeServer:
    """A scripted SMTP/LMTP server that speaks pure bytes.

    It reads the client's bytes line by line and answers each command from
    ``replies``: verb (EHLO, MAIL, RCPT, DATA, ".", ...) -> reply text, a list
    of texts used in turn, raw bytes (sent as they are), or DISCONNECT.
    After a 3xx to DATA it collects the body up to the "." line.
    """

    DEFAULTS = {"HELO": "250 mx.example.com", "MAIL": MAIL_OK, "RCPT": RCPT_OK, "DATA": DATA_GO,
                ".": QUEUED, "RSET": OK, "QUIT": BYE, "XFORWARD": OK,
                "STARTTLS": "220 2.0.0 Ready to start TLS", "AUTH": "235 2.7.0 Authenticated"}

    def __init__(self, greeting=GREETING, lmtp=False, **replies):
        self.greeting = greeting
        self.lmtp = lmtp
        self.replies = {"EHLO": EHLO_PIPELINING, "LHLO": EHLO_PIPELINING, **self.DEFAULTS}
        for key, value in replies.items():
            self.replies[{"DOT": "."}.get(key, key)] = value
        self.commands = []
        self.bodies = []
        self.closed = False
        self._buf = b""
        self._body = None
        self._accepted = 0
        self._auth_continues = False

    def _answer(self, verb):
        value = self.replies[verb]
        if isinstance(value, list):
            value = value.pop(0) if len(value) > 1 else value[0]
        return value

    def _emit(self, value):
        if value is DISCONNECT:
            self.closed = True
            return b""
        return value if isinstance(value, bytes) else wire(value)

    def receive(self, data):
        out = b""
        self._buf += data
        while not self.closed and b"\n" in self._buf:
            raw, _, self._buf = self._buf.partition(b"\n")
            line = raw.rstrip(b"\r").decode("utf-8", "surrogateescape")
            if self._body is not None:
                if line == ".":
                    self.bodies.append(b"".join(self._body))
                    self._body = None
                    self.commands.append(".")
                    count = self._accepted if self.lmtp else 1
                    for _ in range(max(count, 1)):
                        out += self._emit(self._answer("."))
                else:
                    self._body.append(raw + b"\n")
                continue
            self.commands.append(line)
            verb = line.split(" ", 1)[0].split(":", 1)[0].upper()
            if self._auth_continues:
                verb = "AUTH"
            if verb == "MAIL":
                self._accepted = 0
            value = self._answer(verb if verb in self.replies else "EHLO")
            reply = self._emit(value)
            if verb == "RCPT" and reply.startswith(b"2"):
                self._accepted += 1
            if verb == "DATA" and reply.startswith(b"3"):
                self._body = []
            if verb == "QUIT":
                self.closed = True
            self._auth_continues = verb == "AUTH" and reply.startswith(b"334")
            out += reply
        return out


class Harness:
    """Runs the loop a driver runs, against a FakeServer, recording every write."""

    def __init__(self, server=None, split="whole", seed=0, body=BODY, **settings):
        values = dict(peer=PEER, helo_name="relay.example.org", myhostname="relay.example.org",
                      nexthop="example.com")
        values.update(settings)
        self.client = Client(Settings(**values))
        self.server = server or FakeServer()
        self.split = split
        self.rng = random.Random(seed)
        self.body = body
        self.writes = []
        self.replies_at_write = []
        self.events = []
        self.states = []
        self.pending = wire(self.server.greeting) if self.server.greeting else b""

    def flush(self):
        out = self.client.data_to_send()
        if out:
            self.writes.append(out)
            self.replies_at_write.append(self.client.replies_received)
            self.pending += self.server.receive(out)

    def _piece(self):
        if self.split == "bytes":
            return 1
        if self.split == "random":
            return self.rng.randint(1, 12)
        return len(self.pending)

    def run(self):
        """Loop until PAUSED or Closed; return that."""
        while True:
            event = self.client.next_event()
            if event is NEED_DATA:
                self.flush()
                self.states.append(self.client.state)
                if not self.pending:
                    if self.server.closed:
                        self.client.receive_eof()
                        continue
                    raise AssertionError("deadlock: the client waits, the server has nothing")
                size = self._piece()
                chunk, self.pending = self.pending[:size], self.pending[size:]
                self.client.receive_data(chunk)
            elif event is PAUSED:
                return event
            else:
                self.events.append(event)
                if isinstance(event, Closed):
                    self.flush()
                    return event
                if isinstance(event, ReadyForData) and self.body is not None:
                    self.client.send_body(self.body)
                    self.client.end_of_data()

    def handshake(self):
        assert self.run() is PAUSED
        assert isinstance(self.events[-1], Ready)
        return self.events[-1].capabilities

    def deliver(self, env, quit_after=True):
        self.handshake()
        self.client.send_mail(env, quit_after=quit_after)
        self.run()
        return self.result

    @property
    def result(self):
        done = [e for e in self.events if isinstance(e, TransactionDone)]
        assert len(done) == 1
        return done[0].result

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


def env(*recipients, **kw):
    values = dict(sender="sender@example.org", size=len(BODY), encoding="7bit")
    values.update(kw)
    rcpts = [r if isinstance(r, Rcpt) else Rcpt(r) for r in recipients or ["rcpt@example.com"]]
    return Envelope(recipients=rcpts, **values)


def ehlo_line():
    return b"EHLO relay.example.org\r\n"


# --- the handshake --------------------------------------------------------------------

@pytest.mark.parametrize("split", SPLITS)
def test_esmtp_greeting_then_ehlo_and_capabilities(split):
    h = Harness(split=split)
    caps = h.handshake()
    assert h.writes == [ehlo_line()]
    [greeting] = h.of(Greeting)
    assert greeting.esmtp and not greeting.pix and greeting.reply.text == GREETING
    assert caps.pipelining and caps.eightbitmime and caps.dsn and caps.size_limit == 10240000
    assert caps.server_name == "mx.example.com"
    assert h.client.state == State.READY and h.client.reusable


@pytest.mark.parametrize("split", SPLITS)
def test_greeting_4xx_fails_the_site_and_quit_is_still_possible(split):
    h = Harness(FakeServer(greeting=SHUTTING_DOWN), split=split)
    h.run()
    [failed] = h.of(SessionFailed)
    f = failed.failure
    assert (f.stage, f.scope, f.dsn, f.origin) == ("greeting", "site", "4.3.2", "remote")
    assert f.text == f"host {PEER} refused to talk to me: {SHUTTING_DOWN}"
    assert h.writes == [] and h.client.state == State.FAILED and not h.client.reusable
    h.client.quit()
    assert h.client.data_to_send() == b"QUIT\r\n"


@pytest.mark.parametrize("skip, dsn", [(True, "4.7.1"), (False, "5.7.1")])
def test_greeting_5xx_is_made_soft_with_skip_5xx_greeting(skip, dsn):
    h = Harness(FakeServer(greeting="554 5.7.1 You are not welcome"), skip_5xx_greeting=skip)
    h.run()
    f = h.of(SessionFailed)[0].failure
    assert f.dsn == dsn
    assert f.text == f"host {PEER} refused to talk to me: 554 5.7.1 You are not welcome"
    assert not f.protocol_error


def test_greeting_out_of_protocol_is_a_protocol_error():
    h = Harness(FakeServer(greeting="120 please wait"))
    h.run()
    f = h.of(SessionFailed)[0].failure
    assert f.dsn == "5.5.0" and f.protocol_error
    assert f.text == f"Protocol error: host {PEER} refused to talk to me: 120 please wait"


@pytest.mark.parametrize("split", SPLITS)
def test_pix_greeting_applies_the_workarounds(split):
    h = Harness(FakeServer(greeting=GREETING_PIX), split=split)
    caps = h.handshake()
    assert h.of(Greeting)[0].pix
    assert h.writes == [b"HELO relay.example.org\r\n"]            # disable_esmtp
    assert caps.pix_delay_dotcrlf and caps.pix_disable_esmtp and not caps.esmtp
    assert [n.text for n in h.client.take_notices()] == [
        f"enabling PIX workarounds: disable_esmtp delay_dotcrlf for {PEER}"]


def test_pix_workarounds_come_from_the_settings():
    h = Harness(FakeServer(greeting=GREETING_PIX), pix_workarounds=("delay_dotcrlf",))
    caps = h.handshake()
    assert h.writes == [ehlo_line()]
    assert caps.pix_delay_dotcrlf and not caps.pix_disable_esmtp
    h = Harness(FakeServer(greeting=GREETING_PIX), pix_workarounds=())
    caps = h.handshake()
    assert not caps.pix_delay_dotcrlf and h.writes == [ehlo_line()]


@pytest.mark.parametrize("greeting, always, never, command", [
    (GREETING, True, False, b"EHLO"),
    (GREETING_PLAIN, True, False, b"EHLO"),
    (GREETING_PLAIN, False, False, b"HELO"),
    (GREETING, False, False, b"EHLO"),
    (GREETING, True, True, b"HELO"),
])
def test_ehlo_or_helo(greeting, always, never, command):
    h = Harness(FakeServer(greeting=greeting), always_send_ehlo=always, never_send_ehlo=never)
    h.handshake()
    assert h.writes == [command + b" relay.example.org\r\n"]


@pytest.mark.parametrize("split", SPLITS)
def test_ehlo_421_fails_the_site_without_helo(split):
    h = Harness(FakeServer(EHLO=SHUTTING_DOWN), split=split)
    h.run()
    f = h.of(SessionFailed)[0].failure
    assert (f.stage, f.dsn) == ("helo", "4.3.2")
    assert f.text == f"host {PEER} refused to talk to me: {SHUTTING_DOWN}"
    assert h.writes == [ehlo_line()]


@pytest.mark.parametrize("split", SPLITS)
def test_other_ehlo_failure_falls_back_to_helo_on_the_same_connection(split):
    h = Harness(FakeServer(EHLO=NOT_IMPLEMENTED), split=split)
    caps = h.handshake()
    assert h.writes == [ehlo_line(), b"HELO relay.example.org\r\n"]
    assert not caps.esmtp and not caps.pipelining


def test_helo_failure_fails_the_site_with_the_server_code():
    h = Harness(FakeServer(EHLO=NOT_IMPLEMENTED, HELO="550 5.7.1 Go away"))
    h.run()
    f = h.of(SessionFailed)[0].failure
    assert (f.stage, f.scope, f.dsn) == ("helo", "site", "5.7.1")
    assert f.text == f"host {PEER} refused to talk to me: 550 5.7.1 Go away"


def test_lmtp_always_sends_lhlo_and_does_not_fall_back():
    h = Harness(FakeServer(greeting="220 lmtp.example.com LMTP ready", lmtp=True),
                protocol="lmtp", always_send_ehlo=False)
    caps = h.handshake()
    assert h.writes == [b"LHLO relay.example.org\r\n"] and caps.pipelining
    h = Harness(FakeServer(lmtp=True, LHLO="500 5.5.1 what"), protocol="lmtp")
    h.run()
    assert h.of(SessionFailed)[0].failure.dsn == "5.5.1"
    assert h.writes == [b"LHLO relay.example.org\r\n"]


@pytest.mark.parametrize("best_mx, dsn", [(False, "4.4.6"), (True, "5.4.6")])
def test_server_with_my_own_name_is_a_mail_loop(best_mx, dsn):
    server = FakeServer(EHLO="250-relay.example.org\n250 PIPELINING")
    h = Harness(server, loop_detection=True, best_mx=best_mx)
    h.run()
    f = h.of(SessionFailed)[0].failure
    assert (f.stage, f.scope, f.dsn, f.loop, f.origin) == ("helo", "site", dsn, True, "local")
    assert f.text == "mail for example.com loops back to myself"
    assert h.client.take_notices()[-1].text == \
        f"host {PEER} replied to HELO/EHLO with my own hostname relay.example.org"


def test_own_name_is_fine_without_loop_detection():
    h = Harness(FakeServer(EHLO="250-relay.example.org\n250 PIPELINING"), loop_detection=False)
    assert h.handshake().pipelining


def test_discarded_ehlo_keywords():
    h = Harness(discard_ehlo_keywords=("pipelining", "dsn"))
    caps = h.handshake()
    assert not caps.pipelining and not caps.dsn and caps.eightbitmime
    assert [n.text for n in h.client.take_notices()] == ["discarding EHLO keywords: PIPELINING DSN"]
    h = Harness(discard_ehlo_keywords=("pipelining", "silent-discard"))
    assert not h.handshake().pipelining
    assert h.client.take_notices() == []


def test_auth_mechanisms_only_with_sasl():
    server = FakeServer(EHLO="250-mx\n250 AUTH PLAIN LOGIN")
    assert Harness(server).handshake().auth == ()
    server = FakeServer(EHLO="250-mx\n250 AUTH PLAIN LOGIN")
    assert Harness(server, sasl_enabled=True).handshake().auth == ("PLAIN", "LOGIN")


# --- PIPELINING grouping --------------------------------------------------------------

@pytest.mark.parametrize("split", SPLITS)
def test_pipelining_sends_mail_rcpts_and_data_in_one_write(split):
    h = Harness(split=split)
    result = h.deliver(env("a@example.com", "b@example.com"))
    assert h.writes == [
        ehlo_line(),
        b"MAIL FROM:<sender@example.org> SIZE=24 BODY=7BIT\r\nRCPT TO:<a@example.com>\r\n"
        b"RCPT TO:<b@example.com>\r\nDATA\r\n",
        BODY + b".\r\nQUIT\r\n",
    ]
    assert result.delivered == (0, 1) and result.failure is None and result.complete
    assert [o.text for o in result.outcomes] == [QUEUED, QUEUED]
    assert [o.dsn for o in result.outcomes] == ["2.0.0", "2.0.0"]
    assert h.server.bodies == [BODY]
    assert isinstance(h.events[-1], Closed)


@pytest.mark.parametrize("split", SPLITS)
def test_without_pipelining_one_command_per_write(split):
    h = Harness(FakeServer(EHLO=EHLO_NO_PIPELINING), split=split)
    result = h.deliver(env("a@example.com", "b@example.com"))
    assert h.writes == [
        ehlo_line(),
        b"MAIL FROM:<sender@example.org> BODY=7BIT\r\n",
        b"RCPT TO:<a@example.com>\r\n",
        b"RCPT TO:<b@example.com>\r\n",
        b"DATA\r\n",
        BODY + b".\r\n",
        b"QUIT\r\n",
    ]
    assert result.delivered == (0, 1)


def test_a_big_batch_is_flushed_before_4096_bytes_and_waits_for_its_replies():
    recipients = [f"recipient{i:05d}@example.com" for i in range(5000)]
    h = Harness()
    result = h.deliver(env(*recipients))
    assert result.delivered == tuple(range(5000))
    commands = ([b"MAIL FROM:<sender@example.org> SIZE=24 BODY=7BIT\r\n"]
                + [b"RCPT TO:<%s>\r\n" % r.encode() for r in recipients] + [b"DATA\r\n"])
    batches = h.writes[1:-1]
    assert b"".join(batches) == b"".join(commands)
    assert len(batches) > 30
    sent = 0
    for number, batch in enumerate(batches):
        assert len(batch) <= 4096
        # Before each write the client had every reply to what it had written
        # (greeting and EHLO included).
        assert h.replies_at_write[number + 1] == 2 + sent
        sent += batch.count(b"\r\n")
        if number < len(batches) - 1:
            # ...and it wrote as much as fitted: the next command would not have.
            assert len(batch) + len(commands[sent]) > 4096
    assert h.writes[-1] == BODY + b".\r\nQUIT\r\n"


@pytest.mark.parametrize("local_length, writes", [(4034, 1), (4035, 2)])
def test_pipelined_write_is_at_most_4096_bytes_exactly(local_length, writes):
    # MAIL (32 bytes) + RCPT (12 + address) + DATA (6): 4096 bytes fit in one write,
    # one byte more and DATA waits for the replies to the first write.
    address = "a" * local_length + "@example.com"
    h = Harness(FakeServer(EHLO=EHLO_BASIC))
    assert h.deliver(env(address)).delivered == (0,)
    batches = h.writes[1:-1]
    assert len(batches) == writes
    assert b"".join(batches) == (b"MAIL FROM:<sender@example.org>\r\n"
                                 + b"RCPT TO:<%s>\r\n" % address.encode() + b"DATA\r\n")
    assert len(batches[0]) == (4096 if writes == 1 else 4091)


def test_quit_follows_the_dot_in_the_same_write_even_after_a_big_body():
    body = b"".join(b"line %05d of a long body\r\n" % i for i in range(1000))
    h = Harness(body=body)
    assert h.deliver(env("a@x", size=len(body))).delivered == (0,)
    assert h.writes[-1] == body + b".\r\nQUIT\r\n"


def test_xforward_goes_before_mail_in_the_same_write():
    server = FakeServer(EHLO="250-mx\n250-PIPELINING\n250 XFORWARD NAME ADDR PROTO HELO SOURCE")
    h = Harness(server, send_xforward=True)
    xforward = {"NAME": "client.example.net", "ADDR": "192.0.2.9", "PROTO": "ESMTP",
                "HELO": "client", "SOURCE": "remote", "IDENT": "ABC"}
    result = h.deliver(env(xforward=xforward))
    assert h.writes[1] == (b"XFORWARD NAME=client.example.net ADDR=192.0.2.9\r\n"
                           b"XFORWARD PROTO=ESMTP HELO=client SOURCE=REMOTE\r\n"
                           b"MAIL FROM:<sender@example.org>\r\n"
                           b"RCPT TO:<rcpt@example.com>\r\nDATA\r\n")
    assert result.delivered == (0,)


def test_xforward_needs_the_setting_and_the_announcement():
    server = FakeServer(EHLO="250-mx\n250-PIPELINING\n250 XFORWARD NAME ADDR")
    h = Harness(server, send_xforward=False)
    h.deliver(env(xforward={"NAME": "c.example"}))
    assert not h.writes[1].startswith(b"XFORWARD")
    h = Harness(send_xforward=True)                 # not announced
    h.deliver(env(xforward={"NAME": "c.example"}))
    assert h.writes[1].startswith(b"MAIL FROM:")


def test_xforward_refusal_is_only_a_warning():
    server = FakeServer(EHLO="250-mx\n250-PIPELINING\n250 XFORWARD NAME", XFORWARD="550 5.5.1 no")
    h = Harness(server, send_xforward=True)
    assert h.deliver(env(xforward={"NAME": "c.example"})).delivered == (0,)
    assert f"host {PEER} said: 550 5.5.1 no (in reply to XFORWARD command)" in \
        [n.text for n in h.client.take_notices()]


# --- LMTP -----------------------------------------------------------------------------

@pytest.mark.parametrize("split", SPLITS)
def test_lmtp_gives_one_reply_per_accepted_recipient_in_rcpt_order(split):
    server = FakeServer(greeting="220 lmtp.example.com LMTP", lmtp=True,
                        RCPT=[RCPT_OK, USER_UNKNOWN, RCPT_OK, RCPT_OK],
                        DOT=["250 2.0.0 <a> delivered", MAILBOX_FULL, "250 2.0.0 <d> delivered"])
    h = Harness(server, protocol="lmtp", split=split)
    result = h.deliver(env("a@x", "nobody@example.com", "full@example.com", "d@x"))
    assert h.writes[1] == (b"MAIL FROM:<sender@example.org> SIZE=24 BODY=7BIT\r\n"
                           b"RCPT TO:<a@x>\r\nRCPT TO:<nobody@example.com>\r\n"
                           b"RCPT TO:<full@example.com>\r\nRCPT TO:<d@x>\r\nDATA\r\n")
    assert [[o.index for o in e.outcomes] for e in h.of(EndOfDataReply)] == [[0], [2], [3]]
    assert result.delivered == (0, 3)
    assert result.accepted == (0, 2, 3)
    failed = {o.index: o.failure for o in result.outcomes if not o.delivered}
    assert (failed[1].stage, failed[1].scope, failed[1].dsn) == ("rcpt", "recipient", "5.1.1")
    assert (failed[2].stage, failed[2].scope, failed[2].dsn) == ("dot", "recipient", "4.2.2")
    assert failed[2].text == f"host {PEER} said: {MAILBOX_FULL} (in reply to end of DATA command)"


def test_lmtp_reply_missing_after_dot_is_a_lost_connection():
    server = FakeServer(lmtp=True, DOT=["250 2.0.0 one", DISCONNECT])
    h = Harness(server, protocol="lmtp")
    result = h.deliver(env("a@x", "b@x"))
    assert result.delivered == (0,)
    f = result.outcomes[1].failure
    assert (f.dsn, f.origin, f.scope, f.stage) == ("4.4.2", "io", "site", "dot")
    assert f.text == (f"lost connection with {PEER} while sending end of data -- "
                      "message may be sent more than once")
    assert not result.complete


# --- recipients refused and course corrections -------------------------------------------

@pytest.mark.parametrize("split", SPLITS)
def test_all_recipients_rejected_with_pipelining(split):
    server = FakeServer(RCPT=USER_UNKNOWN, DATA=NO_VALID_RECIPIENTS)
    h = Harness(server, split=split)
    result = h.deliver(env("nobody@example.com", "nobody2@example.com"))
    assert h.writes[1].endswith(b"DATA\r\n")
    assert h.writes[2:] == [b"RSET\r\nQUIT\r\n"]
    assert h.server.bodies == [] and h.of(ReadyForData) == []
    assert result.delivered == () and result.failure is None
    assert [o.failure.stage for o in result.outcomes] == ["rcpt", "rcpt"]
    assert result.outcomes[0].failure.text == \
        f"host {PEER} said: {USER_UNKNOWN} (in reply to RCPT TO command)"


def test_all_recipients_rejected_without_pipelining_sends_no_data():
    server = FakeServer(EHLO=EHLO_NO_PIPELINING, RCPT=USER_UNKNOWN)
    h = Harness(server)
    result = h.deliver(env("nobody@example.com", "nobody2@example.com"))
    assert h.writes[1:] == [b"MAIL FROM:<sender@example.org> BODY=7BIT\r\n",
                            b"RCPT TO:<nobody@example.com>\r\n",
                            b"RCPT TO:<nobody2@example.com>\r\n", b"RSET\r\n", b"QUIT\r\n"]
    assert result.delivered == ()


def test_data_accepted_without_recipients_gets_a_lone_dot():
    server = FakeServer(RCPT=USER_UNKNOWN, DATA=DATA_GO, DOT="250 2.0.0 whatever")
    h = Harness(server)
    result = h.deliver(env("nobody@example.com"))
    assert h.writes[2] == b".\r\nQUIT\r\n"
    assert h.server.bodies == [b""]
    assert result.delivered == () and h.of(EndOfDataReply) == []


@pytest.mark.parametrize("split", SPLITS)
def test_sender_rejected_with_pipelining_fails_everyone_and_ignores_rcpt_replies(split):
    server = FakeServer(MAIL=SENDER_REJECTED, RCPT=RCPT_OK, DATA="503 5.5.1 need MAIL")
    h = Harness(server, split=split)
    result = h.deliver(env("a@x", "b@x"))
    assert h.writes[2:] == [b"RSET\r\nQUIT\r\n"]
    assert result.delivered == () and result.accepted == ()
    f = result.failure
    assert (f.stage, f.scope, f.dsn) == ("mail", "message", "5.7.1")
    assert f.text == f"host {PEER} said: {SENDER_REJECTED} (in reply to MAIL FROM command)"
    assert all(o.failure is f for o in result.outcomes)


def test_sender_rejected_without_pipelining_sends_no_rcpt():
    h = Harness(FakeServer(EHLO=EHLO_NO_PIPELINING, MAIL="451 4.3.0 try later"))
    result = h.deliver(env("a@x"))
    assert h.writes[1:] == [b"MAIL FROM:<sender@example.org> BODY=7BIT\r\n", b"RSET\r\n",
                            b"QUIT\r\n"]
    assert result.failure.dsn == "4.3.0" and result.failure.soft


def test_data_rejected_fails_the_accepted_recipients_only():
    h = Harness(FakeServer(RCPT=[RCPT_OK, USER_UNKNOWN], DATA=TRY_LATER))
    result = h.deliver(env("a@x", "nobody@example.com"))
    assert h.writes[2:] == [b"RSET\r\nQUIT\r\n"]
    assert result.outcomes[0].failure.stage == "data"
    assert result.outcomes[0].failure.text == \
        f"host {PEER} said: {TRY_LATER} (in reply to DATA command)"
    assert result.outcomes[1].failure.stage == "rcpt"
    assert result.failure.dsn == "4.3.0"


def test_end_of_data_rejected_fails_the_accepted_recipients():
    h = Harness(FakeServer(RCPT=[RCPT_OK, USER_UNKNOWN, RCPT_OK], DOT=TOO_BIG))
    result = h.deliver(env("a@x", "nobody@example.com", "c@x"))
    assert [(o.index, o.failure.stage, o.failure.dsn) for o in result.outcomes] == [
        (0, "dot", "5.3.4"), (1, "rcpt", "5.1.1"), (2, "dot", "5.3.4")]
    [eod] = h.of(EndOfDataReply)
    assert [o.index for o in eod.outcomes] == [0, 2] and not any(o.delivered for o in eod.outcomes)


def test_some_recipients_accepted():
    h = Harness(FakeServer(RCPT=[MAILBOX_FULL, RCPT_OK]))
    result = h.deliver(env("full@example.com", "b@x"))
    assert result.delivered == (1,)
    f = result.outcomes[0].failure
    assert (f.dsn, f.soft, f.scope) == ("4.2.2", True, "recipient")


# --- reply codes out of protocol ------------------------------------------------------

def test_positive_reply_where_a_failure_is_recorded_is_a_protocol_error():
    h = Harness(FakeServer(DATA="250 2.0.0 Ok"))
    result = h.deliver(env("a@x"))
    f = result.failure
    assert (f.dsn, f.protocol_error, f.stage) == ("5.5.0", True, "data")
    assert f.text == f"Protocol error: host {PEER} said: 250 2.0.0 Ok (in reply to DATA command)"
    assert h.writes[2:] == [b"RSET\r\nQUIT\r\n"]


def test_invalid_reply_code_is_a_protocol_error_and_never_reusable():
    h = Harness(FakeServer(RCPT="999 9.9.9 what"))
    result = h.deliver(env("a@x"), quit_after=False)
    f = result.outcomes[0].failure
    assert (f.dsn, f.protocol_error) == ("5.5.0", True)
    assert f.text.startswith("Protocol error: host")
    assert h.client.state == State.READY and not h.client.reusable


@pytest.mark.parametrize("code, notice", [("550", False), ("502", True), ("555", True),
                                          ("500", True), ("510", False), ("450", False)])
def test_syntax_error_codes_are_flagged_as_protocol_errors(code, notice):
    h = Harness(FakeServer(RCPT=f"{code} 5.1.1 x"))
    result = h.deliver(env("a@x"), quit_after=False)
    f = result.outcomes[0].failure
    assert f.protocol_error is notice
    assert f.dsn == ("5.1.1" if code[0] == "5" else "4.0.0")
    assert h.client.reusable is not notice


@pytest.mark.parametrize("split", SPLITS)
def test_garbage_lines_between_replies(split):
    server = FakeServer(MAIL=b"hello there\r\n" + wire(MAIL_OK), DOT=b"x\r\n" + wire(QUEUED))
    h = Harness(server, split=split)
    result = h.deliver(env("a@x"), quit_after=False)
    # As in Postfix the code of the line that ends the reply decides success;
    # the garbage only taints the session.
    assert result.delivered == (0,)
    assert result.outcomes[0].reply.text == "x " + QUEUED and result.outcomes[0].reply.garbage
    assert not h.client.reusable
    assert any("non-ESMTP response" in n.text for n in h.client.take_notices())


def test_garbage_before_a_failure_makes_it_a_protocol_error():
    h = Harness(FakeServer(RCPT=b"oops\r\n" + wire(USER_UNKNOWN)))
    result = h.deliver(env("a@x"))
    f = result.outcomes[0].failure
    assert (f.dsn, f.protocol_error) == ("5.5.0", True)
    assert f.text == (f"Protocol error: host {PEER} said: oops {USER_UNKNOWN} "
                      "(in reply to RCPT TO command)")


@pytest.mark.parametrize("reply, dsn", [
    ("550 4.1.1 x", "5.0.0"), ("550 5.1.1 x", "5.1.1"), ("450 4.1.1 x", "4.1.1"),
    ("450 x", "4.0.0"), ("550-5.7.1 first\n550 5.7.2 last", "5.7.2"),
])
def test_enhanced_codes_from_rcpt_replies(reply, dsn):
    h = Harness(FakeServer(RCPT=reply))
    result = h.deliver(env("a@x"))
    assert result.outcomes[0].failure.dsn == dsn
    assert result.outcomes[0].failure.diagnostic == reply.replace("\n", " ")


@pytest.mark.parametrize("split", SPLITS)
def test_multiline_replies_split_mid_line(split):
    server = FakeServer(RCPT="550-5.1.1 first line\n550-second line\n550 5.1.1 last line")
    f = Harness(server, split=split).deliver(env("a@x")).outcomes[0].failure
    assert f.text == (f"host {PEER} said: 550-5.1.1 first line 550-second line "
                      "550 5.1.1 last line (in reply to RCPT TO command)")
    assert f.dsn == "5.1.1"


def test_trailing_junk_after_the_session_is_not_interpreted():
    server = FakeServer(DOT=wire(QUEUED) + b"250 2.0.0 junk\r\n999 more junk")
    h = Harness(server)
    result = h.deliver(env("a@x"))
    assert result.delivered == (0,) and isinstance(h.events[-1], Closed)
    h.client.receive_data(b"550 late\r\n")
    assert isinstance(h.client.next_event(), Closed)


# --- SIZE, DSN, SMTPUTF8, quoting -----------------------------------------------------

def test_size_precheck_bounces_without_sending_mail():
    h = Harness(FakeServer(EHLO="250-mx\n250-PIPELINING\n250 SIZE 1000"))
    result = h.deliver(env("a@x", "b@x", size=5000))
    assert h.writes == [ehlo_line()]
    f = result.failure
    assert (f.stage, f.scope, f.dsn, f.origin) == ("mail", "message", "5.3.4", "local")
    assert f.text == f"message size 5000 exceeds size limit 1000 of server {PEER}"
    assert [o.failure for o in result.outcomes] == [f, f]
    assert h.client.state == State.READY and h.client.reusable


@pytest.mark.parametrize("ehlo", ["250-mx\n250 SIZE 0", "250-mx\n250 SIZE", "250-mx\n250 SIZE x"])
def test_size_without_a_usable_limit_sends_size_but_no_precheck(ehlo):
    h = Harness(FakeServer(EHLO=ehlo))
    result = h.deliver(env(size=99999999, encoding="7bit"))
    assert result.delivered == (0,)
    assert h.writes[1] == b"MAIL FROM:<sender@example.org> SIZE=99999999\r\n"


def test_downgrade_drops_size_and_is_announced_for_the_body():
    h = Harness(FakeServer(EHLO="250-mx\n250-PIPELINING\n250 SIZE 100000"))
    h.deliver(env(encoding="8bit"))
    assert h.writes[1].startswith(b"MAIL FROM:<sender@example.org>\r\n")
    assert h.of(ReadyForData)[0].downgrade
    h = Harness(FakeServer(EHLO="250-mx\n250-PIPELINING\n250 SIZE 100000"),
                disable_mime_output_conversion=True)
    h.deliver(env(encoding="8bit"))
    assert h.writes[1].startswith(b"MAIL FROM:<sender@example.org> SIZE=24\r\n")
    assert not h.of(ReadyForData)[0].downgrade


def test_dsn_parameters_go_out_when_the_server_has_dsn():
    rcpt = Rcpt("joe@example.com", orcpt="rfc822;Joe+Sixpack@example.com",
                notify="SUCCESS,DELAY")
    h = Harness()
    h.deliver(env(rcpt, envid="QID=42 +x", ret="HDRS"))
    assert h.writes[1] == (b"MAIL FROM:<sender@example.org> SIZE=24 BODY=7BIT "
                           b"ENVID=QID+3D42+20+2Bx RET=HDRS\r\n"
                           b"RCPT TO:<joe@example.com> ORCPT=rfc822;Joe+2BSixpack@example.com "
                           b"NOTIFY=SUCCESS,DELAY\r\nDATA\r\n")
    h = Harness(FakeServer(EHLO=EHLO_BASIC))
    h.deliver(env(rcpt, envid="QID=42", ret="HDRS"))
    assert h.writes[1] == (b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<joe@example.com>\r\n"
                           b"DATA\r\n")


def test_smtputf8():
    h = Harness(FakeServer(EHLO="250-mx\n250-PIPELINING\n250 SMTPUTF8"))
    h.deliver(env("j\u00f6rg@example.com", smtputf8=True, smtputf8_required=True, encoding="8bit"))
    assert h.writes[1].startswith("MAIL FROM:<sender@example.org> BODY=8BITMIME SMTPUTF8\r\n"
                                  "RCPT TO:<j\u00f6rg@example.com>".encode())
    h = Harness()
    result = h.deliver(env("j\u00f6rg@example.com", smtputf8=True, smtputf8_required=True))
    assert result.failure.dsn == "5.6.7" and h.writes == [ehlo_line()]
    assert result.failure.text == f"SMTPUTF8 is required, but was not offered by host {PEER}"


def test_rfc821_quoting_of_envelope_addresses():
    h = Harness()
    h.deliver(env("john doe@example.com", sender="a..b@example.org"))
    assert h.writes[1].startswith(b'MAIL FROM:<"a..b"@example.org> SIZE=24 BODY=7BIT\r\n'
                                  b'RCPT TO:<"john doe"@example.com>\r\n')
    h = Harness(quote_rfc821_envelope=False)
    h.deliver(env("john doe@example.com", sender=""))
    assert h.writes[1].startswith(b"MAIL FROM:<> SIZE=24 BODY=7BIT\r\n"
                                  b"RCPT TO:<john doe@example.com>\r\n")


@pytest.mark.parametrize("bad", [
    env("victim@example.com\r\nRCPT TO:<other@example.com>"),
    env("a@x", sender="s@x\nDATA"),
    env(Rcpt("a@x", notify="SUCCESS\r\nRSET")),
    env("a@x", envid="x\0y"),
])
def test_cr_lf_nul_are_refused_before_anything_is_sent(bad):
    h = Harness()
    h.handshake()
    with pytest.raises(UnsafeValueError):
        h.client.send_mail(bad)
    assert h.client.data_to_send() == b""
    assert h.client.state == State.READY


def test_helo_name_with_cr_lf_is_refused():
    with pytest.raises(UnsafeValueError):
        Client(Settings(helo_name="relay.example.org\r\nMAIL FROM:<x>"))


def test_auth_line_with_crlf_is_refused():
    h = Harness(sasl_enabled=True)
    h.handshake()
    with pytest.raises(UnsafeValueError):
        h.client.send_auth("AUTH PLAIN x\r\nMAIL FROM:<y>")


# --- the body ---------------------------------------------------------------------------

def test_pix_delay_dotcrlf_sends_the_dot_in_its_own_write():
    h = Harness(FakeServer(greeting=GREETING_PIX), body=None)
    h.handshake()
    h.client.send_mail(env("a@x"))
    h.run()
    [ready] = h.of(ReadyForData)
    assert ready.delay_dotcrlf
    h.client.send_body(BODY)
    h.flush()                       # the driver flushes, sleeps, then:
    h.client.end_of_data()
    h.run()
    assert h.writes[-3:] == [BODY, b".\r\n", b"QUIT\r\n"]    # HELO session: no pipelining
    assert h.result.delivered == (0,)


def test_body_that_already_ends_with_the_dot_gets_no_second_one():
    h = Harness(body=BODY + b".\r\n")
    h.deliver(env("a@x"))
    assert h.writes[-1] == BODY + b".\r\nQUIT\r\n"


@pytest.mark.parametrize("chunks", [
    [b"line\r\n.\r\nMAIL FROM:<evil@x>\r\n"],
    [b"line\r\n.", b"\r\nRSET\r\n"],
    [b"line\r", b"\n.\r\n", b"more\r\n"],
    [b".\r\n", b"x"],
])
def test_body_that_would_end_data_early_is_refused(chunks):
    h = Harness(body=None)
    h.handshake()
    h.client.send_mail(env("a@x"))
    h.run()
    with pytest.raises(LocalProtocolError):
        for chunk in chunks:
            h.client.send_body(chunk)


def test_body_without_final_crlf_is_refused():
    h = Harness(body=None)
    h.handshake()
    h.client.send_mail(env("a@x"))
    h.run()
    h.client.send_body(b"no newline")
    with pytest.raises(LocalProtocolError):
        h.client.end_of_data()


def test_body_streamed_in_chunks():
    h = Harness(body=None)
    h.handshake()
    h.client.send_mail(env("a@x"))
    h.run()
    for piece in (b"Subject: x\r\n", b"\r\n", b"..dot-stuffed\r\n", b"end\r\n"):
        h.client.send_body(piece)
        h.flush()
    h.client.end_of_data()
    h.run()
    assert h.server.bodies == [b"Subject: x\r\n\r\n..dot-stuffed\r\nend\r\n"]
    assert h.result.delivered == (0,)


def test_abort_body_fails_everyone_and_closes_without_dot():
    h = Harness(body=None)
    h.handshake()
    h.client.send_mail(env("a@x", "b@x"))
    h.run()
    h.client.send_body(b"partial\r\n")
    h.client.abort_body("5.6.0", "MIME conversion error")
    assert h.client.data_to_send() == b""
    h.run()
    assert [o.failure.dsn for o in h.result.outcomes] == ["5.6.0", "5.6.0"]
    assert h.result.failure.origin == "local"
    assert h.result.complete              # as Postfix: the server did nothing wrong
    assert isinstance(h.events[-1], Closed)


# --- I/O trouble ------------------------------------------------------------------------

def test_lost_connection_during_the_greeting():
    h = Harness(FakeServer(greeting=""))
    h.server.closed = True
    h.run()
    f = h.of(SessionFailed)[0].failure
    assert (f.dsn, f.origin, f.scope, f.stage) == ("4.4.2", "io", "site", "greeting")
    assert f.text == f"lost connection with {PEER} while receiving the initial server greeting"
    assert isinstance(h.events[-1], Closed)


def test_lost_connection_during_rcpt_defers_unfinished_recipients():
    h = Harness(FakeServer(EHLO=EHLO_NO_PIPELINING, RCPT=[USER_UNKNOWN, DISCONNECT]))
    result = h.deliver(env("nobody@example.com", "b@x", "c@x"))
    assert result.outcomes[0].failure.dsn == "5.1.1"
    for outcome in result.outcomes[1:]:
        assert outcome.failure.text == f"lost connection with {PEER} while sending RCPT TO"
        assert outcome.failure.dsn == "4.4.2"
    assert result.failure.origin == "io" and not result.complete
    assert isinstance(h.events[-1], Closed) and not h.client.reusable


def test_timeout_waiting_for_the_end_of_data_reply():
    h = Harness(body=None)
    h.handshake()
    h.client.send_mail(env("a@x"))
    h.run()
    h.client.send_body(BODY)
    h.client.end_of_data()
    assert h.client.next_event() is NEED_DATA
    assert h.client.state == State.DOT
    assert h.client.timeout_parameter == "smtp_data_done_timeout"
    h.client.timed_out()
    events = [h.client.next_event(), h.client.next_event()]
    assert isinstance(events[0], TransactionDone) and isinstance(events[1], Closed)
    f = events[0].result.outcomes[0].failure
    assert f.text == (f"conversation with {PEER} timed out while sending end of data -- "
                      "message may be sent more than once")
    assert not events[0].result.outcomes[0].delivered


def test_write_failure_in_the_body_reads_a_premature_reply():
    h = Harness(body=None)
    h.handshake()
    h.client.send_mail(env("a@x"))
    h.run()
    h.client.send_body(b"x" * 100 + b"\r\n")
    h.client.body_write_failed()
    assert h.client.data_to_send() == b""
    assert h.client.where == "sending message body"
    assert h.client.next_event() is NEED_DATA
    h.client.receive_data(wire(TOO_BIG))
    [eod, done, closed] = [h.client.next_event() for _ in range(3)]
    assert isinstance(eod, EndOfDataReply) and not eod.outcomes[0].delivered
    f = done.result.outcomes[0].failure
    assert f.dsn == "5.3.4"
    assert f.text == f"host {PEER} said: {TOO_BIG} (in reply to end of DATA command)"
    assert isinstance(closed, Closed)


def test_write_failure_in_the_body_without_a_reply_is_a_lost_connection():
    h = Harness(body=None)
    h.handshake()
    h.client.send_mail(env("a@x"))
    h.run()
    h.client.send_body(BODY)
    h.client.body_write_failed()
    h.client.receive_eof()
    done = h.client.next_event()
    f = done.result.outcomes[0].failure
    assert (f.stage, f.dsn) == ("body", "4.4.2")
    assert f.text == f"lost connection with {PEER} while sending message body"


def test_eof_after_giving_up_the_transaction_records_nothing_more():
    server = FakeServer(RCPT=USER_UNKNOWN, DATA=NO_VALID_RECIPIENTS, RSET=DISCONNECT)
    h = Harness(server, split="bytes")
    result = h.deliver(env("nobody@example.com"))
    assert h.writes[-1] == b"RSET\r\nQUIT\r\n"
    assert result.failure is None and not result.complete
    assert result.outcomes[0].failure.stage == "rcpt"
    assert isinstance(h.events[-1], Closed)


def test_replies_received_before_the_eof_are_acted_on_first():
    h = Harness(body=None)
    h.handshake()
    h.client.send_mail(env("a@x", "b@x"))
    h.run()
    h.client.send_body(BODY)
    h.client.end_of_data()
    h.client.data_to_send()
    h.client.receive_data(wire(QUEUED))
    h.client.receive_eof()                     # the server said 250 and hung up at once
    events = [h.client.next_event() for _ in range(3)]
    assert [type(e) for e in events] == [EndOfDataReply, TransactionDone, Closed]
    assert events[1].result.delivered == (0, 1) and events[1].result.failure is None


def test_eof_in_the_middle_of_a_reply_is_a_lost_connection():
    client = Client(Settings(peer=PEER))
    client.receive_data(wire(GREETING))
    assert isinstance(client.next_event(), Greeting)
    assert client.next_event() is NEED_DATA and client.data_to_send().startswith(b"EHLO ")
    client.receive_data(b"250-mx.example.com\r\n250-PIPE")
    assert client.next_event() is NEED_DATA
    client.receive_eof()
    [failed, closed] = [client.next_event(), client.next_event()]
    assert failed.failure.text == f"lost connection with {PEER} while performing the EHLO handshake"
    assert isinstance(closed, Closed)


def test_eof_while_waiting_for_the_quit_reply_changes_nothing():
    h = Harness(FakeServer(QUIT=DISCONNECT), skip_quit_response=False)
    result = h.deliver(env("a@x"))
    assert result.delivered == (0,)
    assert isinstance(h.events[-1], Closed) and h.of(SessionFailed) == []


# --- QUIT, reuse, RSET probe ----------------------------------------------------------------

def test_quit_reply_is_awaited_without_skip_quit_response():
    h = Harness(skip_quit_response=False, split="bytes")
    h.deliver(env("a@x"))
    assert h.writes[-1] == BODY + b".\r\nQUIT\r\n"
    assert h.states[-1] == State.QUIT and h.server.commands[-1] == "QUIT"
    assert isinstance(h.events[-1], Closed)


@pytest.mark.parametrize("skip", [True, False])
def test_quit_from_an_idle_session(skip):
    h = Harness(skip_quit_response=skip)
    h.handshake()
    h.client.quit()
    assert not h.client.reusable
    if skip:
        assert h.client.state == State.CLOSED and isinstance(h.client.next_event(), Closed)
        assert h.client.data_to_send() == b"QUIT\r\n"
    else:
        assert h.client.state == State.QUIT and h.client.next_event() is NEED_DATA
        assert isinstance(h.run(), Closed)
        assert h.writes[-1] == b"QUIT\r\n" and h.server.commands[-1] == "QUIT"


def test_session_kept_for_reuse_runs_a_second_transaction():
    h = Harness()
    first = h.deliver(env("a@x"), quit_after=False)
    assert first.delivered == (0,)
    assert h.writes[-1] == BODY + b".\r\n"
    assert isinstance(h.events[-1], Ready) and h.client.reusable
    h.client.send_mail(env("b@x"), quit_after=True)
    h.run()
    results = [e.result for e in h.of(TransactionDone)]
    assert [r.delivered for r in results] == [(0,), (0,)]
    assert h.writes[-2].startswith(b"MAIL FROM:") and h.writes[-1].endswith(b".\r\nQUIT\r\n")


def test_the_core_goes_on_with_the_next_message_only_when_idle_clean_and_nothing_unread():
    h = Harness()
    h.deliver(env("a@x"), quit_after=False)
    assert h.client.can_continue
    h.client.continue_ready()               # the next message of a batch: no RSET probe
    assert isinstance(h.client.next_event(), Ready)
    # a stray line from the server after the "." reply would be read as the reply
    # to the next MAIL: such a core is not continued
    h.client.receive_data(b"250 2.0.0 stray\r\n")
    assert not h.client.can_continue
    with pytest.raises(RuntimeError):
        h.client.continue_ready()
    tainted = Harness(FakeServer(RCPT="501 5.1.3 bad"))
    tainted.deliver(env("a@x"), quit_after=False)   # a protocol-error code taints the session
    assert not tainted.client.can_continue


# --- the next message's transaction behind the "." (send_next_mail) ---------------------

class NextHarness(Harness):
    """Queues ``following`` behind the first transaction's ".", as a batch does;
    at that transaction's end, the next message claims it (driver.run_session())."""

    def __init__(self, following, server=None, **kw):
        super().__init__(server, **kw)
        self.following = following
        self.queued = None          # what send_next_mail() answered
        self.claimed = False

    def run(self):
        while True:
            event = self.client.next_event()
            if event is NEED_DATA or event is PAUSED or isinstance(event, Closed):
                if event is NEED_DATA:
                    self.flush()
                    if not self.pending:
                        self.client.receive_eof()
                        continue
                    self.client.receive_data(self.pending)
                    self.pending = b""
                    continue
                self.events.append(event) if event is not PAUSED else None
                self.flush()
                return event
            self.events.append(event)
            if isinstance(event, ReadyForData):
                self.client.send_body(self.body)
                self.client.end_of_data()
                if self.queued is None:
                    self.queued = self.client.send_next_mail(self.following)
            elif isinstance(event, TransactionDone) and self.client.next_envelope is not None:
                assert self.client.next_envelope is self.following
                self.client.claim_next()
                self.claimed = True

    def results(self):
        return [e.result for e in self.of(TransactionDone)]


def test_the_next_transaction_leaves_with_the_dot_and_runs_after_it():
    second = env("b@x")
    h = NextHarness(second)
    h.handshake()
    h.client.send_mail(env("a@x"), quit_after=False)
    assert h.run() is PAUSED
    assert h.queued and h.claimed
    # one write: the body, ".", and the next transaction's commands up to DATA
    assert h.writes[2] == (BODY + b".\r\nMAIL FROM:<sender@example.org> SIZE=24 BODY=7BIT\r\n"
                           b"RCPT TO:<b@x>\r\nDATA\r\n")
    assert h.writes[3] == BODY + b".\r\n"
    assert [r.delivered for r in h.results()] == [(0,), (0,)]
    assert h.server.commands.count(".") == 2 and h.server.bodies == [BODY, BODY]
    assert isinstance(h.events[-1], Ready) and h.client.reusable
    assert h.client.next_envelope is None


def test_a_warning_about_the_next_mail_is_given_to_the_next_message():
    h = NextHarness(env("b@x", encoding="x-unknown"))
    h.handshake()
    h.client.send_mail(env("a@x"), quit_after=False)
    h.client.next_event()
    while h.queued is None:         # up to the first message's "." and the next MAIL
        event = h.client.next_event()
        if event is NEED_DATA:
            h.flush()
            h.client.receive_data(h.pending)
            h.pending = b""
        elif isinstance(event, ReadyForData):
            h.client.send_body(BODY)
            h.client.end_of_data()
            h.queued = h.client.send_next_mail(h.following)
    assert h.queued and h.client.take_notices() == []   # not the first message's
    h.run()
    assert h.claimed
    assert [n.text for n in h.client.take_notices()] == ["unknown content encoding: x-unknown"]


def test_a_refused_dot_fails_only_its_own_message():
    h = NextHarness(env("b@x"), FakeServer(DOT=[TOO_BIG, QUEUED]))
    h.handshake()
    h.client.send_mail(env("a@x"), quit_after=False)
    h.run()
    first, second = h.results()
    assert first.delivered == () and first.outcomes[0].failure.dsn == "5.3.4"
    assert second.delivered == (0,) and h.client.reusable


def test_the_next_transaction_is_dropped_when_the_dot_loses_the_connection():
    h = NextHarness(env("b@x"), FakeServer(DOT=DISCONNECT))
    h.handshake()
    h.client.send_mail(env("a@x"), quit_after=False)
    assert isinstance(h.run(), Closed)
    [only] = h.results()            # nothing at all for the next message: it was never sent
    assert only.outcomes[0].failure.text == (f"lost connection with {PEER} while sending end of "
                                             "data -- message may be sent more than once")
    assert h.client.next_envelope is None and not h.claimed
    assert h.server.bodies == [BODY]


def test_a_protocol_error_in_the_dot_reply_ends_the_session_before_the_next_body():
    h = NextHarness(env("b@x"), FakeServer(DOT=b"xyz garbage\r\n"))
    h.handshake()
    h.client.send_mail(env("a@x"), quit_after=False)
    h.run()
    assert h.queued and not h.claimed
    assert len(h.results()) == 1 and h.client.state == State.CLOSED
    assert h.server.bodies == [BODY] and h.client.next_envelope is None


def test_the_next_mail_refused_ends_its_transaction_as_any_other():
    # this server answers DATA with 354 even so: a lone "." without content
    h = NextHarness(env("b@x"), FakeServer(MAIL=[MAIL_OK, SENDER_REJECTED]))
    h.handshake()
    h.client.send_mail(env("a@x"), quit_after=False)
    assert h.run() is PAUSED
    first, second = h.results()
    assert first.delivered == (0,) and second.outcomes[0].failure.dsn == "5.7.1"
    assert h.server.bodies == [BODY, b""] and h.client.reusable


@pytest.mark.parametrize("server, quit_after, settings, following, why", [
    (FakeServer(EHLO=EHLO_NO_PIPELINING), False, {}, env("b@x"), "no PIPELINING"),
    (None, True, {}, env("b@x"), "QUIT follows the first"),
    (None, False, {}, env("b@x", size=20000000), "over the server's SIZE"),
])
def test_the_next_transaction_is_not_queued_when_the_session_cannot_take_it(
        server, quit_after, settings, following, why):
    h = NextHarness(following, server, **settings)
    h.handshake()
    h.client.send_mail(env("a@x"), quit_after=quit_after)
    h.run()
    assert h.queued is False, why
    assert len(h.results()) == 1
    assert len([c for c in h.server.commands if c.startswith("MAIL")]) == 1
    assert h.client.next_envelope is None


def test_a_failed_write_of_the_dot_drops_the_next_transaction():
    h = Harness(body=None)
    h.handshake()
    h.client.send_mail(env("a@x"), quit_after=False)
    assert h.run() is PAUSED and isinstance(h.events[-1], ReadyForData)
    h.client.send_body(BODY + b".\r\n")
    h.client.end_of_data()
    assert h.client.send_next_mail(env("b@x"))
    assert h.client.data_to_send().endswith(b"DATA\r\n")     # the write that failed
    h.client.body_write_failed()
    assert h.client.next_envelope is None
    h.client.receive_eof()
    events = [h.client.next_event(), h.client.next_event()]
    assert isinstance(events[0], TransactionDone) and isinstance(events[1], Closed)
    assert events[0].result.outcomes[0].failure.text == (
        f"lost connection with {PEER} while sending message body")


def test_lmtp_takes_every_dot_reply_before_the_next_transaction():
    server = FakeServer(greeting="220 lmtp.example.com LMTP", lmtp=True,
                        DOT=["250 2.0.0 one", "452 4.2.2 full", "250 2.0.0 three"])
    h = NextHarness(env("c@x"), server, protocol="lmtp")
    h.handshake()
    h.client.send_mail(env("a@x", "b@x"), quit_after=False)
    assert h.run() is PAUSED
    first, second = h.results()
    assert first.delivered == (0,) and first.outcomes[1].failure.dsn == "4.2.2"
    assert second.delivered == (0,) and second.outcomes[0].reply.text == "250 2.0.0 three"


def test_rset_probe_of_a_cached_connection():
    caps = Capabilities(esmtp=True, pipelining=True)
    client = Client.resume(Settings(peer=PEER), caps.to_dict())
    assert client.state == State.READY and client.capabilities == caps
    client.rset()
    assert client.data_to_send() == b"RSET\r\n"
    assert client.state == State.RSET and client.timeout_parameter == "smtp_rset_timeout"
    assert client.next_event() is NEED_DATA
    client.receive_data(wire(OK))
    assert client.next_event() == RsetReply(Reply.make(OK), True)
    assert client.next_event() == Ready(caps)
    assert client.next_event() is PAUSED
    assert client.reusable


@pytest.mark.parametrize("answer, ok", [(OK, True), (SHUTTING_DOWN, False)])
def test_rset_probe_answer_decides_reuse(answer, ok):
    client = Client.resume(Settings(peer=PEER), Capabilities(esmtp=True))
    client.rset()
    client.data_to_send()
    client.receive_data(wire(answer))
    event = client.next_event()
    assert event == RsetReply(Reply.make(answer), ok)
    assert isinstance(client.next_event(), Ready)
    assert client.reusable is ok


def test_a_batch_continues_a_resumed_core_without_a_probe():
    caps = Capabilities(esmtp=True, pipelining=True)
    client = Client.resume(Settings(peer=PEER), caps.to_dict())
    client.continue_ready()
    assert client.data_to_send() == b""            # no RSET on the wire
    assert client.next_event() == Ready(caps)
    assert client.next_event() is PAUSED
    assert client.reusable


def test_continue_ready_is_only_for_a_resumed_idle_core():
    with pytest.raises(RuntimeError):
        Client(Settings(peer=PEER)).continue_ready()         # still awaits the greeting
    client = Client.resume(Settings(peer=PEER), Capabilities(esmtp=True))
    client.rset()
    with pytest.raises(RuntimeError):
        client.continue_ready()                              # a probe is under way


def test_rset_probe_on_a_dead_connection():
    client = Client.resume(Settings(peer=PEER), Capabilities(esmtp=True))
    client.rset()
    client.receive_eof()
    assert isinstance(client.next_event(), Closed)


# --- STARTTLS and AUTH slots -----------------------------------------------------------------

def test_starttls_discards_everything_after_the_220_and_forgets_capabilities():
    server = FakeServer(EHLO=[EHLO_STARTTLS, EHLO_NO_PIPELINING],
                        STARTTLS=b"220 2.0.0 Ready to start TLS\r\n250 2.1.0 injected\r\n")
    h = Harness(server)
    caps = h.handshake()
    assert caps.starttls and caps.pipelining
    h.client.start_tls()
    assert h.run() is PAUSED
    [tls] = h.of(StartTLSReply)
    assert tls.accepted and h.client.state == State.TLS_HANDSHAKE
    assert h.client.discarded_after_starttls == len(b"250 2.1.0 injected\r\n")
    h.pending = b""                              # those bytes are the TLS layer's, if anything
    with pytest.raises(LocalProtocolError):
        h.client.receive_data(b"250 injected\r\n")
    h.client.tls_established()
    assert h.client.capabilities == Capabilities()       # forgotten until the new EHLO
    caps = h.handshake()
    assert h.writes == [ehlo_line(), b"STARTTLS\r\n", ehlo_line()]
    assert not caps.starttls and not caps.pipelining and caps.dsn
    assert not h.client.reusable                   # TLS state cannot go to the cache


def test_starttls_refused_leaves_a_plaintext_session():
    h = Harness(FakeServer(EHLO=EHLO_STARTTLS, STARTTLS="454 4.7.0 TLS not available"))
    h.handshake()
    h.client.start_tls()
    h.run()
    [tls] = h.of(StartTLSReply)
    assert not tls.accepted and isinstance(h.events[-1], Ready)
    assert not h.client.capabilities.starttls and h.client.state == State.READY


def test_starttls_must_have_been_offered():
    h = Harness()
    h.handshake()
    with pytest.raises(LocalProtocolError):
        h.client.start_tls()


def test_auth_exchange():
    server = FakeServer(EHLO="250-mx\n250 AUTH PLAIN", AUTH=["334 ", "235 2.7.0 ok"])
    h = Harness(server, sasl_enabled=True)
    h.handshake()
    h.client.send_auth("AUTH PLAIN")
    h.run()
    h.client.send_auth("AGZvbwBiYXI=")
    h.run()
    assert [e.reply.code for e in h.of(AuthReply)] == [334, 235]
    assert h.writes[1:] == [b"AUTH PLAIN\r\n", b"AGZvbwBiYXI=\r\n"]
    assert h.client.state == State.READY


def test_driver_decided_failure():
    h = Harness()
    h.handshake()
    failure = Failure.local("starttls", "site", "4.7.4",
                            f"TLS is required, but was not offered by host {PEER}")
    h.client.fail(failure)
    assert h.client.state == State.FAILED and h.client.failure is failure
    h.client.quit()
    assert h.client.data_to_send() == b"QUIT\r\n"


# --- states, timeouts, misuse ------------------------------------------------------------------

def test_states_map_to_postfix_timeouts_and_texts():
    expected = {
        "GREETING": ("smtp_helo_timeout", "receiving the initial server greeting"),
        "EHLO": ("smtp_helo_timeout", "performing the EHLO handshake"),
        "HELO": ("smtp_helo_timeout", "performing the HELO handshake"),
        "LHLO": ("smtp_helo_timeout", "performing the LHLO handshake"),
        "XFORWARD": ("smtp_xforward_timeout", "performing the XFORWARD handshake"),
        "MAIL": ("smtp_mail_timeout", "sending MAIL FROM"),
        "RCPT": ("smtp_rcpt_timeout", "sending RCPT TO"),
        "DATA": ("smtp_data_init_timeout", "sending DATA command"),
        "BODY": ("smtp_data_xfer_timeout", "sending message body"),
        "DOT": ("smtp_data_done_timeout",
                "sending end of data -- message may be sent more than once"),
        "RSET": ("smtp_rset_timeout", "sending RSET"),
        "QUIT": ("smtp_quit_timeout", "sending QUIT"),
        "STARTTLS": ("smtp_starttls_timeout", "receiving the STARTTLS response"),
    }
    for state, (timeout, where) in expected.items():
        assert (STATES[state].timeout, STATES[state].where) == (timeout, where)


def test_states_during_a_conversation_without_pipelining():
    h = Harness(FakeServer(EHLO=EHLO_NO_PIPELINING), skip_quit_response=False)
    h.deliver(env("a@x"))
    seen = list(dict.fromkeys(h.states))
    assert seen == ["GREETING", "EHLO", "MAIL", "RCPT", "DATA", "DOT", "QUIT"]


def test_lmtp_timeouts_use_the_lmtp_names():
    client = Client(Settings(protocol="lmtp"))
    assert client.timeout_parameter == "lmtp_lhlo_timeout"


def test_settings_from_config():
    config = Config("/nonexistent", overrides=[
        parse_override("smtp_helo_timeout=42s"), parse_override("myhostname=me.example"),
        parse_override("smtp_discard_ehlo_keywords=pipelining"),
        parse_override("lmtp_lhlo_name=lmtp.example")])
    settings = Settings.from_config(config, "smtp", peer=PEER)
    assert settings.helo_name == "me.example" and settings.peer == PEER
    assert settings.discard_ehlo_keywords == ("pipelining",)
    assert settings.timeouts["GREETING"] == 42 and settings.timeouts["RSET"] == 20
    assert settings.timeouts["DOT"] == 600 and settings.skip_5xx_greeting
    client = Client(settings)
    assert client.timeout == 42
    lmtp = Settings.from_config(config, "lmtp")
    assert lmtp.helo_name == "lmtp.example" and lmtp.timeouts["GREETING"] == 300


def test_misuse_is_a_local_protocol_error():
    client = Client(Settings())
    with pytest.raises(LocalProtocolError):
        client.send_mail(env("a@x"))
    with pytest.raises(LocalProtocolError):
        client.send_body(b"x\r\n")
    with pytest.raises(LocalProtocolError):
        client.quit()
    assert client.next_event() is NEED_DATA


def test_unsolicited_reply_while_idle_is_taken_as_the_next_commands_reply():
    h = Harness()
    h.handshake()
    h.client.receive_data(wire(SHUTTING_DOWN))      # e.g. an idle timeout notice
    assert h.client.next_event() is PAUSED          # nothing is interpreted while idle
    h.client.send_mail(env("a@x"), quit_after=False)
    h.run()
    assert h.result.failure.dsn == "4.3.2" and h.result.failure.stage == "mail"
