# cython: language_level=3, binding=True
"""DATA encoder, compiled: the hot path of every message postclient sends.

Compiled by setup.py into postclient.codec._encode_c; selected by
postclient.codec unless POSTCLIENT_NO_EXTENSIONS=1.  It is a line-for-line
translation of postclient/codec/_encode_py.py, which is the readable
specification: read that first.  Both give identical bytes for every input
and every chunking (tests/unit/test_codec*.py prove it with hypothesis).

Exports: encode(content, **options) -> bytes, Encoder(**options) with
feed(chunk) -> bytes and finish() -> bytes.  MimeError, option checking and
the (rarely run) Content-Type / Content-Transfer-Encoding parsers are shared
with the twin through postclient.codec._common.

Parameters: smtp_line_length_limit (line_length_limit), mime_nesting_limit,
mime_boundary_length_limit; downgrade=True when
disable_mime_output_conversion = no and the server lacks 8BITMIME.

How it is fast: without downgrade, one pass over the input with memchr()
finding line ends (and bare CRs, searched for once per CR, not per line),
whole lines copied with memcpy() into one bytes object that starts at the
input's size and is grown and finally shrunk in place; no Python object per
line.  With downgrade, the MIME state machine runs per line in C and
quoted-printable is a table-driven C loop; Python objects appear only for
Content-Type headers and boundary lines.

Compatible with Cython 0.29.32 (Debian bookworm) and Cython 3.x: no typed
memoryviews, explicit "except -1" on every function that can raise and
"noexcept" (accepted since 0.29.31) on those that cannot.
"""

cimport cython
from libc.stdlib cimport free, realloc
from libc.string cimport memchr, memcmp, memcpy
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.object cimport PyObject

from postclient.codec import _common
from postclient.codec._common import (
    MimeError, check_options, parse_content_type, parse_transfer_encoding,
    record_size,
)

__all__ = ["encode", "Encoder", "MimeError"]


cdef extern from *:
    # Defined by every Cython-generated C file (0.29 and 3.x alike).
    unsigned long CYTHON_HEX_VERSION

# Which Cython generated this build: for `postclient check` and bench/.
_cython_version = "%d.%d.%d" % ((CYTHON_HEX_VERSION >> 24) & 0xff,
                                (CYTHON_HEX_VERSION >> 16) & 0xff,
                                (CYTHON_HEX_VERSION >> 8) & 0xff)


cdef extern from "Python.h":
    # Raw forms, so that the output bytes object can be grown and shrunk in
    # place with _PyBytes_Resize (which may move it).
    PyObject* bytes_new "PyBytes_FromStringAndSize"(const char *data,
                                                     Py_ssize_t size) except NULL
    int bytes_resize "_PyBytes_Resize"(PyObject **obj, Py_ssize_t size) except -1
    char* bytes_data "PyBytes_AS_STRING"(PyObject *obj)
    void xdecref "Py_XDECREF"(PyObject *obj)


cdef enum:
    CR = 13
    LF = 10
    SPACE = 32
    TAB = 9
    DOT = 46
    DASH = 45
    COLON = 58
    EQUALS = 61

# Codes shared with _common (checked below).
cdef enum:
    CTYPE_OTHER = 0
    CTYPE_TEXT = 1
    CTYPE_MESSAGE = 2
    CTYPE_MULTIPART = 3
    STYPE_OTHER = 0
    STYPE_PLAIN = 1
    STYPE_RFC822 = 2
    STYPE_GLOBAL = 5
    DOMAIN_7BIT = 7
    HEADER_NONE = 0
    HEADER_OTHER = 1
    HEADER_CONTENT_TYPE = 2
    HEADER_TRANSFER_ENCODING = 3

# What to do with the rest of the current line (same as the twin's).
cdef enum:
    M_PASS = 0
    M_ACCUMULATE = 1
    M_HOLD = 2
    M_DROP = 3
    M_QP = 4

# Header states and body.
cdef enum:
    S_PRIMARY = 0
    S_MULTIPART = 1
    S_NESTED = 2
    S_BODY = 3

cdef enum:
    OPEN = 0
    FINISHED = 1
    FAILED = 2

