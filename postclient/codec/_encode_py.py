"""DATA encoder in pure Python: the readable specification of pyx/_encode_c.pyx.

Turns stored message content into the bytes the SMTP client sends after the
server's 354 reply, up to and including the final ".<CR><LF>".  The compiled
module has the same names and signatures and must give the same bytes for
every input and every way of cutting it into chunks; the differential tests
check that against this file.

Exports: encode(content, **options) -> bytes, Encoder(**options) with
feed(chunk) -> bytes and finish() -> bytes, MimeError.

Options and the Postfix parameters they carry:
  line_length_limit          smtp_line_length_limit (0 = never fold)
  downgrade                  8BITMIME -> 7BIT conversion; the caller passes
                             True when disable_mime_output_conversion = no,
                             the server has no 8BITMIME and the message is
                             not declared 7bit
  mime_nesting_limit         mime_nesting_limit
  mime_boundary_length_limit mime_boundary_length_limit

Theory of operation.  Two stages, each a small state machine that never needs
more than the current line (or a bounded piece of it):

  1. Only with downgrade: _Records cuts the input into lines (LF or CRLF
     ends a line) and cuts long lines into pieces of record_size() bytes;
     _Mime runs Postfix's one-pass MIME state machine over those pieces and
     writes the converted lines to stage 2.
  2. _Wire writes lines to the wire: CRLF after every line, a bare CR
     (one not followed by LF) becomes a SPACE, a line longer than the limit
     is folded (L bytes, then SPACE + up to L-1 bytes per continuation line),
     an output line that starts with "." gets one more ".".  Folding is
     decided lazily, when the byte after the L-th arrives, so no lookahead
     and no buffering is needed.
"""

from postclient.codec._common import (
    CTYPE_MESSAGE, CTYPE_MULTIPART, CTYPE_OTHER, CTYPE_TEXT, DOMAIN_7BIT,
    HEADER_CONTENT_TYPE, HEADER_NONE, HEADER_PARSE_LIMIT,
    HEADER_TRANSFER_ENCODING, STYPE_GLOBAL, STYPE_OTHER, STYPE_PLAIN,
    STYPE_RFC822, MimeError, check_options, header_kind, parse_content_type,
    parse_transfer_encoding, record_size,
)

__all__ = ["encode", "Encoder", "MimeError"]

CR, LF, SPACE, TAB, DOT, COLON = 13, 10, 32, 9, 46, 58


class _Wire:
    """Stage 2: CRLF, no bare CR, folding, dot-stuffing; collects the output."""

    def __init__(self, limit):
        self.limit = limit
        self.column = 0          # content bytes on the current output line
        self.pending_cr = False  # raw input ended in a CR: CRLF or bare CR?
        self.out = []

    def take(self):
        """The output collected since the previous take()."""
        data = b"".join(self.out)
        self.out.clear()
        return data

    def content(self, data):
        """Append bytes to the current line; data has no LF, any CR is bare."""
        if not data:
            return
        data = data.replace(b"\r", b" ")
        out, limit = self.out, self.limit
        start, end = 0, len(data)
        while start < end:
            if self.column == 0 and data[start] == DOT:
                out.append(b".")
            if limit:
                if self.column >= limit:
                    out.append(b"\r\n ")
                    self.column = 1
                stop = min(end, start + limit - self.column)
            else:
                stop = end
            out.append(data[start:stop])
            self.column += stop - start
            start = stop

    def end_line(self):
        self.out.append(b"\r\n")
        self.column = 0

    def line(self, data):
        self.content(data)
        self.end_line()

    def raw(self, data):
        """Stage 2 straight from stored content (no downgrade)."""
        if self.pending_cr:
            data = b"\r" + data
            self.pending_cr = False
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                break
            end = newline
            if end > start and data[end - 1] == CR:
                end -= 1
            self.line(data[start:end])
            start = newline + 1
        if data.endswith(b"\r") and start < len(data):
            self.pending_cr = True
            data = data[:-1]
        self.content(data[start:])

    def finish(self):
        if self.pending_cr:
            self.pending_cr = False
            self.content(b"\r")
        if self.column:
            self.end_line()
        self.out.append(b".\r\n")


