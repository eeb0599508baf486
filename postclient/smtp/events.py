"""Events and results of the SMTP/LMTP protocol core, and its two error classes.

Exports the sentinels NEED_DATA and PAUSED; Notice; the events Greeting, Ready, StartTLSReply,
AuthReply, ReadyForData, EndOfDataReply, TransactionDone, RsetReply,
SessionFailed and Closed; the results Failure, RecipientOutcome and
TransactionResult; the errors ProtocolError, LocalProtocolError and
RemoteProtocolError.  Reads no parameters.

Everything here is a frozen dataclass (h11 style): an event says what
happened on the wire, and nothing in it changes afterwards.  See
protocol.py for when each event is produced.

Failures carry what the policy (trouble.py, postfix-behaviour.md §1.6) needs:

- ``stage``: where it happened - "greeting", "helo" (EHLO/HELO/LHLO and the
  mail loop check), "starttls", "auth", "xforward", "mail" (also the SIZE and
  SMTPUTF8 pre-checks that replace MAIL), "rcpt", "data", "body", "dot",
  "rset" or "quit".
- ``scope``: "site" (the server or the connection failed: the handshake,
  every I/O error; Postfix's smtp_site_fail / smtp_stream_except, which also
  suspend the destination on the final server), "message" (MAIL, DATA, "."
  and the pre-checks: every unfinished recipient; smtp_mesg_fail) or
  "recipient" (one RCPT, or one LMTP reply after "."; smtp_rcpt_fail).
- ``dsn`` and ``text``: the status and the reason exactly as Postfix logs it
  in parentheses, e.g. "host mx[192.0.2.1] said: 550 5.1.1 <a@b>: Recipient
  address rejected (in reply to RCPT TO command)".
- ``origin``: "remote" (a server reply), "local" (decided here) or "io"
  (lost connection or timeout; dsn 4.4.2).
- ``reply``: the server's Reply, or None; ``diagnostic`` is its text, for the
  DSN Diagnostic-Code.
- ``protocol_error``: the reply was out of protocol (wrong class, invalid
  code, garbage, or a 500-509/555 failure code) - Postfix would send the
  postmaster a transcript.  ``loop``: the server answered with our own name.
"""

import dataclasses
from typing import Any, ClassVar


class ProtocolError(Exception):
    """Base class of the protocol core's errors."""


class LocalProtocolError(ProtocolError):
    """The caller used the API wrongly (a bug in postclient, never the peer's doing)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol in a way that ends the session.

    The core reports ordinary peer misbehaviour as Failures; this exception
    exists for drivers that prefer to raise one.
    """


class _NeedData:
    """Sentinel: write data_to_send(), then read and call receive_data()/receive_eof()."""

    _instance: ClassVar = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self):
        return "NEED_DATA"


NEED_DATA = _NeedData()


class _Paused:
    """Sentinel: nothing will happen until the caller acts (after Ready or ReadyForData)."""

    _instance: ClassVar = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self):
        return "PAUSED"


PAUSED = _Paused()


@dataclasses.dataclass(frozen=True)
class Notice:
    """Something worth logging ("info" or "warning"), without the queue ID prefix."""

    level: Any  # str
    text: Any  # str


@dataclasses.dataclass(frozen=True)
class Failure:
    stage: Any  # str
    scope: Any  # str
    dsn: Any  # str
    text: Any  # str
    origin: Any = "remote"  # str
    reply: Any = None
    protocol_error: Any = False  # bool
    loop: Any = False  # bool

    @property
    def soft(self) -> bool:
        return self.dsn.startswith("4")

    @property
    def hard(self) -> bool:
        return self.dsn.startswith("5")

    @property
    def suspends_destination(self) -> bool:
        """Postfix throttles the destination for site and I/O failures (on the final server)."""
        return self.scope == "site"

    @property
    def diagnostic(self) -> Any:
        return self.reply.text if self.reply is not None else ""

    @classmethod
    def local(cls, stage, scope, dsn, text, **extra):
        """A failure decided here (TLS policy, SASL, local data errors...)."""
        return cls(stage, scope, dsn, text, origin="local", **extra)


