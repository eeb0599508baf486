"""Mail submission: addresses, headers and queue files for ``postclient sendmail``.

Exports SubmitError, AddressError, Address, MessageTooBig, parse_addresses(),
parse_sender(), qualify(), dedupe(), check_text(), notify_value(),
ret_value(), encoding_value(), envid_value(), read_message(),
split_headers(), from_header_value(), prepare_content(), Prepared,
body_encoding(), needs_smtputf8(), enqueue(), wake() and the EX_* codes.  Reads
nothing itself: the caller (postclient/cli/sendmail.py) passes myhostname,
myorigin, mail_name, message_size_limit and hopcount_limit; pickup.py reuses
wake() and check_text().

What a submission agent does, as Postfix's sendmail + pickup + cleanup do it
for local mail:
  - addresses are parsed as RFC 822 address lists (``a@b, Name <c@d>``,
    comments, quoted local parts, groups) and kept in Postfix's "internal"
    form (a quoted local part is unquoted; the smtp client quotes it again on
    the wire); an address without a domain gets ``@$myorigin``
    (append_at_myorigin).  CR, LF, NUL and other control characters are
    refused wherever they appear (security rule 10);
  - leading mbox ``From `` lines are dropped; without -i a line holding only
    "." ends the input;
  - Bcc: and Resent-Bcc: headers are removed; missing Date:, Message-ID:
    and From: (Resent-Date: ... when the message has Resent- headers) are
    added at the end of the header block and a ``Received: by $myhostname
    ($mail_name, from userid N)`` header at the top; new header lines use
    the line ending of the message's first line;
  - with -t, recipients come from To:, Cc: and Bcc: (Resent-To:, Resent-Cc:
    and Resent-Bcc: when there are any);
  - the body encoding is 8bit when any byte has the high bit set, else 7bit
    (-B overrides); SMTPUTF8 is requested when an envelope address is not
    ASCII.
Queue files are written complete-or-absent by queuefile.write_queue_file()
into incoming/, or into maildrop/ for a user who may not write incoming/.
"""

import os
import re
import time

from .. import ipc
from ..master.wakeup import WAKEUP_REQUEST
from ..smtp.xtext import quote_822_local
from . import queuefile

EX_USAGE = 64
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_OSERR = 71
EX_TEMPFAIL = 75

MAX_ADDRESS = 1000          # characters; RFC 5321 allows a 256-octet path
MAX_ENVID = 100             # RFC 3461
READ_CHUNK = 64 * 1024
WAKE_TIMEOUT = 5            # seconds to wait for a woken service's announcement
NOTIFY_WORDS = ("SUCCESS", "FAILURE", "DELAY")
EXTRACT_HEADERS = ("to", "cc", "bcc")
DROP_HEADERS = ("bcc", "resent-bcc")
_HEADER_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_FROM_LINE = re.compile(rb">*From ")
_SPECIALS = '()<>@,;:\\".[]'
_ATEXT_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*")


class SubmitError(Exception):
    """A submission that cannot be accepted; ``status`` is its sysexits code."""

    def __init__(self, status, text):
        super().__init__(text)
        self.status = status


class AddressError(ValueError):
    """A malformed address; the text says what is wrong with it."""


class MessageTooBig(SubmitError):
    def __init__(self):
        super().__init__(EX_UNAVAILABLE, "message file too big")


# --- text checks ------------------------------------------------------------------
def check_text(value, what):
    """Refuse CR, LF, NUL and other control characters in ``value`` (rule 10)."""
    for char in value:
        if char in "\r\n\0":
            raise AddressError(f"{what} contains CR, LF or NUL")
        if ord(char) < 32 or ord(char) == 127:
            raise AddressError(f"{what} contains the control character 0x{ord(char):02x}")
    return value


# --- addresses --------------------------------------------------------------------
class Address:
    """One parsed address: ``local`` (unquoted) and ``domain`` ("" when unqualified)."""

    __slots__ = ("local", "domain")

    def __init__(self, local, domain=""):
        self.local = local
        self.domain = domain

    @property
    def null(self):
        return not self.local and not self.domain

    def internal(self):
        return f"{self.local}@{self.domain}" if self.domain else self.local

    def __eq__(self, other):
        return isinstance(other, Address) and (self.local, self.domain) == (other.local, other.domain)

    def __repr__(self):
        return f"Address({self.local!r}, {self.domain!r})"


