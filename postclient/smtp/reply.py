"""Server replies: bounded, incremental parsing and enhanced status codes.

Exports Reply, ReplyReader, dsn_valid(), enhanced_status(), valid_code() and
notice_worthy_code().  Reads no parameters: the caller passes
``line_length_limit`` (main.cf ``line_length_limit``, 2048 by default).

Parsing follows Postfix's smtp_chat_resp() (postfix-behaviour.md §1.5,
security rules 7 and 8):

- A line ends in CRLF or a bare LF; one trailing CR is removed.  A line longer
  than ``line_length_limit`` is cut there and the rest of it, up to its LF, is
  skipped.  Every byte outside printable ASCII becomes "?".
- ``ddd-text`` continues a reply; ``ddd text`` or a bare ``ddd`` ends it.  Any
  other line is garbage: it is kept with the reply that follows (as Postfix
  does) and flags that reply, and reading goes on.
- What one reply may store is bounded: at most ``max_lines`` lines and about
  ``max_stored`` characters.  Lines past either limit are read and dropped,
  except the final line, which is always kept because the code comes from it.
  A server that sends an endless multi-line reply therefore costs CPU, never
  memory; the caller's deadline ends it.
- The reply code comes from the last line.  The enhanced status code comes
  from the last line too when the code starts with 2, 4 or 5 and the text
  starts with ``d.ddd.ddd`` of the same class; otherwise it is ``C.0.0``
  (``550 4.1.1 x`` gives 5.0.0).  A code that does not start with 2, 4 or 5
  gives 5.5.0, Postfix's "protocol error" safety value (3.0.0 is no RFC 3463
  class).

The reader is incremental and holds no reference to the data it was given:
results are identical whether the input is fed whole, byte by byte or in any
other split.
"""

import dataclasses
import re
from typing import Any

DEFAULT_LINE_LENGTH_LIMIT = 2048
DEFAULT_MAX_LINES = 100
DEFAULT_MAX_STORED = 64 * 1024

# Every byte outside printable ASCII becomes "?" (Postfix's printable()).
_PRINTABLE = bytes(b if 0x20 <= b < 0x7f else 0x3f for b in range(256))
# The same, keeping CR and LF for the line splitting that follows.
_PRINTABLE_CRLF = bytes(b if 0x20 <= b < 0x7f or b in (0x0a, 0x0d) else 0x3f for b in range(256))
_DSN = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}(?=\s|$)")
# "ddd text" or a bare "ddd" ends a reply; "ddd-text" continues it.
_LAST_LINE = re.compile(r"[0-9]{3}(?: |\Z)")
_CONTINUATION_LINE = re.compile(r"[0-9]{3}-")
# An enhanced status code at the start of a reply line's text (from its fifth
# character, spaces skipped).
_STATUS_AFTER_CODE = re.compile(r" *(" + _DSN.pattern + ")")


def dsn_valid(text):
    """Length of the RFC 3463 status code at the start of ``text``, or 0.

    ``d.ddd.ddd`` with a class of 2, 4 or 5, one to three digits in each
    later part, and the end of the text or white space after it.
    """
    match = _DSN.match(text)
    return match.end() if match else 0


def enhanced_status(code, last_line):
    """The enhanced status code of a reply, from its code and last line (§1.5)."""
    first = str(code)[0] if code >= 100 else "0"
    if first not in "245":
        return "5.5.0"
    match = _STATUS_AFTER_CODE.match(last_line, 4)
    if match is not None and match[1][0] == first:
        return match[1]
    return first + ".0.0"


def valid_code(code):
    """True for a reply code that SMTP allows at all: 2xx to 5xx."""
    return 200 <= code <= 599


def notice_worthy_code(code):
    """Postfix's smtp_check_code(): a failure code that suggests a protocol error.

    Codes below 400 or above 599, 555 (RFC 1869 parameter error) and 500-509
    (syntax errors and unimplemented commands).
    """
    return code < 400 or code > 599 or code == 555 or 500 <= code <= 509


