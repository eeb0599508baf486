# cython: language_level=3, binding=True
"""Queue file records, cut from a buffer in C: the fast path of queuefile.records().

Compiled by setup.py into postclient.queue._records_c; used by
postclient.queue.queuefile unless POSTCLIENT_NO_EXTENSIONS=1.  It has no
twin of its own: it takes only the records that are plainly sound and
wholly inside the buffer, and stops at the first one that is not, where
records() goes on in Python with the same rules - reading more of the file,
or raising CorruptQueueFile with the offset and the reason.  So what it
returns is exactly what records() would yield for those records, and every
error is still found and worded by the Python code (tests/unit/
test_queue_file.py runs the corruption tests with and without it).

Why: a queue file is parsed twice per delivery (the queue manager's loader,
the delivery agent), and cutting its eight or so records with a regex and a
generator in Python took about 60 K instructions of the 100 K of a parse.

Exports scan(data, start, position, size, limit, with_content) ->
(records, position): ``data`` holds the file's bytes from offset ``start``;
records are cut from ``position`` on, as (type, payload or None, payload
offset, next position) tuples, up to and including the end record ("E"),
and ``position`` is where the scan stopped (after the end record, or at the
first record it left to the caller).  ``size`` is the file's size and
``limit`` the longest envelope record allowed; the content ("M") payload is
None unless ``with_content``.

Compatible with Cython 0.29.32 (Debian bookworm) and Cython 3.x.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize

cdef long long _MAX_HEAD = 16  # type byte, 1 to 13 digits and the colon (queuefile._MAX_HEAD)
_KINDS = [bytes([code]) for code in range(256)]


def scan(bytes data, long long start, long long position, long long size,
         long long limit, bint with_content):
    cdef const unsigned char *buffer = <const unsigned char *>PyBytes_AS_STRING(data)
    cdef long long loaded = start + PyBytes_GET_SIZE(data)
    cdef long long length, payload_offset, end
    cdef Py_ssize_t at, digits
    cdef unsigned char kind
    found = []
    while True:
        if position + _MAX_HEAD > loaded and loaded < size:
            break                   # the head may go on past the buffer
        if position < start or position >= loaded:
            break
        at = <Py_ssize_t>(position - start)
        kind = buffer[at]
        at += 1
        digits = 0
        length = 0
        while at < loaded - start and digits < 14 and 48 <= buffer[at] <= 57:
            length = length * 10 + (buffer[at] - 48)
            at += 1
            digits += 1
        if digits < 1 or digits > 13 or at >= loaded - start or buffer[at] != 58:   # 58: ":"
            break
        payload_offset = start + at + 1
        end = payload_offset + length
        if end >= size or end >= loaded or (kind != 77 and length > limit):         # 77: "M"
            break
        if buffer[end - start] != 10:                                                # 10: "\n"
            break
        if kind != 77 or with_content:
            payload = PyBytes_FromStringAndSize(
                <const char *>buffer + (payload_offset - start), <Py_ssize_t>length)
        else:
            payload = None
        position = end + 1
        found.append((_KINDS[kind], payload, payload_offset, position))
        if kind == 69:              # 69: "E", the end record
            break
    return found, position