class _Token:
    __slots__ = ("kind", "text")

    def __init__(self, kind, text):
        self.kind = kind          # "atom", "quoted", "literal", or the special character itself
        self.text = text


def _tokenize(text):
    tokens = []
    position, length = 0, len(text)
    while position < length:
        char = text[position]
        if char in " \t":
            position += 1
        elif char == '"':
            value, position = _quoted(text, position + 1, '"', "quoted string")
            tokens.append(_Token("quoted", value))
        elif char == "(":
            position = _comment(text, position + 1)
        elif char == "[":
            value, position = _quoted(text, position + 1, "]", "domain literal")
            tokens.append(_Token("literal", "[" + value + "]"))
        elif char in ")]":
            raise AddressError(f'unbalanced "{char}"')
        elif char in "<>@,;:.":
            tokens.append(_Token(char, char))
            position += 1
        else:
            end = position
            while end < length and text[end] not in _SPECIALS and text[end] not in " \t":
                end += 1
            tokens.append(_Token("atom", text[position:end]))
            position = end
    return tokens


def _quoted(text, position, closing, what):
    out = []
    while position < len(text):
        char = text[position]
        if char == "\\" and position + 1 < len(text):
            out.append(text[position + 1])
            position += 2
            continue
        if char == closing:
            return "".join(out), position + 1
        if closing == "]" and char == "[":
            raise AddressError(f"unbalanced [ in {what}")
        out.append(char)
        position += 1
    raise AddressError(f"unterminated {what}")


def _comment(text, position):
    depth = 1
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return position + 1
        position += 1
    raise AddressError("unbalanced ( in comment")


class _Parser:
    def __init__(self, tokens):
        self.tokens = tokens
        self.position = 0

    def peek(self):
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def parse_list(self, in_group=False):
        found = []
        while True:
            token = self.peek()
            if token is None:
                return found
            if token.kind == ",":
                self.position += 1
                continue
            if token.kind == ";":
                if in_group:
                    return found
                raise AddressError('";" outside a group')
            found.extend(self.parse_element(in_group))

    def parse_element(self, in_group):
        words = []
        while True:
            token = self.peek()
            if token is None or token.kind in ",;":
                return [_addr_spec(words)] if words else []
            if token.kind == "<":
                self.position += 1
                address = self.parse_angle()
                after = self.peek()
                if after is not None and after.kind not in ",;":
                    raise AddressError(f'unexpected "{after.text}" after <address>')
                return [address]
            if token.kind == ">":
                raise AddressError('unbalanced ">"')
            if token.kind == ":" and not any(w.kind == "@" for w in words):
                if in_group:
                    raise AddressError("a group inside a group")
                self.position += 1
                members = self.parse_list(in_group=True)
                if self.peek() is not None:       # the closing ";"
                    self.position += 1
                return members
            words.append(token)
            self.position += 1

    def parse_angle(self):
        words = []
        while True:
            token = self.peek()
            if token is None:
                raise AddressError('unbalanced "<" (no closing ">")')
            self.position += 1
            if token.kind == ">":
                break
            if token.kind == "<":
                raise AddressError('unbalanced "<" (nested)')
            words.append(token)
        # An obsolete source route "@a,@b:user@domain" is dropped, as Postfix does.
        if words and words[0].kind == "@":
            colons = [i for i, w in enumerate(words) if w.kind == ":"]
            if not colons:
                raise AddressError("malformed source route")
            words = words[colons[0] + 1:]
        if not words:
            return Address("", "")
        return _addr_spec(words)


def _addr_spec(words):
    """local-part ["@" domain] from tokens; AddressError when it is not one."""
    ats = [i for i, w in enumerate(words) if w.kind == "@"]
    if len(ats) > 1:
        raise AddressError('more than one "@" outside quotes')
    local_words = words[:ats[0]] if ats else words
    domain_words = words[ats[0] + 1:] if ats else None
    local = []
    previous_word = False
    for token in local_words:
        if token.kind in ("atom", "quoted"):
            if previous_word:
                raise AddressError("words separated by spaces (put the address in <...>)")
            local.append(token.text)
            previous_word = True
        elif token.kind == ".":
            local.append(".")
            previous_word = False
        else:
            raise AddressError(f'unexpected "{token.text}" in the local part')
    if not any(t.kind in ("atom", "quoted") for t in local_words):
        raise AddressError("empty local part")
    if domain_words is None:
        return Address("".join(local), "")
    return Address("".join(local), _domain(domain_words))