class _Records:
    """Stage 1a: lines, and pieces of at most `size` bytes of long lines.

    sink(piece, first, last) is called for each piece: first means the piece
    starts a line, last that it ends one.  The pieces are a function of the
    line alone, never of how the input was chunked.
    """

    def __init__(self, size, sink):
        self.size = size
        self.sink = sink
        self.hold = bytearray()   # unsent part of the current line
        self.started = False      # a piece of the current line was sent

    def feed(self, data):
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                break
            self.hold += data[start:newline]
            start = newline + 1
            line = bytes(self.hold)
            self.hold.clear()
            if line.endswith(b"\r"):
                line = line[:-1]
            self._rest_of_line(line)
        self.hold += data[start:]
        # Send the pieces that are certain: more than `size` content bytes
        # are known (a trailing CR may still turn out to be half of a CRLF).
        size = self.size
        while len(self.hold) - self.hold.endswith(b"\r") > size:
            self.sink(bytes(self.hold[:size]), not self.started, False)
            self.started = True
            del self.hold[:size]

    def finish(self):
        if self.hold:
            line = bytes(self.hold)
            self.hold.clear()
            self._rest_of_line(line)

    def _rest_of_line(self, line):
        size = self.size
        for start in range(0, max(len(line), 1), size):
            last = start + size >= len(line)
            self.sink(line[start:start + size], not self.started, last)
            self.started = not last


# What to do with the rest of the current line.
_PASS, _ACCUMULATE, _HOLD, _DROP, _QP = range(5)

# Header states (primary, after a boundary, inside message/rfc822) and body.
_PRIMARY, _MULTIPART, _NESTED, _BODY = range(4)

# Quoted-printable form of every byte (RFC 2045 rule 1 and 2; Postfix's set).
_QP = [bytes([byte]) if (32 <= byte <= 126 and byte != 61) or byte == TAB
       else b"=%02X" % byte for byte in range(256)]

_CTE_QP = b"Content-Transfer-Encoding: quoted-printable"
_CTE_7BIT = b"Content-Transfer-Encoding: 7bit"


