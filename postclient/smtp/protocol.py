"""The SMTP/LMTP client protocol core: a state machine without I/O.

Exports Client, Settings, State, STATES (the per-state table), NEED_DATA,
PAUSED and, re-exported from events.py / commands.py / ehlo.py / reply.py,
everything a driver needs.  Reads, through Settings.from_config() (or the
lmtp_* mirror of each smtp_* name): myhostname, smtp_helo_name,
smtp_always_send_ehlo, smtp_never_send_ehlo, smtp_skip_5xx_greeting,
smtp_pix_workarounds, smtp_discard_ehlo_keywords, smtp_sasl_auth_enable,
smtp_send_xforward_command, smtp_skip_quit_response,
smtp_quote_rfc821_envelope, disable_mime_output_conversion,
line_length_limit and the per-state timeouts listed in STATES.  Per-server
lookups (smtp_pix_workaround_maps, smtp_discard_ehlo_keyword_address_maps)
are the driver's: it passes their results in Settings.

Theory of operation
-------------------
No sockets, clocks or DNS in here (h11 style).  The driver owns the socket and
the deadlines and runs one loop:

    event = client.next_event()
    NEED_DATA -> write client.data_to_send() (if not empty) in ONE write,
                 then read with the deadline STATES[client.state] gives, and
                 call receive_data(bytes), receive_eof() (EOF or reset) or
                 timed_out() (deadline passed)
    PAUSED    -> the core waits for the driver: start_tls(), send_auth(),
                 send_mail(), send_body()/end_of_data(), rset() or quit()
    an event  -> act on it (see events.py), then ask again

Each data_to_send() result is one write.  That is how PIPELINING grouping is
exact: the core queues commands until it must wait for replies, so
"MAIL RCPT... DATA" leaves as one write when it fits in 4096 bytes.

The session (postfix-behaviour.md §1.2-1.5, §8):

  GREETING --2xx--> EHLO | HELO | LHLO --2xx--> READY
      READY --start_tls()--> STARTTLS --2xx--> TLS_HANDSHAKE
            --tls_established()--> EHLO (capabilities forgotten) --> READY
      READY --send_auth(line)--> AUTH --reply--> READY     (repeat as SASL needs)
      READY --send_mail(envelope)--> [XFORWARD] MAIL RCPT... DATA
            --354--> BODY --end_of_data()--> DOT --> READY, or QUIT --> CLOSED
      DOT --send_next_mail(next)--> the next MAIL RCPT... DATA leave behind "."
            (RFC 2920); after the "." reply(s) the core goes on with that
            transaction instead of READY (a batch's next message: claim_next())
      READY --rset()--> RSET --> READY          (probe of a cached connection)
      READY/FAILED --quit()--> QUIT --> CLOSED
  A greeting or handshake failure goes to FAILED (the stream is sane: quit()
  is allowed); an I/O failure goes to CLOSED.

The state is that of the oldest command still waiting for its reply (the
Postfix "receiver" state); it selects the timeout and the "while <state>"
text of lost-connection and timeout messages.  Restart the deadline whenever
``state`` or ``replies_received`` changes (a deadline per command/reply, as
smtp_per_record_deadline).

The transaction mirrors Postfix's smtp_loop(): a sender runs ahead of a
receiver.  Without PIPELINING the sender waits for each reply.  With
PIPELINING it stops only when the next command would push the unsent
commands past 4096 bytes, and before "." (DATA is a synchronisation point);
QUIT after "." never waits.  Once the receiver has caught up, the sender
corrects course with RSET when MAIL was refused, when no RCPT was accepted,
or when DATA was refused; a 354 with no accepted recipient gets a lone ".".
Replies are matched to commands strictly in order.  A "10 s since the last
I/O" flush is moot here: each batch is built in one call, with no I/O in
between; the driver may flush (call data_to_send()) whenever it likes.

Security rules kept here: bounded replies (reply.py), an invalid code or a
garbage line is a protocol error and the session is never reusable; a
recipient is delivered only by a 2xx to "." (its own, with LMTP); nothing
received after the 2xx to STARTTLS is ever interpreted; CR, LF or NUL in the
HELO name, an address or a parameter is refused before anything is sent;
the body may not contain the end-of-data line before its end.
"""

import collections
import dataclasses
from typing import Any, Final

from ..config import registry
from .commands import (Envelope, Rcpt, UnsafeValueError, check_envelope, mail_command,
                       mime_downgrade, rcpt_command, unsafe_values, xforward_commands)
from .ehlo import Capabilities, discard_notice, discard_set, parse_ehlo, parse_greeting
from .events import (NEED_DATA, PAUSED, AuthReply, Closed, EndOfDataReply, Failure, Greeting,
                     LocalProtocolError, Notice, ProtocolError, Ready, ReadyForData,
                     RecipientOutcome, RemoteProtocolError, RsetReply, SessionFailed,
                     StartTLSReply, TransactionDone, TransactionResult)
from .reply import DEFAULT_LINE_LENGTH_LIMIT, Reply, ReplyReader, notice_worthy_code
from .xtext import has_unsafe_characters

__all__ = [
    "Client", "Settings", "State", "STATES", "NEED_DATA", "PAUSED", "Envelope", "Rcpt",
    "Capabilities", "Reply", "ReplyReader", "Failure", "RecipientOutcome", "TransactionResult",
    "Greeting", "Ready", "StartTLSReply", "AuthReply", "ReadyForData", "EndOfDataReply",
    "TransactionDone", "RsetReply", "SessionFailed", "Closed", "Notice", "ProtocolError",
    "LocalProtocolError", "RemoteProtocolError", "UnsafeValueError", "unsafe_values",
]