def _domain(words):
    if len(words) == 1 and words[0].kind == "literal":
        return words[0].text
    labels = []
    expect_label = True
    for token in words:
        if token.kind == "atom" and expect_label:
            labels.append(token.text)
            expect_label = False
        elif token.kind == "." and not expect_label:
            expect_label = True
        elif token.kind == "atom":
            raise AddressError("space inside the domain")
        else:
            raise AddressError(f'malformed domain (unexpected "{token.text}")')
    if not labels or expect_label:
        raise AddressError("malformed domain (empty, or a leading, trailing or double dot)")
    return ".".join(labels)


def parse_addresses(text, allow_null=False):
    """The addresses in an RFC 822 address list (a header value or an argument)."""
    check_text(text.replace("\t", " "), "address")
    found = _Parser(_tokenize(text)).parse_list()
    for address in found:
        if address.null and not allow_null:
            raise AddressError("empty address <>")
        if len(address.internal()) > MAX_ADDRESS:
            raise AddressError(f"address longer than {MAX_ADDRESS} characters")
        check_text(address.internal(), "address")
    return found


def parse_sender(text):
    """The -f argument: one address, or the null sender ("" or "<>")."""
    found = parse_addresses(text, allow_null=True)
    if len(found) > 1:
        raise AddressError("more than one sender address")
    return found[0] if found else Address("", "")


def qualify(address, myorigin):
    """The internal form of ``address``, with ``@myorigin`` when it had no domain."""
    if address.null or address.domain:
        return address.internal()
    return f"{address.local}@{myorigin}"


def dedupe(recipients):
    """Drop repeated (address, original) pairs, keeping the first; domains ignore case."""
    seen = set()
    kept = []
    for address, original in recipients:
        local, at, domain = address.rpartition("@")
        key = (local, domain.lower()) if at else (address, "")
        if key not in seen:
            seen.add(key)
            kept.append((address, original))
    return kept


# --- option values ------------------------------------------------------------------
def notify_value(text):
    """-N: "never", or a list of success, delay, failure -> the queue's NOTIFY text."""
    words = [w.strip().upper() for w in text.split(",") if w.strip()]
    if words == ["NEVER"]:
        return "NEVER"
    if not words or any(w not in NOTIFY_WORDS for w in words):
        raise ValueError(f'bad -N value "{text}" (expected "never" or a list of '
                         "success, delay, failure)")
    return ",".join(w for w in NOTIFY_WORDS if w in words)


def ret_value(text):
    value = text.strip().upper()
    if value not in ("FULL", "HDRS"):
        raise ValueError(f'bad -R value "{text}" (expected full or hdrs)')
    return value


def encoding_value(text):
    value = text.strip().upper()
    if value == "8BITMIME":
        return "8bit"
    if value == "7BIT":
        return "7bit"
    raise ValueError("-B option needs 8BITMIME or 7BIT")


def envid_value(text):
    if len(text) > MAX_ENVID:
        raise ValueError(f"-V envelope ID longer than {MAX_ENVID} characters")
    if any(not (32 < ord(c) < 127) for c in text):
        raise ValueError("-V envelope ID must be printable ASCII without spaces "
                         "(CR, LF, NUL and controls are refused)")
    return text


# --- reading the message --------------------------------------------------------------
def read_message(stream, dot_ends=True, limit=0):
    """The message bytes from a binary ``stream``.

    Leading mbox ``From `` lines are skipped.  With ``dot_ends`` a line that
    holds only "." (LF or CRLF) ends the input, as with sendmail without -i.
    MessageTooBig as soon as more than ``limit`` bytes are kept (0 = no limit).
    """
    kept = []
    size = 0
    at_line_start = True
    skipping_from = True       # still at the top, where From_ lines are dropped
    in_from_line = False
    while True:
        piece = stream.readline(READ_CHUNK)
        if not piece:
            break
        complete = piece.endswith(b"\n")
        if in_from_line:
            in_from_line = not complete
            continue
        if at_line_start and skipping_from:
            if _FROM_LINE.match(piece):
                in_from_line = not complete
                continue
            skipping_from = False
        if at_line_start and dot_ends and piece in (b".\n", b".\r\n", b"."):
            break
        size += len(piece)
        if limit and size > limit:
            raise MessageTooBig()
        kept.append(piece)
        at_line_start = complete
    return b"".join(kept)