class _Mime:
    """Stage 1b: Postfix's MIME state machine with 8bit -> quoted-printable.

    Only an entity that declares Content-Transfer-Encoding 8bit or binary is
    converted.  Its CTE header is dropped where it stood, and a new one is
    written at the end of the entity's headers: quoted-printable for a leaf
    (whose body is then QP-encoded), 7bit for multipart/* and message/*
    (message/global, whose headers may be 8-bit, counts as a leaf, as in
    Postfix).  Everything else passes through unchanged.
    """

    def __init__(self, wire, nesting_limit, boundary_limit):
        self.wire = wire
        self.nesting_limit = nesting_limit
        self.boundary_limit = boundary_limit
        self.state = _PRIMARY
        self.ctype, self.stype, self.domain = CTYPE_TEXT, STYPE_PLAIN, DOMAIN_7BIT
        self.stack = []              # (boundary, part ctype, part stype), innermost last
        self.header = HEADER_NONE    # the header being read, if any
        self.text = bytearray()      # Content-Type text, or the held CTE header
        self.mode = _PASS            # what to do with the rest of the line
        self.qp = bytearray()        # quoted-printable line being built

    # -- one piece of a line ---------------------------------------------

    def record(self, data, first, last):
        if first:
            self._start_line(data)
        mode = self.mode
        if mode == _HOLD:
            self.text += data
            if len(self.text) >= HEADER_PARSE_LIMIT:
                self._decide_transfer_encoding(complete=False)
                if last and self.mode == _PASS:
                    self.wire.end_line()
            return
        if mode == _ACCUMULATE:
            self._accumulate(data)
        if mode == _QP:
            self._qp_content(data)
            if last:
                self._qp_end_line()
        elif mode != _DROP:
            self.wire.content(data)
            if last:
                self.wire.end_line()

    def _start_line(self, data):
        """Decide self.mode for a new line; handle header and boundary lines."""
        if self.state != _BODY:
            if self.header != HEADER_NONE and data[:1] in (b" ", b"\t"):
                if self.mode == _ACCUMULATE:
                    self._accumulate(b"\n")
                elif self.mode == _HOLD:
                    self.text += b"\n"
                return                   # a continuation line: same mode
            self._end_header()
            name_length = _header_name_length(data)
            if name_length:
                self._begin_header(data[:name_length])
                return
            self._end_headers(blank=not data)
        if self.stack and len(data) > 2 and data.startswith(b"--") \
                and self._boundary(data):
            self.mode = _PASS
        else:
            self.mode = _QP if self.domain != DOMAIN_7BIT else _PASS

    def finish(self):
        self._end_header()
        if self.state != _BODY and self.domain != DOMAIN_7BIT:
            self._write_transfer_encoding()

    # -- headers -------------------------------------------------------------

    def _begin_header(self, name):
        self.header = header_kind(name.rstrip(b" \t:"))
        self.text.clear()
        if self.header == HEADER_CONTENT_TYPE:
            self.mode = _ACCUMULATE
        elif self.header == HEADER_TRANSFER_ENCODING:
            self.mode = _HOLD
        else:
            self.mode = _PASS

    def _accumulate(self, data):
        room = HEADER_PARSE_LIMIT - len(self.text)
        if room > 0:
            self.text += data[:room]

    def _end_header(self):
        if self.header == HEADER_CONTENT_TYPE:
            self._content_type(bytes(self.text))
        elif self.header == HEADER_TRANSFER_ENCODING and self.mode == _HOLD:
            self._decide_transfer_encoding(complete=True)
        self.header = HEADER_NONE
        self.text.clear()

    def _content_type(self, text):
        ctype, stype, part_ctype, part_stype, boundaries = parse_content_type(
            text, self.boundary_limit)
        self.ctype, self.stype = ctype, stype
        for boundary in boundaries:
            if len(self.stack) >= self.nesting_limit:
                raise MimeError()
            self.stack.append((boundary, part_ctype, part_stype))

    def _decide_transfer_encoding(self, complete):
        """The held CTE header: drop it (it declares 8bit/binary) or send it.

        Called at the end of the header, or as soon as the parser has read
        HEADER_PARSE_LIMIT bytes of it (more would not change the decision).
        """
        held = self.text
        domain = parse_transfer_encoding(bytes(held[:HEADER_PARSE_LIMIT]))
        if domain is not None:
            self.domain = domain
        if self.domain != DOMAIN_7BIT:
            self.mode = _DROP
        else:
            self.mode = _PASS
            lines = bytes(held).split(b"\n")
            for line in lines[:-1]:
                self.wire.line(line)
            self.wire.content(lines[-1])
            if complete:
                self.wire.end_line()
        held.clear()

    def _is_leaf(self):
        return not (self.ctype == CTYPE_MULTIPART
                    or (self.ctype == CTYPE_MESSAGE and self.stype != STYPE_GLOBAL))

    def _write_transfer_encoding(self):
        self.wire.line(_CTE_QP if self._is_leaf() else _CTE_7BIT)

    def _end_headers(self, blank):
        """A blank line (or, if not blank, a line that is no header) ends them."""
        if self.domain != DOMAIN_7BIT:
            self._write_transfer_encoding()
        if not blank and self.state == _PRIMARY:
            self.wire.end_line()         # the missing header/body separator
        if blank and self.ctype == CTYPE_MESSAGE and (
                self.stype == STYPE_RFC822
                or (self.stype == STYPE_GLOBAL and self.domain == DOMAIN_7BIT)):
            self.state = _NESTED         # an attached message: its own headers
            self.ctype, self.stype, self.domain = CTYPE_TEXT, STYPE_PLAIN, DOMAIN_7BIT
        elif blank and self.ctype == CTYPE_MULTIPART:
            self.state = _BODY           # the preamble
            self.ctype, self.stype, self.domain = CTYPE_OTHER, STYPE_OTHER, DOMAIN_7BIT
        else:
            self.state = _BODY
            if not self._is_leaf():
                self.domain = DOMAIN_7BIT   # never QP-encode what is labelled 7bit

    # -- body ----------------------------------------------------------------

    def _boundary(self, data):
        """Does data start with "--" plus an open boundary?  Then switch state."""
        for depth in range(len(self.stack) - 1, -1, -1):
            boundary, part_ctype, part_stype = self.stack[depth]
            if data.startswith(boundary, 2):
                del self.stack[depth + 1:]
                if data.startswith(b"--", 2 + len(boundary)):
                    del self.stack[depth]    # close delimiter: the epilogue
                    self.state = _BODY
                    self.ctype, self.stype = CTYPE_OTHER, STYPE_OTHER
                else:
                    self.state = _MULTIPART
                    self.ctype, self.stype = part_ctype, part_stype
                self.domain = DOMAIN_7BIT
                return True
        return False

    def _qp_content(self, data):
        buffer = self.qp
        for byte in data:
            if len(buffer) > 72:             # soft line break: lines <= 76
                buffer += b"="
                self.wire.line(bytes(buffer))
                buffer.clear()
            buffer += _QP[byte]

    def _qp_end_line(self):
        buffer = self.qp
        if buffer and buffer[-1] in (SPACE, TAB):
            buffer[-1:] = b"=%02X" % buffer[-1]
        self.wire.line(bytes(buffer))
        buffer.clear()