PIPELINING_BUFSIZE = 4096
END_OF_DATA = b"\r\n.\r\n"


class State:
    GREETING: Final = "GREETING"
    EHLO: Final = "EHLO"
    HELO: Final = "HELO"
    LHLO: Final = "LHLO"
    READY: Final = "READY"
    STARTTLS: Final = "STARTTLS"
    TLS_HANDSHAKE: Final = "TLS_HANDSHAKE"
    AUTH: Final = "AUTH"
    XFORWARD: Final = "XFORWARD"
    MAIL: Final = "MAIL"
    RCPT: Final = "RCPT"
    DATA: Final = "DATA"
    BODY: Final = "BODY"
    DOT: Final = "DOT"
    RSET: Final = "RSET"
    QUIT: Final = "QUIT"
    FAILED: Final = "FAILED"
    CLOSED: Final = "CLOSED"


@dataclasses.dataclass(frozen=True)
class StateInfo:
    timeout: str | None   # smtp_* timeout parameter (None: nothing to wait for)
    where: Any  # str; Postfix's "while ..." text
    stage: Any  # str; Failure.stage for I/O trouble in this state


# The one table of per-state facts (Postfix's xfer_timeouts[] / xfer_states[]).
STATES = {
    State.GREETING: StateInfo("smtp_helo_timeout", "receiving the initial server greeting",
                              "greeting"),
    State.EHLO: StateInfo("smtp_helo_timeout", "performing the EHLO handshake", "helo"),
    State.HELO: StateInfo("smtp_helo_timeout", "performing the HELO handshake", "helo"),
    State.LHLO: StateInfo("smtp_helo_timeout", "performing the LHLO handshake", "helo"),
    State.STARTTLS: StateInfo("smtp_starttls_timeout", "receiving the STARTTLS response",
                              "starttls"),
    State.TLS_HANDSHAKE: StateInfo("smtp_starttls_timeout", "performing the TLS handshake",
                                   "starttls"),
    # Postfix runs SASL inside its EHLO handshake: same timeout and text.
    State.AUTH: StateInfo("smtp_helo_timeout", "performing the EHLO handshake", "auth"),
    State.XFORWARD: StateInfo("smtp_xforward_timeout", "performing the XFORWARD handshake",
                              "xforward"),
    State.MAIL: StateInfo("smtp_mail_timeout", "sending MAIL FROM", "mail"),
    State.RCPT: StateInfo("smtp_rcpt_timeout", "sending RCPT TO", "rcpt"),
    State.DATA: StateInfo("smtp_data_init_timeout", "sending DATA command", "data"),
    State.BODY: StateInfo("smtp_data_xfer_timeout", "sending message body", "body"),
    State.DOT: StateInfo("smtp_data_done_timeout",
                         "sending end of data -- message may be sent more than once", "dot"),
    State.RSET: StateInfo("smtp_rset_timeout", "sending RSET", "rset"),
    State.QUIT: StateInfo("smtp_quit_timeout", "sending QUIT", "quit"),
    State.READY: StateInfo(None, "", "rset"),
    State.FAILED: StateInfo(None, "", "quit"),
    State.CLOSED: StateInfo(None, "", "quit"),
}

# Which driver calls each state allows (h11's "what may the client do now").
ALLOWED = {
    "start_tls": {State.READY},
    "tls_established": {State.TLS_HANDSHAKE},
    "send_auth": {State.READY},
    "send_mail": {State.READY},
    "send_body": {State.BODY},
    "end_of_data": {State.BODY},
    "body_write_failed": {State.BODY},
    "abort_body": {State.BODY},
    "rset": {State.READY},
    "quit": {State.READY, State.FAILED},
    "fail": {State.READY, State.TLS_HANDSHAKE, State.FAILED},
}

# The state of an awaited reply whose kind is not itself a state name.
_STATE_OF_KIND = {"ABORT": State.RSET, "PROBE": State.RSET}

# Postfix's xfer_request[]: "(in reply to ...)".
_IN_REPLY_TO = {
    "XFORWARD": "XFORWARD command", "MAIL": "MAIL FROM command", "RCPT": "RCPT TO command",
    "DATA": "DATA command", "DOT": "end of DATA command",
}