# --- the header block ----------------------------------------------------------------
class _Header:
    __slots__ = ("name", "start", "end")

    def __init__(self, name, start, end):
        self.name = name
        self.start = start
        self.end = end


def split_headers(content):
    """([header], body offset, blank separator seen) of the primary header block."""
    headers = []
    position = 0
    while position < len(content):
        newline = content.find(b"\n", position)
        end = len(content) if newline < 0 else newline + 1
        line = content[position:end]
        if line.rstrip(b"\r\n") == b"":
            return headers, position, True
        if line[:1] in (b" ", b"\t"):
            if not headers:
                return headers, position, False
            headers[-1].end = end
        else:
            match = _HEADER_NAME.match(line)
            if not match:
                return headers, position, False
            headers.append(_Header(match.group(1).decode("ascii").lower(), position, end))
        position = end
    return headers, position, False


def _header_value(content, header):
    raw = content[header.start:header.end]
    value = raw[raw.index(b":") + 1:]
    value = re.sub(rb"\r?\n(?=[ \t])", b"", value).rstrip(b"\r\n")
    return value.decode("utf-8", "surrogateescape")


def _phrase(name):
    """A display name for a From: header: plain, quoted, or RFC 2047 encoded."""
    if not name.isascii():
        import email.header     # here: most submissions have no such name, and it is slow to load
        return email.header.Header(name, "utf-8").encode()
    if _ATEXT_PHRASE.fullmatch(name) and name.strip() == name and "  " not in name:
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc5322_date(timestamp):
    """``Sun, 22 Nov 2026 07:56:00 +0100``: local time with its UTC offset (RFC 5322
    3.3), in English whatever the locale.  email.utils.format_datetime() says the
    same, but loading it (and datetime, urllib.parse, random...) cost every
    ``postclient sendmail`` about 15 ms."""
    local = time.localtime(timestamp)
    offset = local.tm_gmtoff // 60
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset), 60)
    return (f"{_DAYS[local.tm_wday]}, {local.tm_mday:02d} {_MONTHS[local.tm_mon - 1]} "
            f"{local.tm_year:04d} {local.tm_hour:02d}:{local.tm_min:02d}:{local.tm_sec:02d} "
            f"{sign}{hours:02d}{minutes:02d}")


def from_header_value(address, full_name):
    """``Full Name <address>`` or ``address``, with the local part quoted if needed."""
    quoted = quote_822_local(address)
    if full_name:
        return f"{_phrase(full_name)} <{quoted}>"
    return quoted


class Prepared:
    """The content to queue and what was learnt from its headers."""

    def __init__(self, content, header_recipients, message_id, message_id_name):
        self.content = content
        self.header_recipients = header_recipients   # [(address, original)] with -t
        self.message_id = message_id
        self.message_id_name = message_id_name       # "message-id" or "resent-message-id"


