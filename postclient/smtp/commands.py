"""The envelope of one transaction and the exact command lines built from it.

Exports Envelope, Rcpt, UnsafeValueError, unsafe_values(), mail_command(),
rcpt_command(), xforward_commands() and mime_downgrade().  Reads no
parameters: the protocol core passes smtp_quote_rfc821_envelope,
disable_mime_output_conversion and the server's Capabilities.

Command lines (postfix-behaviour.md §1.4, §8), without the CRLF:

  MAIL FROM:<sender>[ SIZE=n][ BODY=8BITMIME|7BIT][ ENVID=xtext][ RET=FULL|HDRS][ SMTPUTF8]
  RCPT TO:<rcpt>[ ORCPT=rfc822;xtext][ NOTIFY=...]
  XFORWARD NAME=.. ADDR=.. PORT=..   /   XFORWARD PROTO=.. HELO=.. IDENT=.. SOURCE=..

- SIZE when the server announced SIZE and no MIME downgrade will happen;
  BODY when it announced 8BITMIME and the body encoding is known (7bit/8bit);
  ENVID, RET, ORCPT and NOTIFY only when it announced DSN; SMTPUTF8 when it
  announced SMTPUTF8 and the sender asked for it.  (Postfix 3.x sends ORCPT
  before NOTIFY; so do we.)
- Addresses arrive already rewritten by smtp_generic_maps; with
  smtp_quote_rfc821_envelope their local part is quoted when it is not a
  dot-string.  The null sender stays "<>".
- XFORWARD goes out only for attributes the server announced and that have a
  value: an empty value or "[UNAVAILABLE]" is left out, and so is "unknown"
  for NAME, ADDR, PORT and PROTO (Postfix 3.x; 2.x sent "[UNAVAILABLE]").
  SOURCE is LOCAL or REMOTE.  Values are xtext-encoded, so nothing in them
  can break the command line.

Security rule 10: CR, LF or NUL in the sender, a recipient, ORCPT, ENVID,
NOTIFY, RET or the HELO name is refused with UnsafeValueError before anything
is sent.  unsafe_values() lets the caller check an envelope before it even
connects, and say which recipient is at fault.
"""

import dataclasses
import functools
from typing import Any, ClassVar

from .events import LocalProtocolError
from .xtext import has_unsafe_characters, quote_821_local, quote_822_local, uxtext, xtext

NOTIFY_WORDS = ("SUCCESS", "FAILURE", "DELAY")
XFORWARD_UNAVAILABLE = "[UNAVAILABLE]"
_XFORWARD_GROUPS = (("NAME", "ADDR", "PORT"), ("PROTO", "HELO", "IDENT", "SOURCE"))
_UNKNOWN_MEANS_UNAVAILABLE = frozenset(("NAME", "ADDR", "PORT", "PROTO"))


class UnsafeValueError(LocalProtocolError, ValueError):
    """A value that would smuggle CR, LF or NUL into a command (security rule 10).

    ``field`` names it ("sender", "recipient", "orcpt", "notify", "envid",
    "ret", "helo_name", "command"), ``index`` is the recipient's index or
    None, and ``dsn`` is the status the caller should give the affected
    recipients: 5.1.7 for the sender, 5.1.3 for a recipient, 5.5.4 for a DSN
    parameter, 4.3.5 for the HELO name (a local configuration error).
    """

    DSN: ClassVar[dict] = {
        "sender": "5.1.7", "recipient": "5.1.3", "orcpt": "5.5.4", "notify": "5.5.4",
        "envid": "5.5.4", "ret": "5.5.4", "helo_name": "4.3.5", "command": "5.5.4"}

    def __init__(self, field, value, index=None):
        self.field = field
        self.value = value
        self.index = index
        self.dsn = self.DSN.get(field, "5.5.4")
        where = f"{field} #{index}" if index is not None else field
        super().__init__(f"{where} contains CR, LF or NUL: {value!r}")