@dataclasses.dataclass(frozen=True)
class Reply:
    """One server reply.

    ``code`` comes from the last line, ``dsn`` is its enhanced status code,
    ``lines`` the stored, sanitised lines and ``text`` those lines joined with
    single spaces, which is how Postfix logs a reply ("550 5.1.1 <a@b>: ...").
    ``garbage`` says a non-reply line arrived while reading this reply;
    ``truncated`` that a line was cut or lines were dropped.
    """

    code: Any  # int
    dsn: Any  # str
    text: Any  # str
    lines: Any  # tuple
    garbage: Any = False  # bool
    truncated: Any = False  # bool

    @classmethod
    def from_lines(cls, lines, garbage=False, truncated=False):
        """A Reply from sanitised lines, the last of which starts with the code.

        A server says the same few short things over and over ("250 2.1.0 Ok",
        "354 End data..."): recent short one-line Replies are kept by their
        line and shared, as a Reply never changes.
        """
        lines = tuple(lines)
        last = lines[-1]
        # Only a line that ends a reply is kept (ReplyReader.next_reply() takes a
        # known line for a whole reply before it looks at the line itself).
        key = (cls, last, garbage, truncated) if (
            len(lines) == 1 and len(last) <= 128 and _LAST_LINE.match(last)) else None
        reply = _recent.get(key)
        if reply is None:
            code = int(last[:3])
            reply = cls(code, enhanced_status(code, last), " ".join(lines), lines, garbage,
                        truncated)
            if key is not None:
                if len(_recent) >= _RECENT_MAX:
                    _recent.clear()
                _recent[key] = reply
        return reply

    @classmethod
    def make(cls, text):
        """A Reply from text such as "250 2.0.0 Ok" or "250-a\\n250 b" (tests, fakes)."""
        return cls.from_lines(text.split("\n"))

    @property
    def valid(self) -> bool:
        """False when the code is outside 2xx..5xx (security rule 8)."""
        return valid_code(self.code)

    @property
    def code_class(self) -> int:
        return self.code // 100

    @property
    def positive(self) -> bool:
        return 200 <= self.code <= 299

    def __str__(self):
        return self.text


_RECENT_MAX = 256          # short Replies kept for sharing (a dict cleared when full)
_recent: dict = {}