if ((_common.CTYPE_OTHER, _common.CTYPE_TEXT, _common.CTYPE_MESSAGE,
     _common.CTYPE_MULTIPART, _common.STYPE_OTHER, _common.STYPE_PLAIN,
     _common.STYPE_RFC822, _common.STYPE_GLOBAL, _common.DOMAIN_7BIT,
     _common.HEADER_NONE, _common.HEADER_OTHER, _common.HEADER_CONTENT_TYPE,
     _common.HEADER_TRANSFER_ENCODING)
        != (CTYPE_OTHER, CTYPE_TEXT, CTYPE_MESSAGE, CTYPE_MULTIPART, STYPE_OTHER,
            STYPE_PLAIN, STYPE_RFC822, STYPE_GLOBAL, DOMAIN_7BIT, HEADER_NONE,
            HEADER_OTHER, HEADER_CONTENT_TYPE, HEADER_TRANSFER_ENCODING)):
    raise ImportError("pyx/_encode_c.pyx is out of step with postclient.codec._common")

cdef Py_ssize_t HEADER_PARSE_LIMIT = _common.HEADER_PARSE_LIMIT

# Quoted-printable: bytes sent as they are (RFC 2045 rules 1 and 2).
cdef unsigned char QP_LITERAL[256]
cdef unsigned char HEX[16]
cdef int _byte
for _byte in range(256):
    QP_LITERAL[_byte] = (32 <= _byte <= 126 and _byte != EQUALS) or _byte == TAB
for _byte in range(16):
    HEX[_byte] = b"0123456789ABCDEF"[_byte]


# -- a growable C buffer (held line, header text) ---------------------------

cdef struct Buf:
    char *data
    Py_ssize_t length
    Py_ssize_t capacity


cdef int buf_append(Buf *buf, const void *data, Py_ssize_t length) except -1:
    cdef Py_ssize_t need = buf.length + length
    cdef Py_ssize_t capacity
    cdef char *grown
    if length <= 0:
        return 0
    if need > buf.capacity:
        capacity = buf.capacity * 2
        if capacity < need:
            capacity = need
        if capacity < 256:
            capacity = 256
        grown = <char *>realloc(buf.data, capacity)
        if grown == NULL:
            raise MemoryError()
        buf.data = grown
        buf.capacity = capacity
    memcpy(buf.data + buf.length, data, length)
    buf.length = need
    return 0


cdef inline const unsigned char *find(const unsigned char *start,
                                      const unsigned char *end,
                                      int byte) noexcept:
    """First `byte` in [start, end), or end."""
    cdef const void *found = memchr(start, byte, end - start)
    if found == NULL:
        return end
    return <const unsigned char *>found


cdef Py_ssize_t header_name_length(const unsigned char *data,
                                   Py_ssize_t length) noexcept:
    """Length of "Name:" (with optional SP/TAB before the colon) or 0."""
    cdef Py_ssize_t i = 0
    while i < length and 33 <= data[i] <= 126 and data[i] != COLON:
        i += 1
    if i == 0:
        return 0
    while i < length and (data[i] == SPACE or data[i] == TAB):
        i += 1
    if i < length and data[i] == COLON:
        return i + 1
    return 0


cdef bint same_name(const unsigned char *data, Py_ssize_t length,
                    const char *lower, Py_ssize_t lower_length) noexcept:
    """ASCII case-insensitive comparison with a lower-case word."""
    cdef Py_ssize_t i
    cdef unsigned char c
    if length != lower_length:
        return False
    for i in range(length):
        c = data[i]
        if 65 <= c <= 90:
            c += 32
        if c != <unsigned char>lower[i]:
            return False
    return True


cdef int header_kind(const unsigned char *data, Py_ssize_t length) noexcept:
    cdef Py_ssize_t i = 0
    while i < length and data[i] != SPACE and data[i] != TAB and data[i] != COLON:
        i += 1
    if same_name(data, i, b"content-type", 12):
        return HEADER_CONTENT_TYPE
    if same_name(data, i, b"content-transfer-encoding", 25):
        return HEADER_TRANSFER_ENCODING
    return HEADER_OTHER