_PIX_WORDS = ("disable_esmtp", "delay_dotcrlf")
_LOST = "lost connection with {peer} while {where}"
_TIMED_OUT = "conversation with {peer} timed out while {where}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the core needs to know about this session, resolved by the driver.

    ``peer`` is Postfix's namaddr ("mx.example.com[192.0.2.1]") used in
    texts; ``nexthop`` the destination named in the mail-loop text.
    ``loop_detection`` is on for SMTP to port 25 (the driver decides);
    ``best_mx`` makes a loop 5.4.6 rather than 4.4.6.  ``pix_workarounds``
    and ``discard_ehlo_keywords`` are the effective lists for this server
    (after the per-address maps).  ``timeouts`` maps state names to seconds.
    """

    protocol: Any = "smtp"  # str
    helo_name: Any = "localhost"  # str
    myhostname: Any = "localhost"  # str
    peer: Any = "localhost[127.0.0.1]"  # str
    nexthop: Any = ""  # str
    loop_detection: Any = False  # bool
    best_mx: Any = False  # bool
    always_send_ehlo: Any = True  # bool
    never_send_ehlo: Any = False  # bool
    skip_5xx_greeting: Any = True  # bool
    pix_workarounds: Any = _PIX_WORDS  # tuple
    discard_ehlo_keywords: Any = ()  # tuple
    sasl_enabled: Any = False  # bool
    send_xforward: Any = False  # bool
    skip_quit_response: Any = True  # bool
    quote_rfc821_envelope: Any = True  # bool
    disable_mime_output_conversion: Any = False  # bool
    line_length_limit: Any = DEFAULT_LINE_LENGTH_LIMIT  # int
    reply_max_lines: Any = 100  # int
    reply_max_stored: Any = 64 * 1024  # int
    pipelining_bufsize: Any = PIPELINING_BUFSIZE  # int
    timeouts: Any = dataclasses.field(default_factory=dict)  # dict

    @property
    def lmtp(self) -> bool:
        return self.protocol == "lmtp"

    @classmethod
    def from_config(cls, config, protocol="smtp", **session):
        """Settings from a Config; ``session`` gives peer, nexthop, loop_detection,
        best_mx and, when maps matched for this server, pix_workarounds and
        discard_ehlo_keywords."""
        def get(name):
            return config.get(registry.protocol_name(name, protocol))

        values = dict(
            protocol=protocol,
            helo_name=get("smtp_helo_name"),
            myhostname=config.get("myhostname"),
            skip_5xx_greeting=get("smtp_skip_5xx_greeting"),
            pix_workarounds=tuple(w.lower() for w in get("smtp_pix_workarounds")),
            discard_ehlo_keywords=tuple(get("smtp_discard_ehlo_keywords")),
            sasl_enabled=get("smtp_sasl_auth_enable"),
            send_xforward=get("smtp_send_xforward_command"),
            skip_quit_response=get("smtp_skip_quit_response"),
            quote_rfc821_envelope=get("smtp_quote_rfc821_envelope"),
            disable_mime_output_conversion=config.get("disable_mime_output_conversion"),
            line_length_limit=config.get("line_length_limit"),
            timeouts={state: get(info.timeout) for state, info in STATES.items()
                      if info.timeout},
        )
        if protocol != "lmtp":
            values["always_send_ehlo"] = config.get("smtp_always_send_ehlo")
            values["never_send_ehlo"] = config.get("smtp_never_send_ehlo")
        values.update(session)
        return cls(**values)


class _Transaction:
    """Sender and receiver bookkeeping for one MAIL transaction."""

    def __init__(self, envelope, quit_after, downgrade, xforward):
        self.envelope = envelope
        self.quit_after = quit_after
        self.downgrade = downgrade
        self.xforward = xforward
        self.send_state = "XFORWARD" if xforward else "MAIL"
        self.send_index = 0
        self.outcomes = {}
        self.failure = None
        self.mail_rejected = False
        self.nrcpt = 0                  # accepted recipients; -1 after DATA was refused
        self.survivors = []             # accepted recipient indexes, in RCPT order
        self.dot_replies = 0
        self.syncing = False            # the sender waits for the receiver to catch up
        self.warned = False
        self.lost_in_data = False
        self.done = False
        self.complete = True
        self.notices = []               # kept for its message when started early


class Client:
    """One SMTP or LMTP session, from greeting to QUIT (see the module docstring)."""

    def __init__(self, settings=None, *, _resume=None):
        self.settings = settings or Settings()
        if has_unsafe_characters(self.settings.helo_name):
            raise UnsafeValueError("helo_name", self.settings.helo_name)
        self._reader = ReplyReader(self.settings.line_length_limit, self.settings.reply_max_lines,
                                   self.settings.reply_max_stored)
        self._out = []
        self._out_len = 0
        self._expect = collections.deque()   # (kind, index, txn) per command awaiting a reply
        self._events = collections.deque()
        self._notices = []
        self._phase = State.READY
        self._txn = None
        self._next = None               # a transaction queued behind the current one's "."
        self._early = None              # the transaction send_next_mail() started, until claimed
        self._tainted = False
        self._closed_event = None
        self._eof = False
        self.failure = None
        self.last_result = None
        self.replies_received = 0
        self.discarded_after_starttls = 0
        self._body_tail = b"\r\n"
        self._body_done = False
        if _resume is not None:
            self.capabilities = _resume
        else:
            self.capabilities = Capabilities()
            self._expect.append(("GREETING", 0, None))

    @classmethod
    def resume(cls, settings, capabilities):
        """A core for a cached connection: state READY with the capabilities learned
        when it was first set up.  Probe it with rset() before use (security rule 14)."""
        if isinstance(capabilities, dict):
            capabilities = Capabilities.from_dict(capabilities)
        return cls(settings, _resume=capabilities)

    def continue_ready(self):
        """Instead of the RSET probe: this core, for the session this process
        itself left READY moments ago (the next message of a batched request);
        queues the Ready event that run_session() starts from."""
        if not self.can_continue:
            raise RuntimeError("continue_ready() needs an idle, untainted core")
        self._enter_ready()

    @property
    def can_continue(self) -> bool:
        """Idle after a clean transaction, with nothing unread: the next MAIL may follow."""
        return (self.reusable and not self._events and not self._out
                and not self._reader.buffered and not self._reader.in_reply)

    # --- the next message's transaction behind this one's "." (RFC 2920) --------------
    def send_next_mail(self, envelope):
        """Queue the next message's MAIL, RCPT... DATA right behind the "." just
        queued by end_of_data(), in the same write (RFC 2920: message content
        may be the first "command" of a group).  Returns True when queued; False
        when this session cannot take it now (no PIPELINING, a QUIT follows,
        a taint, a local refusal that the message's own turn will report).

        Its replies come after the "." reply(s); once this transaction is done
        (TransactionDone), the core goes on with that one instead of Ready,
        and ``next_envelope`` names it until claim_next().  If this transaction
        ends the session instead (lost connection, protocol error), the next
        one is dropped: no content of it was sent, so nothing is delivered.
        """
        txn = self._txn
        caps = self.capabilities
        if (self.state != State.DOT or txn is None or txn.done or txn.send_state != "LAST"
                or txn.quit_after or txn.lost_in_data or self._next is not None
                or self._tainted or not caps.pipelining):
            return False
        if (0 < caps.size_limit < envelope.size
                or (envelope.smtputf8_required and not caps.smtputf8)):
            return False
        try:
            check_envelope(envelope)
        except UnsafeValueError:
            return False
        downgrade = mime_downgrade(envelope.encoding, caps,
                                   self.settings.disable_mime_output_conversion)
        xforward = (xforward_commands(envelope.xforward, caps)
                    if self.settings.send_xforward and caps.xforward else [])
        following = self._next = self._early = _Transaction(envelope, False, downgrade, xforward)
        self._out_len = 0           # the content leads the group; only commands count
        mine, self._notices = self._notices, []
        self._advance_sender(following)
        # a warning about its MAIL is the next message's, given at claim_next()
        following.notices, self._notices = self._notices, mine
        return True

    @property
    def next_envelope(self) -> Any:
        """The envelope of the transaction send_next_mail() started, until claim_next()."""
        return self._early.envelope if self._early is not None else None

    def claim_next(self):
        """The next message takes over its transaction (it was started for it)."""
        if self._early is None or self._early is not self._txn:
            raise LocalProtocolError("no started transaction to claim")
        self._notices.extend(self._early.notices)
        self._early = None

    # --- introspection -----------------------------------------------------------
    @property
    def state(self) -> str:
        if self._closed_event is not None:
            return State.CLOSED
        if self._expect:
            kind = self._expect[0][0]
            return _STATE_OF_KIND.get(kind, kind)
        return self._phase

    @property
    def timeout_parameter(self) -> str | None:
        """The timeout parameter of the current state, in this protocol's namespace."""
        name = STATES[self.state].timeout
        return registry.protocol_name(name, self.settings.protocol) if name else None

    @property
    def timeout(self) -> Any:
        """Seconds allowed for the current state (from Settings.timeouts), or None."""
        return self.settings.timeouts.get(self.state)

    @property
    def where(self) -> str:
        """Postfix's "while ..." text for the current state."""
        if self.state == State.DOT and self._txn is not None and self._txn.lost_in_data:
            return STATES[State.BODY].where
        if self.state == State.AUTH and self.settings.lmtp:
            return STATES[State.LHLO].where
        return STATES[self.state].where

    @property
    def reusable(self) -> bool:
        """True when the connection may be cached: idle, and no garbage, protocol
        error, I/O error, STARTTLS, refused RSET probe or QUIT happened."""
        return not self._tainted and self.state == State.READY

    @property
    def pipelining(self) -> Any:
        return self.capabilities.pipelining

    def take_notices(self):
        """Info and warnings collected so far (a list of Notice); clears the list."""
        notices, self._notices = self._notices, []
        return notices

    # --- I/O side -----------------------------------------------------------------
    def data_to_send(self):
        """Bytes to write now, as one write; b"" when there is nothing."""
        if not self._out:
            return b""
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out = []
        self._out_len = 0
        return bytes(data)

    def receive_data(self, data):
        if self._closed_event is not None:
            return                      # after the end nothing is interpreted
        if self._phase == State.TLS_HANDSHAKE and not self._expect:
            raise LocalProtocolError("plaintext received during the TLS handshake; "
                                     "call tls_established() first")
        self._reader.push(data)

    def receive_eof(self):
        """The peer closed the connection (or a read failed).  Complete replies
        received before the end are still acted on first."""
        if self._closed_event is not None:
            return
        self._eof = True
        if not self._expect:
            self._io_failure(_LOST)

    def timed_out(self):
        """The current state's deadline passed."""
        self._io_failure(_TIMED_OUT)

    def next_event(self):
        while not self._events:
            if self._closed_event is not None:
                return self._closed_event
            if not self._expect:
                return PAUSED
            reply = self._reader.next_reply()
            if reply is None:
                if self._eof:
                    self._io_failure(_LOST)
                    continue
                return NEED_DATA
            self._take_reply(reply)
        return self._events.popleft()

    # --- driver actions -----------------------------------------------------------
    def _require(self, action):
        if self.state not in ALLOWED[action]:
            raise LocalProtocolError(f"{action}() is not allowed in state {self.state}")

    def start_tls(self):
        """Send STARTTLS (the server must have offered it)."""
        self._require("start_tls")
        if not self.capabilities.starttls:
            raise LocalProtocolError("the server did not offer STARTTLS")
        self._command("STARTTLS", "STARTTLS")

    def tls_established(self):
        """The TLS handshake succeeded: forget every capability and send EHLO again."""
        self._require("tls_established")
        self.discarded_after_starttls += self._reader.discard()
        self.capabilities = Capabilities(pix_disable_esmtp=self.capabilities.pix_disable_esmtp,
                                         pix_delay_dotcrlf=self.capabilities.pix_delay_dotcrlf)
        self._phase = State.READY
        self._send_hello(esmtp=True)

    def send_auth(self, line):
        """Send one AUTH command or SASL response line; an AuthReply follows."""
        self._require("send_auth")
        if has_unsafe_characters(line):
            raise UnsafeValueError("command", "<AUTH line>")
        self._command(line, "AUTH")

    def fail(self, failure, sane=True):
        """Record a failure decided by the driver (TLS policy, SASL...).  With a sane
        stream the state becomes FAILED (quit() allowed), else CLOSED."""
        self._require("fail")
        self.failure = failure
        self._tainted = True
        self._expect.clear()
        if sane:
            self._phase = State.FAILED
        else:
            self._close()

    def send_mail(self, envelope, quit_after=True):
        """Start a transaction.  ``quit_after``: end the session with QUIT (pipelined
        when possible) rather than keep it for reuse."""
        self._require("send_mail")
        check_envelope(envelope)
        caps = self.capabilities
        downgrade = mime_downgrade(envelope.encoding, caps,
                                   self.settings.disable_mime_output_conversion)
        xforward = (xforward_commands(envelope.xforward, caps)
                    if self.settings.send_xforward and caps.xforward else [])
        txn = self._txn = _Transaction(envelope, quit_after, downgrade, xforward)
        self._body_tail, self._body_done = b"\r\n", False
        if caps.size_limit > 0 and caps.size_limit < envelope.size:
            self._fail_all(txn, Failure.local(
                "mail", "message", "5.3.4",
                f"message size {envelope.size} exceeds size limit {caps.size_limit} "
                f"of server {self.settings.peer}"))
            return self._finish_transaction(txn, sent_nothing=True)
        if envelope.smtputf8_required and not caps.smtputf8:
            self._fail_all(txn, Failure.local(
                "mail", "message", "5.6.7",
                f"SMTPUTF8 is required, but was not offered by host {self.settings.peer}"))
            return self._finish_transaction(txn, sent_nothing=True)
        self._phase = State.MAIL
        self._advance_sender()

    def send_body(self, chunk):
        """Queue encoded body bytes (dot-stuffed, CRLF only, from postclient.codec)."""
        self._require("send_body")
        if not chunk:
            return
        chunk = bytes(chunk)
        if self._body_done:
            raise LocalProtocolError("body bytes after the end-of-data line")
        tail = self._body_tail
        pos = (tail + chunk[:4]).find(END_OF_DATA)
        if pos >= 0:
            end = pos + len(END_OF_DATA) - len(tail)
        else:
            pos = chunk.find(END_OF_DATA)
            end = pos + len(END_OF_DATA) if pos >= 0 else -1
        if end >= 0:
            if end != len(chunk):
                raise LocalProtocolError("the body holds CRLF.CRLF before its end: it would "
                                         "end DATA early (security rule 9)")
            self._body_done = True
        self._body_tail = chunk[-4:] if len(chunk) >= 4 else (tail + chunk)[-4:]
        self._write(chunk)

    def end_of_data(self):
        """End the body with "." (unless the body already ended with it).

        With PIX delay_dotcrlf the driver sends the body without its final
        ".\\r\\n", flushes, sleeps, then calls this.
        """
        self._require("end_of_data")
        if not self._body_done:
            if not self._body_tail.endswith(b"\r\n"):
                raise LocalProtocolError("the body does not end with CRLF (security rule 9)")
            self._write(b".\r\n")
        txn = self._txn
        self._expect_dot(txn)
        txn.send_state = "QUIT" if txn.quit_after else "LAST"
        self._phase = State.DOT
        self._advance_sender()
        self._check_transaction_end()

    def body_write_failed(self):
        """A write failed while sending the body.  As Postfix: drop what is unsent and
        still read a premature reply (e.g. 552) if the server sent one; a read that
        fails then reports "lost connection ... while sending message body".

        Also allowed for the write that carried the final "." (after
        end_of_data()): the next transaction queued behind it is dropped."""
        txn = self._txn
        if (self._phase == State.DOT and txn is not None and not txn.done
                and not txn.dot_replies and not txn.lost_in_data):
            self._drop_next()
            self._out, self._out_len = [], 0
            txn.lost_in_data = True
            txn.complete = False
            self._tainted = True
            return
        self._require("body_write_failed")
        self._out, self._out_len = [], 0
        txn.lost_in_data = True
        txn.complete = False
        self._tainted = True
        self._expect_dot(txn)
        txn.send_state = "LAST"
        self._phase = State.DOT

    def abort_body(self, dsn, text):
        """Give up in the middle of the body (MIME conversion error, unreadable queue
        file): every unfinished recipient fails with a local status, and the
        connection must be closed without sending "." (Postfix disconnects)."""
        self._require("abort_body")
        txn = self._txn
        self._out, self._out_len = [], 0
        self._fail_all(txn, Failure.local("body", "message", dsn, text))
        self._tainted = True
        txn.send_state = "LAST"
        self._finish_transaction(txn, close=True)

    def rset(self):
        """Send an RSET probe (before reusing a cached connection); an RsetReply follows."""
        self._require("rset")
        self._command("RSET", "PROBE")

    def quit(self):
        """Send QUIT.  With smtp_skip_quit_response the session ends at once."""
        self._require("quit")
        self._tainted = True
        self._write_command("QUIT")
        if self.settings.skip_quit_response:
            self._close()
        else:
            self._expect.append(("QUIT", 0, None))

    # --- output helpers -----------------------------------------------------------
    def _write(self, data):
        self._out.append(data)
        self._out_len += len(data)

    def _write_command(self, line):
        data = line.encode("utf-8", "surrogateescape") + b"\r\n"
        self._out.append(data)
        self._out_len += len(data)

    def _command(self, line, kind, index=0):
        self._write_command(line)
        self._expect.append((kind, index, None))

    def _send_hello(self, esmtp):
        if self.settings.lmtp:
            self._command(f"LHLO {self.settings.helo_name}", "LHLO")
        elif esmtp:
            self._command(f"EHLO {self.settings.helo_name}", "EHLO")
        else:
            self._command(f"HELO {self.settings.helo_name}", "HELO")

    def _notice(self, level, text):
        self._notices.append(Notice(level, text))

    def _emit(self, event):
        self._events.append(event)

    def _enter_ready(self):
        self._phase = State.READY
        self._emit(Ready(self.capabilities))

    def _close(self):
        self._tainted = True
        self._next = self._early = None
        self._expect.clear()
        self._phase = State.CLOSED
        self._closed_event = Closed()

    # --- failures -----------------------------------------------------------------
    def _reply_failure(self, stage, scope, reply, text, dsn=None):
        """Postfix's vsmtp_fill_dsn() + smtp_check_code() for a server reply."""
        dsn = dsn or reply.dsn
        protocol_error = notice_worthy_code(reply.code) or reply.garbage or not reply.valid
        if reply.text[:1] not in ("4", "5"):
            text = "Protocol error: " + text
            dsn = "5.5.0"
            protocol_error = True
        if protocol_error:
            self._tainted = True
        return Failure(stage, scope, dsn, text, "remote", reply, protocol_error)

    def _session_failed(self, failure):
        self.failure = failure
        self._tainted = True
        self._expect.clear()
        self._phase = State.FAILED
        self._emit(SessionFailed(failure))

    def _io_failure(self, template):
        if self._closed_event is not None:
            return
        state = self.state
        info = STATES[state]
        failure = Failure(info.stage if not (self._txn and self._txn.lost_in_data) else "body",
                          "site", "4.4.2",
                          template.format(peer=self.settings.peer, where=self.where), "io")
        txn = self._txn
        self._out, self._out_len = [], 0
        self._tainted = True
        if txn is not None and not txn.done:
            txn.complete = False
            # Postfix records nothing for trouble after the transaction was given
            # up (RSET): every recipient has its failure already.
            if state != State.RSET:
                self._fail_all(txn, failure)
            self._expect.clear()
            txn.send_state = "LAST"
            self._finish_transaction(txn, close=True)
            return
        if state in (State.GREETING, State.EHLO, State.HELO, State.LHLO, State.STARTTLS,
                     State.TLS_HANDSHAKE, State.AUTH):
            self.failure = failure
            self._emit(SessionFailed(failure))
        self._close()

    # --- replies ------------------------------------------------------------------
    def _take_reply(self, reply):
        kind, index, _txn = self._expect.popleft()
        self.replies_received += 1
        if reply.garbage:
            self._tainted = True
            self._notice("warning", f"non-{'LMTP' if self.settings.lmtp else 'ESMTP'} "
                                    f"response from {self.settings.peer}: {reply.text[:100]}")
        if not reply.valid:
            self._tainted = True
        if reply.truncated:
            self._notice("warning", f"{self.settings.peer}: response longer than "
                                    f"{self.settings.line_length_limit} or "
                                    f"{self.settings.reply_max_lines} lines: {reply.text[:30]}...")
        _HANDLERS[kind](self, reply, index)

    def _on_greeting(self, reply, _index):
        s = self.settings
        if not reply.positive:
            dsn = reply.dsn
            if reply.code_class == 5 and s.skip_5xx_greeting:
                dsn = "4" + dsn[1:]
            return self._session_failed(self._reply_failure(
                "greeting", "site", reply,
                f"host {s.peer} refused to talk to me: {reply.text}", dsn))
        info = parse_greeting(reply, s.myhostname)
        caps = self.capabilities
        if info.pix and s.pix_workarounds:
            words = [w for w in _PIX_WORDS if w in {x.lower() for x in s.pix_workarounds}]
            if words:
                self._notice("info", f"enabling PIX workarounds: {' '.join(words)} for {s.peer}")
                caps = dataclasses.replace(caps, pix_disable_esmtp="disable_esmtp" in words,
                                           pix_delay_dotcrlf="delay_dotcrlf" in words)
                self.capabilities = caps
        if info.greeted_with_my_name and s.loop_detection:
            self._notice("warning", f"host {s.peer} greeted me with my own hostname "
                                    f"{s.myhostname}")
        esmtp = info.esmtp
        if not s.lmtp:
            if s.always_send_ehlo and not caps.pix_disable_esmtp:
                esmtp = True
            if s.never_send_ehlo or caps.pix_disable_esmtp:
                esmtp = False
        else:
            esmtp = True
        self._emit(Greeting(reply, esmtp, info.pix))
        self._send_hello(esmtp)

    def _refused(self, reply):
        return self._session_failed(self._reply_failure(
            "helo", "site", reply,
            f"host {self.settings.peer} refused to talk to me: {reply.text}"))

    def _on_ehlo(self, reply, _index):
        if not reply.positive:
            if reply.code == 421 or self.settings.lmtp:
                return self._refused(reply)
            return self._send_hello(esmtp=False)
        s = self.settings
        discard = discard_set(s.discard_ehlo_keywords)
        notice = discard_notice(discard)
        if notice:
            self._notice("info", notice)
        caps, warnings = parse_ehlo(reply, discard, s.sasl_enabled, self.capabilities)
        if (s.loop_detection and caps.server_name
                and caps.server_name.lower() == s.myhostname.lower()):
            self._notice("warning", f"host {s.peer} replied to HELO/EHLO with my own "
                                    f"hostname {s.myhostname}")
            return self._session_failed(Failure.local(
                "helo", "site", "5.4.6" if s.best_mx else "4.4.6",
                f"mail for {s.nexthop} loops back to myself", loop=True))
        for warning in warnings:
            self._notice("warning", f"{warning} from {s.peer}")
        self.capabilities = caps
        self._enter_ready()

    def _on_helo(self, reply, _index):
        if not reply.positive:
            return self._refused(reply)
        caps = self.capabilities
        self.capabilities = Capabilities(pix_disable_esmtp=caps.pix_disable_esmtp,
                                         pix_delay_dotcrlf=caps.pix_delay_dotcrlf)
        self._enter_ready()

    def _on_starttls(self, reply, _index):
        if reply.positive:
            # Security rule 3: whatever came with or after the 2xx is never read.
            dropped = self._reader.discard()
            self.discarded_after_starttls += dropped
            if dropped:
                self._notice("warning", f"{self.settings.peer}: discarding {dropped} bytes "
                                        "received after the STARTTLS reply")
            self._tainted = True        # TLS state cannot be handed to another process
            self._phase = State.TLS_HANDSHAKE
            self._emit(StartTLSReply(reply, True))
            return
        self.capabilities = dataclasses.replace(self.capabilities, starttls=False)
        self._emit(StartTLSReply(reply, False))
        self._enter_ready()

    def _on_auth(self, reply, _index):
        self._emit(AuthReply(reply))
        self._enter_ready()

    def _on_probe(self, reply, _index):
        ok = reply.positive
        if not ok:
            self._tainted = True
        self._emit(RsetReply(reply, ok))
        self._enter_ready()

    def _on_quit(self, _reply, _index):
        self._close()

    # --- the transaction: receiver -------------------------------------------------
    def _said(self, stage, scope, reply, kind):
        return self._reply_failure(
            stage, scope, reply,
            f"host {self.settings.peer} said: {reply.text} (in reply to {_IN_REPLY_TO[kind]})")

    def _on_xforward(self, reply, _index):
        if not reply.positive:
            self._notice("warning", f"host {self.settings.peer} said: {reply.text} "
                                    f"(in reply to {_IN_REPLY_TO['XFORWARD']})")
        self._receiver_step()

    def _on_mail(self, reply, _index):
        txn = self._txn
        if not reply.positive:
            self._fail_all(txn, self._said("mail", "message", reply, "MAIL"))
            txn.mail_rejected = True
        self._receiver_step()

    def _on_rcpt(self, reply, index):
        txn = self._txn
        if not txn.mail_rejected:
            if reply.positive:
                txn.nrcpt += 1
                txn.survivors.append(index)
            else:
                self._fail_one(txn, index, self._said("rcpt", "recipient", reply, "RCPT"))
        self._receiver_step()

    def _on_data(self, reply, _index):
        txn = self._txn
        if reply.code_class != 3:
            if txn.nrcpt > 0:
                self._fail_all(txn, self._said("data", "message", reply, "DATA"))
            txn.nrcpt = -1
        self._receiver_step()

    def _on_dot(self, reply, _index):
        txn = self._txn
        decided = []
        if txn.nrcpt > 0:
            if self.settings.lmtp:
                index = txn.survivors[txn.dot_replies]
                if reply.positive:
                    decided.append(self._deliver(txn, index, reply))
                else:
                    decided.append(self._fail_one(
                        txn, index, self._said("dot", "recipient", reply, "DOT")))
            elif reply.positive:
                decided = [self._deliver(txn, i, reply) for i in txn.survivors
                           if i not in txn.outcomes]
            else:
                failure = self._said("dot", "message", reply, "DOT")
                decided = [self._fail_one(txn, i, failure) for i in txn.survivors
                           if i not in txn.outcomes]
                txn.failure = txn.failure or failure
        txn.dot_replies += 1
        if decided:
            self._emit(EndOfDataReply(reply, tuple(decided)))
        self._receiver_step()

    def _on_abort(self, _reply, _index):
        self._receiver_step()

    def _receiver_step(self):
        """After a transaction reply: let the sender continue once caught up."""
        if not self._expect:
            self._advance_sender()
        self._check_transaction_end()

    # --- the transaction: sender ---------------------------------------------------
    def _build(self, txn):
        """(command, next send state, next index) for the sender's current state."""
        state, index = txn.send_state, txn.send_index
        env, caps, quote = txn.envelope, self.capabilities, self.settings.quote_rfc821_envelope
        if state == "XFORWARD":
            more = index + 1 < len(txn.xforward)
            return txn.xforward[index], ("XFORWARD" if more else "MAIL"), (index + 1 if more else 0)
        if state == "MAIL":
            line, warning = mail_command(env, caps, quote, txn.downgrade)
            if warning and not txn.warned:
                txn.warned = True
                self._notice("warning", warning)
            return line, "RCPT", 0
        if state == "RCPT":
            line = rcpt_command(env.recipients[index], caps, quote)
            last = index + 1 == len(env.recipients)
            return line, ("DATA" if last else "RCPT"), index + 1
        if state == "DATA":
            return "DATA", "DOT", 0
        if state == "DOT":
            return ".", ("QUIT" if txn.quit_after else "LAST"), 0
        if state == "ABORT":
            return "RSET", ("QUIT" if txn.quit_after else "LAST"), 0
        if state == "QUIT":
            return "QUIT", "LAST", 0
        raise AssertionError(f"bad sender state {state}")

    def _advance_sender(self, txn=None):
        """Postfix's smtp_loop() sender: queue commands until a reply is needed.

        A command is built once it is known to go out, or earlier when its
        length decides whether it still fits the pipelining buffer.  ``txn``:
        the transaction queued behind the current one (send_next_mail()).
        """
        txn = txn or self._txn
        if txn is None or txn.done:
            return
        expect = self._expect
        pipelining = self.capabilities.pipelining
        bufsize = self.settings.pipelining_bufsize
        while txn.send_state != "LAST":
            state = txn.send_state
            command = None
            if txn.syncing or state == "DOT":
                wait = True
            else:
                command, next_state, next_index = self._build(txn)
                wait = bool(expect) and (not pipelining or (
                    len(command) + 2 + self._out_len > bufsize
                    and not (state == "QUIT" and expect[0][0] == "DOT")))
            if wait:
                if expect:
                    txn.syncing = True
                    return                      # resumed when the receiver has caught up
                txn.syncing = False
                if ((state == "RCPT" and txn.mail_rejected)
                        or (state == "DATA" and txn.nrcpt == 0)
                        or (state == "DOT" and txn.nrcpt < 0)):
                    state = txn.send_state = "ABORT"
                    command = None
                elif state == "DOT" and txn.nrcpt > 0:
                    self._phase = State.BODY
                    self._emit(ReadyForData(txn.downgrade, self.capabilities.pix_delay_dotcrlf))
                    return
                if command is None:
                    command, next_state, next_index = self._build(txn)
            self._write_command(command)
            if state == "DOT":
                self._expect_dot(txn)
            elif state != "QUIT":
                expect.append((state, txn.send_index, txn))
            else:
                self._tainted = True
                if not self.settings.skip_quit_response:
                    expect.append(("QUIT", 0, txn))
            txn.send_state, txn.send_index = next_state, next_index

    def _expect_dot(self, txn):
        count = len(txn.survivors) if (self.settings.lmtp and txn.nrcpt > 0) else 1
        self._expect.extend(("DOT", 0, txn) for _ in range(count))

    def _check_transaction_end(self):
        txn = self._txn
        if txn is None or txn.done or txn.send_state != "LAST":
            return
        for kind, _index, owner in self._expect:
            if owner is txn and kind != "QUIT":
                return
        self._finish_transaction(txn)

    def _finish_transaction(self, txn, sent_nothing=False, close=False):
        """Emit TransactionDone, then Ready (session kept), Closed, or nothing while
        the reply to a QUIT is still awaited."""
        txn.done = True
        env = txn.envelope
        for index in range(len(env.recipients)):
            if index not in txn.outcomes:    # never happens; unconfirmed is not delivered
                self._fail_one(txn, index, Failure.local(
                    "dot", "message", "4.3.0",
                    f"no final reply from {self.settings.peer} for this recipient"))
        result = TransactionResult(tuple(txn.outcomes[i] for i in range(len(env.recipients))),
                                   txn.failure, tuple(txn.survivors), txn.complete)
        self._emit(TransactionDone(result))
        self.last_result = result
        if close or txn.lost_in_data:
            self._close()
        elif self._next is not None:
            self._start_next()
        elif sent_nothing or not txn.quit_after:
            self._enter_ready()
        elif not self._expect:
            self._close()
        else:
            self._phase = State.QUIT        # the QUIT reply is still awaited

    def _start_next(self):
        """This transaction is done: go on with the one queued behind its "."."""
        following, self._next = self._next, None
        if self._tainted:
            # a protocol error: the replies to come cannot be trusted to match
            # the commands, so the session ends (nothing of the next was sent)
            self._close()
            return
        self._txn = following
        self._body_tail, self._body_done = b"\r\n", False
        self._phase = State.MAIL
        if not self._expect:
            self._advance_sender()

    def _drop_next(self):
        following, self._next = self._next, None
        if following is not None:
            self._early = None
            self._expect = collections.deque(e for e in self._expect if e[2] is not following)

    # --- recipient bookkeeping -------------------------------------------------------
    def _fail_all(self, txn, failure):
        txn.failure = txn.failure or failure
        for index in range(len(txn.envelope.recipients)):
            if index not in txn.outcomes:
                txn.outcomes[index] = RecipientOutcome(index, False, failure.reply, failure)

    def _fail_one(self, txn, index, failure):
        outcome = RecipientOutcome(index, False, failure.reply, failure)
        txn.outcomes[index] = outcome
        return outcome

    def _deliver(self, txn, index, reply):
        outcome = RecipientOutcome(index, True, reply, None)
        txn.outcomes[index] = outcome
        return outcome


_HANDLERS = {
    "GREETING": Client._on_greeting,
    "EHLO": Client._on_ehlo,
    "LHLO": Client._on_ehlo,
    "HELO": Client._on_helo,
    "STARTTLS": Client._on_starttls,
    "AUTH": Client._on_auth,
    "PROBE": Client._on_probe,
    "QUIT": Client._on_quit,
    "XFORWARD": Client._on_xforward,
    "MAIL": Client._on_mail,
    "RCPT": Client._on_rcpt,
    "DATA": Client._on_data,
    "DOT": Client._on_dot,
    "ABORT": Client._on_abort,
}