class ReplyReader:
    """Turns received bytes into Replies, incrementally and within bounds.

    ``push(data)`` buffers bytes; ``next_reply()`` returns the next complete
    Reply or None; ``feed(data)`` does both and returns every complete Reply.
    ``discard()`` drops everything buffered and any partly read reply (the
    STARTTLS rule: nothing received after the 220 is ever interpreted).

    Every complete line in the buffer is split and sanitised in one go (one
    translate, one decode, one split per read rather than per line); the
    lines wait in ``_ready`` until next_reply() takes them.  Sanitising keeps
    CR and LF so that lines can be split and one trailing CR removed
    afterwards; any other CR then becomes "?" like every other control.
    Translating and decoding keep the length, so a waiting line still tells
    how many bytes it came from.
    """

    def __init__(self, line_length_limit=DEFAULT_LINE_LENGTH_LIMIT,
                 max_lines=DEFAULT_MAX_LINES, max_stored=DEFAULT_MAX_STORED):
        if line_length_limit < 4 or max_lines < 1:
            raise ValueError("line_length_limit must be >= 4 and max_lines >= 1")
        self.line_length_limit = line_length_limit
        self.max_lines = max_lines
        self.max_stored = max_stored
        self._buf = bytearray()
        self._ready = []            # complete lines, sanitised but for CR, not yet taken
        self._ready_at = 0
        self._reset_line()
        self._reset_reply()

    def _reset_line(self):
        self._partial = bytearray()     # the start of a line whose LF has not come yet
        self._skipping = False          # that line is past the limit: drop up to its LF

    def _reset_reply(self):
        self._lines = []
        self._stored = 0
        self._garbage = False
        self._truncated = False

    # --- input -----------------------------------------------------------------
    def push(self, data):
        self._buf += data

    def feed(self, data):
        self.push(data)
        replies = []
        while (reply := self.next_reply()) is not None:
            replies.append(reply)
        return replies

    @property
    def buffered(self) -> int:
        """Bytes held: unread input plus the partial line."""
        waiting = sum(len(line) + 1 for line in self._ready[self._ready_at:])
        return waiting + len(self._buf) + len(self._partial)

    @property
    def in_reply(self) -> bool:
        """True while part of a reply (or garbage) has been read."""
        return bool(self._lines or self._partial or self._skipping or self._garbage)

    def discard(self):
        """Forget all buffered input and any partial reply; return how many bytes went."""
        dropped = self.buffered
        self._buf = bytearray()
        self._ready, self._ready_at = [], 0
        self._reset_line()
        self._reset_reply()
        return dropped

    # --- parsing -----------------------------------------------------------------
    def next_reply(self):
        """The next complete Reply, or None when more input is needed."""
        ready, at = self._ready, self._ready_at
        if at == len(ready) and not self._buf:
            return None                 # the usual answer while waiting for a reply
        limit = self.line_length_limit
        while True:
            if at == len(ready):
                if not self._split():
                    self._ready, self._ready_at = [], 0
                    return None
                ready, at = self._ready, 0
            line = ready[at]
            at += 1
            if line[-1:] == "\r":
                line = line[:-1]
            if "\r" in line:
                line = line.replace("\r", "?")
            if len(line) > limit:
                line = line[:limit]
                self._truncated = True
            if not (self._lines or self._garbage or self._truncated):
                # the usual case: a one-line reply the server sent before (from_lines())
                reply = _recent.get((Reply, line, False, False))
                if reply is not None:
                    self._ready_at = at
                    return reply
            if _LAST_LINE.match(line):
                lines = self._lines
                lines.append(line)
                reply = Reply.from_lines(lines, self._garbage, self._truncated)
                self._reset_reply()
                self._ready_at = at
                return reply
            if not _CONTINUATION_LINE.match(line):
                self._garbage = True
            # Keep one slot for the final line, which is always stored.
            if (len(self._lines) < self.max_lines - 1
                    and self._stored + len(line) <= self.max_stored):
                self._lines.append(line)
                self._stored += len(line)
            else:
                self._truncated = True

    def _split(self):
        """Move the complete lines of the buffer to ``_ready``; False when there are none.

        A line whose start came in an earlier read is put together from
        ``_partial`` first, within the length limit.
        """
        buf, limit = self._buf, self.line_length_limit
        last = buf.rfind(b"\n")
        if last < 0:
            if buf and not self._skipping:
                self._partial += buf
                # One byte of slack for a CR that may precede the coming LF.
                if len(self._partial) > limit + 1:
                    del self._partial[limit:]
                    self._skipping = True
                    self._truncated = True
            buf.clear()
            return False
        start = 0
        first = None
        if self._partial or self._skipping:
            start = buf.find(b"\n") + 1
            if self._skipping:
                first = self._partial           # already cut at the limit, CR kept
            else:
                first = self._partial + buf[:start - 1]
                if first.endswith(b"\r"):
                    del first[-1]
            self._reset_line()
        lines = buf[start:last].translate(_PRINTABLE_CRLF).decode("ascii").split("\n") \
            if start <= last else []
        del buf[:last + 1]
        if first is not None:
            if len(first) > limit:
                del first[limit:]
                self._truncated = True
            # Sanitised in full here, so no CR is left for next_reply() to strip.
            lines.insert(0, first.translate(_PRINTABLE).decode("ascii"))
        self._ready = lines
        return True