def prepare_content(content, *, queue_id, uid, myhostname, myorigin, mail_name, from_address,
                    full_name="", extract=False, hopcount_limit=50, now=None):
    """Add the submission headers to ``content``; SubmitError for bad headers.

    ``from_address`` goes into an added From: header (the sender, or
    MAILER-DAEMON@$myorigin for the null sender).  With ``extract`` (-t) the
    recipients of the To/Cc/Bcc headers are returned, qualified with
    ``myorigin``; a malformed one is EX_DATAERR.
    """
    headers, body_offset, blank_seen = split_headers(content)
    first_line_end = content.find(b"\n")
    crlf = first_line_end > 0 and content[first_line_end - 1:first_line_end] == b"\r"
    newline = b"\r\n" if crlf else b"\n"
    names = {h.name for h in headers}
    resent = any(name.startswith("resent-") for name in names)
    prefix = "Resent-" if resent else ""
    date = rfc5322_date(time.time() if now is None else now)

    hops = sum(1 for h in headers if h.name == "received") + 1
    if hops >= hopcount_limit:
        raise SubmitError(EX_UNAVAILABLE, f"too many hops ({hops} Received: headers with ours; "
                                          f"hopcount_limit = {hopcount_limit})")

    header_recipients = []
    if extract:
        wanted = EXTRACT_HEADERS
        if any(h.name in ("resent-to", "resent-cc", "resent-bcc") for h in headers):
            wanted = ("resent-to", "resent-cc", "resent-bcc")
        for header in headers:
            if header.name not in wanted:
                continue
            value = _header_value(content, header)
            try:
                for address in parse_addresses(value):
                    header_recipients.append((qualify(address, myorigin), address.internal()))
            except AddressError as error:
                shown = content[header.start:header.start + len(header.name)].decode("ascii")
                raise SubmitError(EX_DATAERR, f"malformed address in the {shown}: header: "
                                              f"{error}: {value.strip()[:200]}") from None

    message_id_name = (prefix + "Message-ID").lower()
    existing_id = next((_header_value(content, h).strip() for h in headers
                        if h.name == message_id_name), None)
    added = []
    if (prefix + "date").lower() not in names:
        added.append(f"{prefix}Date: {date}")
    if existing_id is None:
        existing_id = f"<{queue_id}@{myhostname}>"
        added.append(f"{prefix}Message-ID: {existing_id}")
    if (prefix + "from").lower() not in names:
        added.append(f"{prefix}From: {from_header_value(from_address, full_name)}")

    received = (_bytes(f"Received: by {myhostname} ({mail_name}, from userid {uid})") + newline
                + _bytes(f"\tid {queue_id}; {date}") + newline)
    parts = [received]
    for header in headers:
        if header.name in DROP_HEADERS:
            continue
        text = content[header.start:header.end]
        parts.append(text if text.endswith(b"\n") else text + newline)
    parts.extend(_bytes(line) + newline for line in added)
    body = content[body_offset:]
    if body:
        if not blank_seen:
            parts.append(newline)     # the body did not start with an empty line
        parts.append(body)
    return Prepared(b"".join(parts), header_recipients, existing_id, message_id_name)


def _bytes(text):
    return text.encode("utf-8", "surrogateescape")


def body_encoding(content, override=None):
    """7bit or 8bit by the content's bytes, unless -B said which."""
    if override:
        return override
    return "7bit" if content.isascii() else "8bit"


def needs_smtputf8(sender, recipients):
    return not sender.isascii() or any(not address.isascii() for address in recipients)


# --- the queue ---------------------------------------------------------------------------
def enqueue(queue_directory, queue_id, **fields):
    """Write the queue file into incoming/, else maildrop/; returns (path, queue name).

    maildrop/ is used only when incoming/ may not be written by this user.
    SubmitError(EX_TEMPFAIL) when neither can be written.
    """
    incoming = os.path.join(queue_directory, "incoming")
    try:
        return queuefile.write_queue_file(incoming, queue_id, **fields), "incoming"
    except PermissionError:
        pass
    except OSError as error:
        raise SubmitError(EX_TEMPFAIL, f"queue file write error: {incoming}: "
                                       f"{error.strerror or error}") from None
    maildrop = os.path.join(queue_directory, "maildrop")
    try:
        return queuefile.write_queue_file(maildrop, queue_id, **fields), "maildrop"
    except OSError as error:
        raise SubmitError(EX_TEMPFAIL, f"queue file write error: cannot write {incoming} "
                                       f"and {maildrop}: {error.strerror or error}") from None


def wake(queue_directory, service, timeout=WAKE_TIMEOUT):
    """Poke ``public/<service>`` with ``{"request": "wakeup"}``; False when nobody listens.

    Connect, read the service's announcement, send the request and close
    (docs/protocols.md).  Waiting for the announcement matters: a service
    that finds its client gone when it announces drops the connection
    unread.  It is bounded by ``timeout`` seconds (a child being spawned, a
    busy queue manager); after that the request is left in the socket anyway.
    """
    deadline = time.monotonic() + timeout
    try:
        sock = ipc.connect_unix(os.path.join(queue_directory, "public", service), deadline)
    except ipc.IpcError:
        return False
    try:
        try:
            ipc.receive_message(sock, deadline)
        except ipc.IpcClosed:
            return False
        except ipc.IpcError:
            pass
        ipc.send_message(sock, WAKEUP_REQUEST, time.monotonic() + 1)
        return True
    except ipc.IpcError:
        return False
    finally:
        sock.close()