@dataclasses.dataclass(frozen=True)
class Rcpt:
    """One recipient.  request.Recipient objects fit too (same attribute names).

    ``orcpt`` is the DSN original recipient as "type;address" (e.g.
    "rfc822;user@example.com"); without it, ``original`` (the address before
    rewriting) is sent as rfc822.  ``notify`` is "", "NEVER", or a
    comma-separated list / sequence of SUCCESS, FAILURE, DELAY.
    """

    address: Any  # str
    original: Any = ""  # str
    orcpt: Any = ""  # str
    notify: Any = ""


@dataclasses.dataclass(frozen=True)
class Envelope:
    """One transaction: sender, recipients and message attributes.

    ``size`` is the message size in bytes (for SIZE= and the pre-check);
    ``encoding`` is "7bit", "8bit", or "" / "unknown"; ``ret`` is "FULL",
    "HDRS" or ""; ``smtputf8`` says the sender asked for SMTPUTF8 and
    ``smtputf8_required`` that the message needs it (UTF-8 in the envelope or
    headers).  ``xforward`` maps XFORWARD attribute names (NAME, ADDR, PORT,
    PROTO, HELO, IDENT, SOURCE) to values; SOURCE may be "local"/"remote".
    """

    sender: Any  # str
    recipients: Any  # tuple
    size: Any = 0  # int
    encoding: Any = ""  # str
    envid: Any = ""  # str
    ret: Any = ""  # str
    smtputf8: Any = False  # bool
    smtputf8_required: Any = False  # bool
    xforward: Any = None

    def __post_init__(self):
        object.__setattr__(self, "recipients", tuple(self.recipients))
        if not self.recipients:
            raise ValueError("an envelope needs at least one recipient")


def notify_value(notify):
    """The NOTIFY= value for ``notify`` ("" when none was requested)."""
    if not notify:
        return ""
    words = notify.replace(" ", "").split(",") if isinstance(notify, str) else list(notify)
    words = [w.upper() for w in words if w]
    if "NEVER" in words:
        return "NEVER"
    return ",".join(w for w in NOTIFY_WORDS if w in words)


def unsafe_values(envelope, helo_name=None):
    """Every UnsafeValueError ``envelope`` (and the HELO name) would raise, in order."""
    if not has_unsafe_characters(_all_values(envelope, helo_name)):
        return []               # the usual case: one scan of everything at once
    found = []

    def check(field, value, index=None):
        if not value:
            return
        if isinstance(value, str):
            if has_unsafe_characters(value):
                found.append(UnsafeValueError(field, value, index))
        else:
            for item in value:
                check(field, item, index)

    if helo_name is not None:
        check("helo_name", helo_name)
    check("sender", envelope.sender)
    check("envid", envelope.envid)
    check("ret", envelope.ret)
    for index, rcpt in enumerate(envelope.recipients):
        check("recipient", rcpt.address, index)
        check("orcpt", getattr(rcpt, "orcpt", ""), index)
        check("orcpt", getattr(rcpt, "original", ""), index)
        check("notify", getattr(rcpt, "notify", ""), index)
    return found


def _all_values(envelope, helo_name):
    """Every value unsafe_values() looks at, joined (with a separator that is safe)."""
    values = [helo_name or "", envelope.sender or "", envelope.envid or "", envelope.ret or ""]
    for rcpt in envelope.recipients:
        values.append(rcpt.address or "")
        for name in ("orcpt", "original", "notify"):
            value = getattr(rcpt, name, "") or ""
            values.append(value if isinstance(value, str) else " ".join(value))
    return " ".join(values)


def check_envelope(envelope):
    """Raise the first UnsafeValueError of ``envelope``, and validate RET/NOTIFY."""
    problems = unsafe_values(envelope)
    if problems:
        raise problems[0]
    if envelope.ret and envelope.ret.upper() not in ("FULL", "HDRS"):
        raise ValueError(f"bad DSN RET value {envelope.ret!r} (expected FULL or HDRS)")