@dataclasses.dataclass(frozen=True)
class RecipientOutcome:
    """What happened to one recipient in one transaction.

    ``delivered`` is True only for a 2xx to "." (SMTP) or the recipient's own
    2xx after "." (LMTP).  Otherwise ``failure`` says why.
    """

    index: Any  # int
    delivered: Any  # bool
    reply: Any = None
    failure: Any = None         # a Failure when not delivered

    @property
    def dsn(self) -> Any:
        return self.reply.dsn if self.delivered else self.failure.dsn

    @property
    def text(self) -> Any:
        return self.reply.text if self.delivered else self.failure.text


@dataclasses.dataclass(frozen=True)
class TransactionResult:
    """The end of one MAIL transaction.

    ``outcomes`` has one RecipientOutcome per envelope recipient, in order;
    every one is delivered or carries a Failure.  ``failure`` is the first
    message- or site-level Failure, if any.  ``accepted`` lists the indexes
    the server accepted at RCPT.  ``complete`` is True when the conversation
    itself went normally (no I/O error, no abort), even if the server refused
    everything: Postfix then does not hold the destination responsible for
    later connection trouble.
    """

    outcomes: Any  # tuple
    failure: Failure | None = None
    accepted: Any = ()  # tuple
    complete: Any = True  # bool

    @property
    def delivered(self) -> tuple:
        return tuple(o.index for o in self.outcomes if o.delivered)

    @property
    def failed(self) -> tuple:
        return tuple(o.index for o in self.outcomes if not o.delivered)


# --- events ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Greeting:
    """A 2xx greeting.  ``pix``: it looked like a PIX firewall; ``esmtp``: it said ESMTP."""

    reply: Any
    esmtp: Any  # bool
    pix: Any  # bool


@dataclasses.dataclass(frozen=True)
class Ready:
    """The core is idle: STARTTLS, AUTH, a transaction, RSET or QUIT may follow."""

    capabilities: Any


@dataclasses.dataclass(frozen=True)
class StartTLSReply:
    """The reply to STARTTLS.  When ``accepted``, do the TLS handshake now."""

    reply: Any
    accepted: Any  # bool


@dataclasses.dataclass(frozen=True)
class AuthReply:
    """The reply to one AUTH command or SASL response line."""

    reply: Any


@dataclasses.dataclass(frozen=True)
class ReadyForData:
    """The server said 354 and accepted someone: send the body now.

    ``downgrade`` says the body must be converted to 7bit for this server;
    ``delay_dotcrlf`` that the PIX workaround applies (the caller still checks
    smtp_pix_workaround_threshold_time against the message's age).
    """

    downgrade: Any  # bool
    delay_dotcrlf: Any  # bool


@dataclasses.dataclass(frozen=True)
class EndOfDataReply:
    """One reply after "." and the recipients it decided (all accepted for SMTP,
    one for LMTP).  Mark the delivered ones done before asking for the next event."""

    reply: Any
    outcomes: Any  # tuple


@dataclasses.dataclass(frozen=True)
class TransactionDone:
    result: TransactionResult


@dataclasses.dataclass(frozen=True)
class RsetReply:
    """The reply to an RSET probe; ``ok`` is False when the server refused it."""

    reply: Any
    ok: Any  # bool


@dataclasses.dataclass(frozen=True)
class SessionFailed:
    """The session failed before or outside a transaction (greeting, EHLO/HELO/LHLO,
    mail loop, STARTTLS/AUTH I/O).  No recipient was touched by the core; apply
    ``failure`` to every unfinished recipient."""

    failure: Failure


@dataclasses.dataclass(frozen=True)
class Closed:
    """The session is over and the connection may not be reused.  Write
    data_to_send() if anything is left (a QUIT whose reply is skipped), then
    close the connection."""