@cython.final
cdef class Encoder:
    """Streaming DATA encoder: feed(chunk) -> bytes, then finish() -> bytes.

    Same behaviour as postclient.codec._encode_py.Encoder.
    """

    # options
    cdef Py_ssize_t limit
    cdef bint downgrade
    cdef Py_ssize_t nesting_limit
    cdef Py_ssize_t boundary_limit
    cdef Py_ssize_t record_size
    cdef int status
    cdef object mime_error      # text of the MimeError that stopped us
    # stage 2 (wire)
    cdef Py_ssize_t column
    cdef bint pending_cr
    # output of the call in progress
    cdef PyObject *out_obj
    cdef char *out
    cdef Py_ssize_t out_length
    cdef Py_ssize_t out_capacity
    # stage 1a (records)
    cdef Buf hold
    cdef bint started
    # stage 1b (MIME)
    cdef int state
    cdef int ctype
    cdef int stype
    cdef int domain
    cdef int header
    cdef int mode
    cdef list stack
    cdef Buf text
    cdef unsigned char qp[80]
    cdef Py_ssize_t qp_length

    def __init__(self, *, line_length_limit=990, downgrade=False,
                 mime_nesting_limit=100, mime_boundary_length_limit=2048):
        limit, downgrade, nesting, boundary = check_options(
            line_length_limit, downgrade, mime_nesting_limit,
            mime_boundary_length_limit)
        self.limit = limit
        self.downgrade = downgrade
        self.nesting_limit = nesting
        self.boundary_limit = boundary
        self.record_size = record_size(boundary)
        self.status = OPEN
        self.mime_error = None
        self.column = 0
        self.pending_cr = False
        self.hold.length = 0
        self.started = False
        self.state = S_PRIMARY
        self.ctype = CTYPE_TEXT
        self.stype = STYPE_PLAIN
        self.domain = DOMAIN_7BIT
        self.header = HEADER_NONE
        self.mode = M_PASS
        self.stack = []
        self.text.length = 0
        self.qp_length = 0

    def __dealloc__(self):
        free(self.hold.data)
        free(self.text.data)
        xdecref(self.out_obj)

    def feed(self, chunk):
        """Encode one more piece of content; returns what can be sent now."""
        cdef Py_buffer view
        self.check_open()
        PyObject_GetBuffer(chunk, &view, PyBUF_SIMPLE)
        try:
            return self.run(<const unsigned char *>view.buf, view.len, False)
        finally:
            PyBuffer_Release(&view)

    def finish(self):
        """Flush the last line and return the rest, ending with ".<CR><LF>"."""
        self.check_open()
        return self.run(NULL, 0, True)

    # -- calls -----------------------------------------------------------

    cdef int check_open(self) except -1:
        if self.status == OPEN:
            return 0
        if self.status == FINISHED:
            raise RuntimeError("Encoder is finished")
        if self.mime_error is not None:
            raise MimeError(self.mime_error)
        raise RuntimeError("Encoder failed earlier")

    cdef object run(self, const unsigned char *data, Py_ssize_t length,
                    bint final):
        self.out_begin(length + 64)
        try:
            if self.downgrade:
                self.records(data, length)
                if final:
                    self.records_finish()
                    self.mime_finish()
            else:
                self.raw(data, length)
            if final:
                self.wire_finish()
        except BaseException as error:
            self.out_abort()
            self.status = FAILED
            if isinstance(error, MimeError):
                self.mime_error = error.text
            raise
        if final:
            self.status = FINISHED
        return self.out_end()

    # -- output buffer ----------------------------------------------------

    cdef int out_begin(self, Py_ssize_t capacity) except -1:
        if capacity < 64:
            capacity = 64
        self.out_obj = bytes_new(NULL, capacity)
        self.out = bytes_data(self.out_obj)
        self.out_length = 0
        self.out_capacity = capacity
        return 0

    cdef int out_grow(self, Py_ssize_t more) except -1:
        cdef Py_ssize_t capacity = self.out_capacity + (self.out_capacity >> 2) + 64
        if capacity < self.out_length + more:
            capacity = self.out_length + more
        bytes_resize(&self.out_obj, capacity)
        self.out = bytes_data(self.out_obj)
        self.out_capacity = capacity
        return 0

    cdef inline int reserve(self, Py_ssize_t more) except -1:
        if self.out_length + more > self.out_capacity:
            return self.out_grow(more)
        return 0

    cdef object out_end(self):
        bytes_resize(&self.out_obj, self.out_length)
        result = <object>self.out_obj
        xdecref(self.out_obj)
        self.out_obj = NULL
        self.out = NULL
        return result

    cdef void out_abort(self) noexcept:
        xdecref(self.out_obj)
        self.out_obj = NULL
        self.out = NULL

    # -- stage 2: the wire --------------------------------------------------

    cdef int wire_plain(self, const unsigned char *data,
                        Py_ssize_t length) except -1:
        """Append content without CR or LF to the current line."""
        cdef Py_ssize_t take
        cdef char *o
        if length <= 0:
            return 0
        if self.limit == 0 or self.column + length <= self.limit:
            self.reserve(length + 1)
            o = self.out + self.out_length
            if self.column == 0 and data[0] == DOT:
                o[0] = DOT
                o += 1
            memcpy(o, data, length)
            self.out_length = (o - self.out) + length
            self.column += length
            return 0
        while length > 0:
            self.reserve((length if length < self.limit else self.limit) + 4)
            o = self.out + self.out_length
            if self.column == 0 and data[0] == DOT:
                o[0] = DOT
                o += 1
            if self.column >= self.limit:
                o[0] = CR
                o[1] = LF
                o[2] = SPACE
                o += 3
                self.column = 1
            take = self.limit - self.column
            if take > length:
                take = length
            memcpy(o, data, take)
            self.out_length = (o - self.out) + take
            self.column += take
            data += take
            length -= take
        return 0

    cdef int wire_text(self, const unsigned char *data,
                       Py_ssize_t length) except -1:
        """Append content without LF; every CR in it is bare: a SPACE."""
        cdef const unsigned char *end = data + length
        cdef const unsigned char *cr
        cdef unsigned char space = SPACE
        while data < end:
            cr = find(data, end, CR)
            self.wire_plain(data, cr - data)
            if cr == end:
                break
            self.wire_plain(&space, 1)
            data = cr + 1
        return 0

    cdef int wire_eol(self) except -1:
        self.reserve(2)
        self.out[self.out_length] = CR
        self.out[self.out_length + 1] = LF
        self.out_length += 2
        self.column = 0
        return 0

    cdef int raw(self, const unsigned char *data, Py_ssize_t length) except -1:
        """Stage 2 straight from stored content (no downgrade)."""
        cdef const unsigned char *p = data
        cdef const unsigned char *end = data + length
        cdef const unsigned char *newline
        cdef const unsigned char *stop
        cdef const unsigned char *cr
        cdef Py_ssize_t n
        cdef Py_ssize_t limit = self.limit
        cdef char *o
        cdef char *room_end
        cdef unsigned char space = SPACE
        if length <= 0:
            return 0
        if self.pending_cr:
            self.pending_cr = False
            if p[0] == LF:
                self.wire_eol()
                p += 1
            else:
                self.wire_plain(&space, 1)
        cr = find(p, end, CR)              # next CR: searched once per CR
        while p < end:
            if self.column == 0:
                # The common case, kept in registers: whole lines without a
                # bare CR that need no folding, copied with memcpy.
                o = self.out + self.out_length
                room_end = self.out + self.out_capacity
                while True:
                    newline = <const unsigned char *>memchr(p, LF, end - p)
                    if newline == NULL:
                        break
                    stop = newline
                    if stop > p and (stop - 1)[0] == CR:
                        stop -= 1
                    n = stop - p
                    if cr < stop or (limit and n > limit) or n + 3 > room_end - o:
                        break
                    if n > 0 and p[0] == DOT:
                        o[0] = DOT
                        o += 1
                    memcpy(o, p, n)
                    o += n
                    o[0] = CR
                    o[1] = LF
                    o += 2
                    p = newline + 1
                    if cr < p:
                        cr = find(p, end, CR)
                self.out_length = o - self.out
                if p >= end:
                    break
            # Anything else, one line (or the unfinished tail) at a time.
            newline = <const unsigned char *>memchr(p, LF, end - p)
            if newline == NULL:
                stop = end
                if (end - 1)[0] == CR:
                    stop = end - 1
                    self.pending_cr = True
            else:
                stop = newline
                if stop > p and (stop - 1)[0] == CR:
                    stop -= 1
            while cr < stop:                      # bare CRs in this line
                self.wire_plain(p, cr - p)
                self.wire_plain(&space, 1)
                p = cr + 1
                cr = find(p, end, CR)
            self.wire_plain(p, stop - p)
            if newline == NULL:
                break
            self.wire_eol()
            p = newline + 1
            if cr < p:
                cr = find(p, end, CR)
        return 0

    cdef int wire_finish(self) except -1:
        cdef unsigned char space = SPACE
        if self.pending_cr:
            self.pending_cr = False
            self.wire_plain(&space, 1)
        if self.column:
            self.wire_eol()
        self.reserve(3)
        memcpy(self.out + self.out_length, b".\r\n", 3)
        self.out_length += 3
        return 0

    # -- stage 1a: lines and pieces of long lines ---------------------------

    cdef int records(self, const unsigned char *data, Py_ssize_t length) except -1:
        cdef const unsigned char *p = data
        cdef const unsigned char *end = data + length
        cdef const unsigned char *newline
        cdef const unsigned char *stop
        while p < end:
            newline = <const unsigned char *>memchr(p, LF, end - p)
            if newline == NULL:
                self.hold_tail(p, end - p, False)
                break
            if self.hold.length == 0:
                stop = newline
                if stop > p and (stop - 1)[0] == CR:
                    stop -= 1
                self.line_records(p, stop - p)
            else:
                self.hold_tail(p, newline - p, True)
            p = newline + 1
        return 0

    cdef int hold_tail(self, const unsigned char *data, Py_ssize_t length,
                       bint line_ends) except -1:
        """Add bytes of the current line; send the pieces that are certain.

        A piece of record_size bytes is certain once one more content byte is
        known: a byte that is not CR, or a CR followed by more of the line.
        """
        cdef Py_ssize_t size = self.record_size
        cdef Py_ssize_t take, n
        cdef char last_byte
        while True:
            if self.hold.length == size + 1:
                last_byte = self.hold.data[size]
                if last_byte != CR or length > 0:
                    self.record(<const unsigned char *>self.hold.data, size,
                                not self.started, False)
                    self.started = True
                    self.hold.data[0] = last_byte
                    self.hold.length = 1
                    continue
                break
            if length == 0:
                break
            take = size + 1 - self.hold.length
            if take > length:
                take = length
            buf_append(&self.hold, data, take)
            data += take
            length -= take
        if line_ends:
            n = self.hold.length
            if n and self.hold.data[n - 1] == CR:
                n -= 1
            self.line_records(<const unsigned char *>self.hold.data, n)
            self.hold.length = 0
        return 0

    cdef int line_records(self, const unsigned char *data,
                          Py_ssize_t length) except -1:
        """The rest of a line, in pieces; the last piece ends the line."""
        cdef Py_ssize_t size = self.record_size
        cdef Py_ssize_t start = 0
        cdef bint last
        while True:
            last = start + size >= length
            self.record(data + start, (length - start) if last else size,
                        not self.started, last)
            self.started = not last
            if last:
                return 0
            start += size

    cdef int records_finish(self) except -1:
        if self.hold.length:
            self.line_records(<const unsigned char *>self.hold.data,
                              self.hold.length)
            self.hold.length = 0
        return 0

    # -- stage 1b: the MIME state machine -----------------------------------

    cdef int record(self, const unsigned char *data, Py_ssize_t length,
                    bint first, bint last) except -1:
        cdef int mode
        if first:
            self.start_line(data, length)
        mode = self.mode
        if mode == M_HOLD:
            buf_append(&self.text, data, length)
            if self.text.length >= HEADER_PARSE_LIMIT:
                self.decide_transfer_encoding(False)
                if last and self.mode == M_PASS:
                    self.wire_eol()
            return 0
        if mode == M_ACCUMULATE:
            self.accumulate(data, length)
        if mode == M_QP:
            self.qp_content(data, length)
            if last:
                self.qp_end_line()
        elif mode != M_DROP:
            self.wire_text(data, length)
            if last:
                self.wire_eol()
        return 0

    cdef int start_line(self, const unsigned char *data,
                        Py_ssize_t length) except -1:
        cdef Py_ssize_t name_length
        if self.state != S_BODY:
            if self.header != HEADER_NONE and length > 0 and (
                    data[0] == SPACE or data[0] == TAB):
                if self.mode == M_ACCUMULATE:
                    self.accumulate(<const unsigned char *>b"\n", 1)
                elif self.mode == M_HOLD:
                    buf_append(&self.text, b"\n", 1)
                return 0
            self.end_header()
            name_length = header_name_length(data, length)
            if name_length:
                self.begin_header(data, name_length)
                return 0
            self.end_headers(length == 0)
        if (self.stack and length > 2 and data[0] == DASH and data[1] == DASH
                and self.boundary(data, length)):
            self.mode = M_PASS
        elif self.domain != DOMAIN_7BIT:
            self.mode = M_QP
        else:
            self.mode = M_PASS
        return 0

    cdef int mime_finish(self) except -1:
        self.end_header()
        if self.state != S_BODY and self.domain != DOMAIN_7BIT:
            self.write_transfer_encoding()
        return 0

    cdef int begin_header(self, const unsigned char *data,
                          Py_ssize_t name_length) except -1:
        self.header = header_kind(data, name_length)
        self.text.length = 0
        if self.header == HEADER_CONTENT_TYPE:
            self.mode = M_ACCUMULATE
        elif self.header == HEADER_TRANSFER_ENCODING:
            self.mode = M_HOLD
        else:
            self.mode = M_PASS
        return 0

    cdef int accumulate(self, const unsigned char *data,
                        Py_ssize_t length) except -1:
        cdef Py_ssize_t room = HEADER_PARSE_LIMIT - self.text.length
        if room > 0:
            buf_append(&self.text, data, length if length < room else room)
        return 0

    cdef int end_header(self) except -1:
        if self.header == HEADER_CONTENT_TYPE:
            self.content_type(self.text.data[:self.text.length])
        elif self.header == HEADER_TRANSFER_ENCODING and self.mode == M_HOLD:
            self.decide_transfer_encoding(True)
        self.header = HEADER_NONE
        self.text.length = 0
        return 0

    cdef int content_type(self, bytes text) except -1:
        ctype, stype, part_ctype, part_stype, boundaries = parse_content_type(
            text, self.boundary_limit)
        self.ctype = ctype
        self.stype = stype
        for boundary in boundaries:
            if len(self.stack) >= self.nesting_limit:
                raise MimeError()
            self.stack.append((boundary, part_ctype, part_stype))
        return 0

    cdef int decide_transfer_encoding(self, bint complete) except -1:
        cdef Py_ssize_t length = self.text.length
        cdef const unsigned char *p
        cdef const unsigned char *end
        cdef const unsigned char *newline
        if length > HEADER_PARSE_LIMIT:
            length = HEADER_PARSE_LIMIT
        domain = parse_transfer_encoding(self.text.data[:length])
        if domain is not None:
            self.domain = domain
        if self.domain != DOMAIN_7BIT:
            self.mode = M_DROP
        else:
            self.mode = M_PASS
            p = <const unsigned char *>self.text.data
            end = p + self.text.length
            while True:
                newline = find(p, end, LF)
                self.wire_text(p, newline - p)
                if newline == end:
                    break
                self.wire_eol()
                p = newline + 1
            if complete:
                self.wire_eol()
        self.text.length = 0
        return 0

    cdef bint is_leaf(self) noexcept:
        return not (self.ctype == CTYPE_MULTIPART
                    or (self.ctype == CTYPE_MESSAGE and self.stype != STYPE_GLOBAL))

    cdef int write_transfer_encoding(self) except -1:
        if self.is_leaf():
            self.wire_plain(<const unsigned char *>b"Content-Transfer-Encoding: quoted-printable", 43)
        else:
            self.wire_plain(<const unsigned char *>b"Content-Transfer-Encoding: 7bit", 31)
        return self.wire_eol()

    cdef int end_headers(self, bint blank) except -1:
        if self.domain != DOMAIN_7BIT:
            self.write_transfer_encoding()
        if not blank and self.state == S_PRIMARY:
            self.wire_eol()
        if blank and self.ctype == CTYPE_MESSAGE and (
                self.stype == STYPE_RFC822
                or (self.stype == STYPE_GLOBAL and self.domain == DOMAIN_7BIT)):
            self.state = S_NESTED
            self.ctype = CTYPE_TEXT
            self.stype = STYPE_PLAIN
            self.domain = DOMAIN_7BIT
        elif blank and self.ctype == CTYPE_MULTIPART:
            self.state = S_BODY
            self.ctype = CTYPE_OTHER
            self.stype = STYPE_OTHER
            self.domain = DOMAIN_7BIT
        else:
            self.state = S_BODY
            if not self.is_leaf():
                self.domain = DOMAIN_7BIT
        return 0

    cdef int boundary(self, const unsigned char *data,
                      Py_ssize_t length) except -1:
        """1 if data is "--" plus an open boundary (state switched), else 0."""
        cdef Py_ssize_t depth, size
        cdef bytes boundary
        cdef tuple entry
        for depth in range(len(self.stack) - 1, -1, -1):
            entry = self.stack[depth]
            boundary = entry[0]
            size = len(boundary)
            if length >= 2 + size and memcmp(data + 2, <const char *>boundary,
                                             size) == 0:
                del self.stack[depth + 1:]
                if length >= 4 + size and data[2 + size] == DASH \
                        and data[3 + size] == DASH:
                    del self.stack[depth]
                    self.state = S_BODY
                    self.ctype = CTYPE_OTHER
                    self.stype = STYPE_OTHER
                else:
                    self.state = S_MULTIPART
                    self.ctype = entry[1]
                    self.stype = entry[2]
                self.domain = DOMAIN_7BIT
                return 1
        return 0

    cdef int qp_content(self, const unsigned char *data,
                        Py_ssize_t length) except -1:
        cdef Py_ssize_t i
        cdef Py_ssize_t n = self.qp_length
        cdef unsigned char c
        cdef unsigned char *q = self.qp
        for i in range(length):
            if n > 72:                          # soft line break: lines <= 76
                q[n] = EQUALS
                self.wire_plain(q, n + 1)
                self.wire_eol()
                n = 0
            c = data[i]
            if QP_LITERAL[c]:
                q[n] = c
                n += 1
            else:
                q[n] = EQUALS
                q[n + 1] = HEX[c >> 4]
                q[n + 2] = HEX[c & 15]
                n += 3
        self.qp_length = n
        return 0

    cdef int qp_end_line(self) except -1:
        cdef Py_ssize_t n = self.qp_length
        cdef unsigned char c
        if n and (self.qp[n - 1] == SPACE or self.qp[n - 1] == TAB):
            c = self.qp[n - 1]
            self.qp[n - 1] = EQUALS
            self.qp[n] = HEX[c >> 4]
            self.qp[n + 1] = HEX[c & 15]
            n += 2
        self.qp_length = 0
        self.wire_plain(self.qp, n)
        return self.wire_eol()


def encode(content, *, line_length_limit=990, downgrade=False,
           mime_nesting_limit=100, mime_boundary_length_limit=2048):
    """Everything sent after 354, up to and including ".<CR><LF>"."""
    cdef Encoder encoder = Encoder(
        line_length_limit=line_length_limit, downgrade=downgrade,
        mime_nesting_limit=mime_nesting_limit,
        mime_boundary_length_limit=mime_boundary_length_limit)
    cdef Py_buffer view
    PyObject_GetBuffer(content, &view, PyBUF_SIMPLE)
    try:
        return encoder.run(<const unsigned char *>view.buf, view.len, True)
    finally:
        PyBuffer_Release(&view)