def _envelope_address(address, quote):
    return quote_821_local(address) if quote and address else address


def mime_downgrade(encoding, capabilities, disable_mime_output_conversion=False):
    """True when the body must be converted from 8bit to 7bit for this server.

    As Postfix: conversion is on, the server lacks 8BITMIME, and the body is
    not declared 7bit (an unknown encoding is converted too).
    """
    return (not disable_mime_output_conversion and not capabilities.eightbitmime
            and _encoding(encoding) != "7bit")


def _encoding(encoding):
    encoding = (encoding or "").lower()
    return "" if encoding == "unknown" else encoding


def mail_command(envelope, capabilities, quote=True, downgrade=False):
    """The MAIL FROM line, and a warning (or None) about an unknown encoding."""
    parts = [f"MAIL FROM:<{_envelope_address(envelope.sender, quote)}>"]
    warning = None
    if capabilities.size and not downgrade:
        parts.append(f" SIZE={int(envelope.size)}")
    if capabilities.eightbitmime:
        encoding = _encoding(envelope.encoding)
        if encoding == "8bit":
            parts.append(" BODY=8BITMIME")
        elif encoding == "7bit":
            parts.append(" BODY=7BIT")
        elif encoding:
            warning = f"unknown content encoding: {envelope.encoding}"
    if capabilities.dsn:
        if envelope.envid:
            parts.append(" ENVID=" + xtext(envelope.envid, "+="))
        if envelope.ret:
            parts.append(" RET=" + envelope.ret.upper())
    if capabilities.smtputf8 and envelope.smtputf8:
        parts.append(" SMTPUTF8")
    return "".join(parts), warning


def _orcpt_parameter(rcpt):
    return _orcpt_text(getattr(rcpt, "orcpt", "") or "", getattr(rcpt, "original", "") or "")


@functools.lru_cache(maxsize=4096)
def _orcpt_text(orcpt, original):
    """The " ORCPT=..." parameter, or "" (kept: the same values recur in a queue run)."""
    if not orcpt and original:
        orcpt = "rfc822;" + quote_822_local(original)
    if not orcpt:
        return ""
    kind, semicolon, value = orcpt.partition(";")
    if semicolon and kind.lower() == "rfc822":
        return " ORCPT=rfc822;" + xtext(value, "=+")
    if semicolon and kind.lower() == "utf-8":
        return " ORCPT=utf-8;" + uxtext(value)
    return " ORCPT=" + xtext(orcpt, "=+")


def rcpt_command(rcpt, capabilities, quote=True):
    """The RCPT TO line for one recipient."""
    line = f"RCPT TO:<{_envelope_address(rcpt.address, quote)}>"
    if capabilities.dsn:
        line += _orcpt_parameter(rcpt)
        notify = notify_value(getattr(rcpt, "notify", ""))
        if notify:
            line += " NOTIFY=" + notify
    return line


def _xforward_value(name, value):
    if value is None:
        return None
    value = str(value)
    if not value or value == XFORWARD_UNAVAILABLE:
        return None
    if name in _UNKNOWN_MEANS_UNAVAILABLE and value.lower() == "unknown":
        return None
    if name == "SOURCE":
        return "LOCAL" if value.lower() == "local" else "REMOTE"
    return value


def xforward_commands(attributes, capabilities):
    """The XFORWARD lines (zero, one or two) for ``attributes`` and this server."""
    if not attributes:
        return []
    given = {str(k).upper(): v for k, v in dict(attributes).items()}
    lines = []
    for group in _XFORWARD_GROUPS:
        parts = []
        for name in group:
            if name not in capabilities.xforward:
                continue
            value = _xforward_value(name, given.get(name))
            if value is not None:
                parts.append(f" {name}={xtext(value)}")
        if parts:
            lines.append("XFORWARD" + "".join(parts))
    return lines