def _header_name_length(line):
    """Length of "Name:" (with optional SP/TAB before the colon) or 0."""
    i, n = 0, len(line)
    while i < n and 33 <= line[i] <= 126 and line[i] != COLON:
        i += 1
    if i == 0:
        return 0
    while i < n and line[i] in (SPACE, TAB):
        i += 1
    return i + 1 if i < n and line[i] == COLON else 0


def _as_bytes(data):
    """Any C-contiguous bytes-like object as bytes (what the compiled one takes)."""
    if type(data) is bytes:
        return data
    with memoryview(data) as view:
        if not view.c_contiguous:
            raise BufferError("a C-contiguous buffer is required")
        return view.tobytes()


_OPEN, _FINISHED, _FAILED = range(3)


class Encoder:
    """Streaming DATA encoder: feed(chunk) -> bytes, then finish() -> bytes.

    The concatenated output equals encode() of the concatenated input,
    whatever the chunking.  Memory is bounded by the longest line (without
    downgrade, by nothing but the chunk).  After MimeError every further
    call raises MimeError again; after finish() every call raises
    RuntimeError.
    """

    def __init__(self, *, line_length_limit=990, downgrade=False,
                 mime_nesting_limit=100, mime_boundary_length_limit=2048):
        limit, downgrade, nesting, boundary = check_options(
            line_length_limit, downgrade, mime_nesting_limit,
            mime_boundary_length_limit)
        self._wire = _Wire(limit)
        self._mime = None
        self._records = None
        if downgrade:
            self._mime = _Mime(self._wire, nesting, boundary)
            self._records = _Records(record_size(boundary), self._mime.record)
        self._status = _OPEN
        self._mime_error = None     # text of the MimeError that stopped us

    def feed(self, chunk):
        """Encode one more piece of content; returns what can be sent now."""
        self._check_open()
        self._run(self._feed, _as_bytes(chunk))
        return self._wire.take()

    def finish(self):
        """Flush the last line and return the rest, ending with ".<CR><LF>"."""
        self._check_open()
        self._run(self._finish)
        self._status = _FINISHED
        return self._wire.take()

    def _feed(self, data):
        if self._records is None:
            self._wire.raw(data)
        else:
            self._records.feed(data)

    def _finish(self):
        if self._records is not None:
            self._records.finish()
            self._mime.finish()
        self._wire.finish()

    def _run(self, step, *args):
        try:
            step(*args)
        except BaseException as error:
            self._status = _FAILED
            if isinstance(error, MimeError):
                self._mime_error = error.text
            self._wire.out.clear()
            raise

    def _check_open(self):
        if self._status == _OPEN:
            return
        if self._status == _FINISHED:
            raise RuntimeError("Encoder is finished")
        if self._mime_error is not None:
            raise MimeError(self._mime_error)
        raise RuntimeError("Encoder failed earlier")


def encode(content, *, line_length_limit=990, downgrade=False,
           mime_nesting_limit=100, mime_boundary_length_limit=2048):
    """Everything sent after 354, up to and including ".<CR><LF>"."""
    encoder = Encoder(line_length_limit=line_length_limit, downgrade=downgrade,
                      mime_nesting_limit=mime_nesting_limit,
                      mime_boundary_length_limit=mime_boundary_length_limit)
    encoder._run(encoder._feed, _as_bytes(content))
    return encoder.finish()
