"""8BITMIME -> 7BIT downgrade: goldens, decoding by Python's email, limits, bad MIME.

Every test runs over both implementations (the `codec` fixture).  Expected
bytes are written by hand from the rules in docs/codec.md; the decoding
tests check the result with an independent parser (the standard library's
email package).
"""

import email
import email.policy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postclient.codec import _common, _encode_py

IMPLEMENTATIONS = {"python": _encode_py}
try:
    from postclient.codec import _encode_c
except ImportError:                    # test_codec.py's test_compiled_module_loaded fails
    pass
else:
    IMPLEMENTATIONS["cython"] = _encode_c


@pytest.fixture(params=["python", "cython"])
def codec(request):
    if request.param not in IMPLEMENTATIONS:
        pytest.skip("compiled codec not importable: see test_compiled_module_loaded")
    return IMPLEMENTATIONS[request.param]


def wire(text):
    """Hand-written expected output: LF-separated lines -> CRLF + final dot."""
    return text.replace(b"\n", b"\r\n") + b"\r\n.\r\n"


def downgrade(codec, content, **options):
    return codec.encode(content, downgrade=True, **options)


def downgrade_chunked(codec, content, size, **options):
    encoder = codec.Encoder(downgrade=True, **options)
    out = [encoder.feed(content[i:i + size]) for i in range(0, len(content), size)]
    out.append(encoder.finish())
    return b"".join(out)


# -- leaves ---------------------------------------------------------------------

def test_declared_8bit_leaf_becomes_quoted_printable(codec):
    content = (b"Subject: t\n"
               b"Content-Type: text/plain; charset=utf-8\n"
               b"Content-Transfer-Encoding: 8bit\n"
               b"\n"
               b"caf\xc3\xa9 = ok \n"
               b"tab\tinside and at end\t\n"
               b"\n"
               b"ctl \x00\x01\x1f\x7f \xff.\n")
    assert downgrade(codec, content) == wire(
        b"Subject: t\n"
        b"Content-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: quoted-printable\n"
        b"\n"
        b"caf=C3=A9 =3D ok=20\n"
        b"tab\tinside and at end=09\n"
        b"\n"
        b"ctl =00=01=1F=7F =FF.")


def test_binary_is_converted_like_8bit(codec):
    content = (b"Content-Transfer-Encoding: BINARY\n"
               b"\n"
               b"\xe9\r\n")
    assert downgrade(codec, content) == wire(
        b"Content-Transfer-Encoding: quoted-printable\n"
        b"\n"
        b"=E9")


def test_cte_header_position_and_case(codec):
    # The CTE header is dropped where it stands and the new one closes the headers.
    content = (b"content-transfer-encoding :  8Bit\n"
               b"Subject: after\n"
               b"\n"
               b"\xe9\n")
    assert downgrade(codec, content) == wire(
        b"Subject: after\n"
        b"Content-Transfer-Encoding: quoted-printable\n"
        b"\n"
        b"=E9")


def test_folded_cte_header_is_dropped_whole(codec):
    content = (b"Content-Transfer-Encoding:\n"
               b" 8bit (comment\n"
               b"\tcontinued)\n"
               b"X-After: 1\n"
               b"\n"
               b"\xe9\n")
    assert downgrade(codec, content) == wire(
        b"X-After: 1\n"
        b"Content-Transfer-Encoding: quoted-printable\n"
        b"\n"
        b"=E9")


def test_not_declared_8bit_passes_unchanged(codec):
    for cte in (b"", b"Content-Transfer-Encoding: 7bit\n",
                b"Content-Transfer-Encoding: quoted-printable\n",
                b"Content-Transfer-Encoding: base64\n",
                b"Content-Transfer-Encoding: x-unknown\n"):
        content = b"Subject: \xe9t\xe9\n" + cte + b"\n8-bit \xe9 body = as is \n"
        expected = wire(b"Subject: \xe9t\xe9\n" + cte + b"\n8-bit \xe9 body = as is ")
        assert downgrade(codec, content) == expected, cte


def test_7bit_cte_header_with_continuation_is_kept(codec):
    content = b"Content-Transfer-Encoding:\n 7bit\nX: y\n\nbody\n"
    assert downgrade(codec, content) == wire(
        b"Content-Transfer-Encoding:\n 7bit\nX: y\n\nbody")


def test_8bit_header_bytes_pass(codec):
    content = (b"Subject: =?x?= \xc3\xa9\xff\n"
               b"Content-Transfer-Encoding: 8bit\n"
               b"\n"
               b"x\n")
    assert downgrade(codec, content) == wire(
        b"Subject: =?x?= \xc3\xa9\xff\n"
        b"Content-Transfer-Encoding: quoted-printable\n"
        b"\n"
        b"x")


def reference_qp_line(line):
    """Postfix's algorithm for one body line, written independently."""
    out, current = [], b""
    for byte in line:
        if len(current) > 72:
            out.append(current + b"=")
            current = b""
        if byte == 9 or (32 <= byte <= 126 and byte != 61):
            current += bytes([byte])
        else:
            current += b"=%02X" % byte
    if current[-1:] in (b" ", b"\t"):
        current = current[:-1] + b"=%02X" % current[-1]
    out.append(current)
    return out


def test_soft_line_breaks(codec):
    line = b"a" * 200
    body = downgrade(codec, b"Content-Transfer-Encoding: 8bit\n\n" + line + b"\n")
    lines = body.split(b"\r\n")[2:-2]
    assert lines == [b"a" * 73 + b"=", b"a" * 73 + b"=", b"a" * 54]
    assert lines == reference_qp_line(line)


@pytest.mark.parametrize("line", [
    b"a" * 72 + b"\xe9" * 10,
    b"a" * 71 + b" " * 5,
    b"a" * 72 + b" ",
    b"a" * 72 + b"\t",
    b"=" * 100,
    bytes(range(256)).replace(b"\n", b"") * 3,
    b"x" * 73,
    b"x" * 74,
    b" " * 300,
])
def test_quoted_printable_lines(codec, line):
    body = downgrade(codec, b"Content-Transfer-Encoding: 8bit\n\n" + line + b"\n")
    lines = body.split(b"\r\n")[2:-2]
    assert lines == reference_qp_line(line)
    assert all(len(encoded) <= 76 for encoded in lines)
    assert all(encoded[-1:] not in (b" ", b"\t") for encoded in lines)


def test_bare_cr_inside_converted_part_is_encoded(codec):
    content = b"Content-Transfer-Encoding: 8bit\n\na\rb\r\r\n"
    assert downgrade(codec, content) == wire(
        b"Content-Transfer-Encoding: quoted-printable\n\na=0Db=0D")


def test_converted_dot_line_is_stuffed(codec):
    content = b"Content-Transfer-Encoding: 8bit\n\n.\n.\xe9\n"
    assert downgrade(codec, content) == wire(
        b"Content-Transfer-Encoding: quoted-printable\n\n..\n..=E9")


# -- structure ------------------------------------------------------------------

NESTED = (
    b"From: a@example.com\n"
    b"Subject: nested\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=\"outer\"\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"preamble \xe9\n"
    b"--outer\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"caf\xc3\xa9\n"
    b"--outer\n"
    b"Content-Type: multipart/alternative;\n"
    b" boundary=\"inner\"\n"
    b"\n"
    b"--inner\n"
    b"Content-Type: text/html; charset=iso-8859-1\n"
    b"Content-Transfer-Encoding: binary\n"
    b"\n"
    b"<p>na\xefve = true</p>\t\n"
    b"--inner--\n"
    b"--outer\n"
    b"Content-Type: message/rfc822\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"From: c@example.com\n"
    b"Subject: inner\n"
    b"Content-Type: multipart/mixed; boundary=deep\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"--deep\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"\xc3\xbcber\n"
    b".\n"
    b"--deep--\n"
    b"--outer--\n"
    b"epilogue \xe9\n"
)

NESTED_EXPECTED = wire(
    b"From: a@example.com\n"
    b"Subject: nested\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=\"outer\"\n"
    b"Content-Transfer-Encoding: 7bit\n"
    b"\n"
    b"preamble \xe9\n"
    b"--outer\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"caf=C3=A9\n"
    b"--outer\n"
    b"Content-Type: multipart/alternative;\n"
    b" boundary=\"inner\"\n"
    b"\n"
    b"--inner\n"
    b"Content-Type: text/html; charset=iso-8859-1\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"<p>na=EFve =3D true</p>=09\n"
    b"--inner--\n"
    b"--outer\n"
    b"Content-Type: message/rfc822\n"
    b"Content-Transfer-Encoding: 7bit\n"
    b"\n"
    b"From: c@example.com\n"
    b"Subject: inner\n"
    b"Content-Type: multipart/mixed; boundary=deep\n"
    b"Content-Transfer-Encoding: 7bit\n"
    b"\n"
    b"--deep\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"=C3=BCber\n"
    b"..\n"
    b"--deep--\n"
    b"--outer--\n"
    b"epilogue \xe9"
)


def test_nested_multipart_with_message_rfc822(codec):
    assert downgrade(codec, NESTED) == NESTED_EXPECTED
    crlf = NESTED.replace(b"\n", b"\r\n")
    assert downgrade(codec, crlf) == NESTED_EXPECTED
    for size in (1, 2, 3, 7, 64):
        assert downgrade_chunked(codec, crlf, size) == NESTED_EXPECTED


def test_without_downgrade_nothing_is_converted(codec):
    assert codec.encode(NESTED) == NESTED.replace(b"\n.\n", b"\n..\n").replace(
        b"\n", b"\r\n") + b".\r\n"


def test_multipart_digest_parts_default_to_message(codec):
    content = (b"Content-Type: multipart/digest; boundary=d\n"
               b"\n"
               b"--d\n"
               b"\n"
               b"Subject: digested\n"
               b"Content-Transfer-Encoding: 8bit\n"
               b"\n"
               b"\xe9\n"
               b"--d--\n")
    assert downgrade(codec, content) == wire(
        b"Content-Type: multipart/digest; boundary=d\n"
        b"\n"
        b"--d\n"
        b"\n"
        b"Subject: digested\n"
        b"Content-Transfer-Encoding: quoted-printable\n"
        b"\n"
        b"=E9\n"
        b"--d--")


def test_message_global_is_a_leaf(codec):
    content = (b"Content-Type: message/global\n"
               b"Content-Transfer-Encoding: 8bit\n"
               b"\n"
               b"Subject: \xe9\n"
               b"\n"
               b"\xe9\n")
    assert downgrade(codec, content) == wire(
        b"Content-Type: message/global\n"
        b"Content-Transfer-Encoding: quoted-printable\n"
        b"\n"
        b"Subject: =E9\n"
        b"\n"
        b"=E9")


def test_other_message_types_are_labelled_7bit_not_encoded(codec):
    content = (b"Content-Type: message/partial; id=x\n"
               b"Content-Transfer-Encoding: 8bit\n"
               b"\n"
               b"\xe9 = raw\n")
    assert downgrade(codec, content) == wire(
        b"Content-Type: message/partial; id=x\n"
        b"Content-Transfer-Encoding: 7bit\n"
        b"\n"
        b"\xe9 = raw")


def test_content_type_after_cte_decides_the_label(codec):
    content = (b"Content-Transfer-Encoding: 8bit\n"
               b"Content-Type: multipart/mixed; boundary=\"b\"\n"
               b"\n"
               b"--b\n"
               b"\n"
               b"\xe9\n"
               b"--b--\n")
    assert downgrade(codec, content) == wire(
        b"Content-Type: multipart/mixed; boundary=\"b\"\n"
        b"Content-Transfer-Encoding: 7bit\n"
        b"\n"
        b"--b\n"
        b"\n"
        b"\xe9\n"
        b"--b--")


@pytest.mark.parametrize("parameter", [
    b"boundary=----=_Part_1",                  # unquoted with "=": runs to ";"
    b"boundary=\"----=_Part_1\"",
    b"BOUNDARY = \"----=_Part_1\" (comment)",
    b"charset=x; boundary=\"----=_Part_1\"; x=y",
    b"boundary=\"----=_Part_1",                # unterminated quote
])
def test_boundary_parameter_forms(codec, parameter):
    content = (b"Content-Type: multipart/mixed; " + parameter + b"\n"
               b"\n"
               b"------=_Part_1\n"
               b"Content-Transfer-Encoding: 8bit\n"
               b"\n"
               b"\xe9\n"
               b"------=_Part_1--\n")
    assert downgrade(codec, content) == wire(
        b"Content-Type: multipart/mixed; " + parameter + b"\n"
        b"\n"
        b"------=_Part_1\n"
        b"Content-Transfer-Encoding: quoted-printable\n"
        b"\n"
        b"=E9\n"
        b"------=_Part_1--")


def boundary_message(boundary, delimiter):
    return (b"Content-Type: multipart/mixed; boundary=\"" + boundary + b"\"\n"
            b"\n"
            b"--" + delimiter + b"\n"
            b"Content-Transfer-Encoding: 8bit\n"
            b"\n"
            b"\xe9\n")


def test_boundaries_are_truncated_for_matching(codec):
    content = boundary_message(b"abcdefghijKLMNOP", b"abcdefghijXYZ")
    # Truncated to 10 bytes, "--abcdefghijXYZ" is a delimiter: the part converts.
    assert downgrade(codec, content, mime_boundary_length_limit=10).endswith(
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=E9\r\n.\r\n")
    # With the default limit it is not one: the text stays preamble.
    assert downgrade(codec, content) == wire(content[:-1])


def test_boundary_trailing_cruft_is_ignored(codec):
    content = boundary_message(b"b", b"b  trailing")
    assert downgrade(codec, content).endswith(b"\r\n=E9\r\n.\r\n")


def test_boundary_of_the_default_limit_matches(codec):
    boundary = b"x" * 2048
    content = boundary_message(boundary + b"tail", boundary + b"tail")
    assert downgrade(codec, content).endswith(b"\r\n=E9\r\n.\r\n")


def test_boundary_longer_than_a_line_piece(codec):
    # A boundary limit above the piece size grows the pieces: the whole
    # delimiter line is still seen at once.
    boundary = b"y" * 10000
    content = boundary_message(boundary, boundary)
    out = downgrade(codec, content, mime_boundary_length_limit=10000, line_length_limit=0)
    assert out.endswith(b"\r\n=E9\r\n.\r\n")
    out = downgrade(codec, content, mime_boundary_length_limit=10001, line_length_limit=0)
    assert out.endswith(b"\r\n=E9\r\n.\r\n")


def test_close_delimiter_closes_inner_levels(codec):
    # "--outer--" ends both the unterminated inner multipart and the outer one.
    content = (b"Content-Type: multipart/mixed; boundary=outer\n"
               b"\n"
               b"--outer\n"
               b"Content-Type: multipart/mixed; boundary=inner\n"
               b"\n"
               b"--inner\n"
               b"\n"
               b"text\n"
               b"--outer--\n"
               b"--inner\n"
               b"Content-Transfer-Encoding: 8bit\n"
               b"\n"
               b"\xe9\n")
    # After the outer close delimiter "--inner" is epilogue text, not a boundary.
    assert downgrade(codec, content) == wire(content[:-1])


def test_epilogue_after_close_delimiter_is_not_parsed(codec):
    content = (b"Content-Type: multipart/mixed; boundary=outer\n"
               b"\n"
               b"--outer\n"
               b"Content-Type: multipart/mixed; boundary=inner\n"
               b"\n"
               b"--inner--\n"
               b"Content-Transfer-Encoding: 8bit\n"
               b"\n"
               b"inner epilogue \xe9\n"
               b"--outer--\n"
               b"Content-Transfer-Encoding: 8bit\n"
               b"\n"
               b"outer epilogue \xe9\n")
    assert downgrade(codec, content) == wire(content[:-1])


# -- nesting ----------------------------------------------------------------------

def nested_multiparts(depth):
    head = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i)
                    for i in range(depth))
    tail = b"".join(b"--b%d--\n" % i for i in reversed(range(depth)))
    return head + b"Content-Transfer-Encoding: 8bit\n\n\xe9\n" + tail


@pytest.mark.parametrize("limit", [1, 3, 10])
def test_nesting_up_to_the_limit(codec, limit):
    out = downgrade(codec, nested_multiparts(limit), mime_nesting_limit=limit)
    assert b"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=E9\r\n" in out
    with pytest.raises(codec.MimeError) as raised:
        downgrade(codec, nested_multiparts(limit + 1), mime_nesting_limit=limit)
    assert raised.value.dsn == "5.6.0"
    assert str(raised.value) == "MIME nesting exceeds safety limit"
    assert isinstance(raised.value, _common.MimeError)


def test_default_nesting_limit_is_100(codec):
    downgrade(codec, nested_multiparts(100))
    with pytest.raises(codec.MimeError):
        downgrade(codec, nested_multiparts(101))


def test_no_mime_parsing_without_downgrade(codec):
    content = nested_multiparts(500)
    assert codec.encode(content, mime_nesting_limit=1) == \
        content.replace(b"\n", b"\r\n") + b".\r\n"


def test_closed_levels_do_not_count(codec):
    one = (b"--top\n"
           b"Content-Type: multipart/mixed; boundary=inner\n\n--inner\n\nx\n--inner--\n")
    content = (b"Content-Type: multipart/mixed; boundary=top\n\n" + one * 50
               + b"--top--\n")
    assert downgrade(codec, content, mime_nesting_limit=2) == wire(content[:-1])


def test_every_boundary_parameter_counts(codec):
    # Postfix pushes each boundary parameter of a multipart (RFC-violating
    # duplicates could otherwise hide content); each counts toward the limit.
    content = b"Content-Type: multipart/mixed; boundary=a; boundary=b\n\n--a\n\nx\n"
    with pytest.raises(codec.MimeError):
        downgrade(codec, content, mime_nesting_limit=1)
    assert downgrade(codec, content, mime_nesting_limit=2) == wire(content[:-1])


def test_message_rfc822_does_not_count_as_nesting(codec):
    content = b"Content-Type: message/rfc822\n\n" * 300 + b"x\n"
    assert downgrade(codec, content, mime_nesting_limit=1) == wire(content[:-1])


def test_encoder_stays_failed_after_mime_error(codec):
    encoder = codec.Encoder(downgrade=True, mime_nesting_limit=1)
    assert encoder.feed(b"Content-Type: multipart/mixed; boundary=a\n") == \
        b"Content-Type: multipart/mixed; boundary=a\r\n"
    with pytest.raises(codec.MimeError):
        encoder.feed(b"Content-Type: multipart/mixed; boundary=b\n\n--a\n"
                     b"Content-Type: multipart/mixed; boundary=c\n\n")
    with pytest.raises(codec.MimeError):
        encoder.feed(b"more\n")
    with pytest.raises(codec.MimeError) as raised:
        encoder.finish()
    assert raised.value.dsn == "5.6.0"


# -- malformed MIME ---------------------------------------------------------------

@pytest.mark.parametrize("content", [
    # multipart without a boundary: the body is one opaque preamble
    b"Content-Type: multipart/mixed\n\n--x\nContent-Transfer-Encoding: 8bit\n\n\xe9\n",
    # empty boundary parameter
    b"Content-Type: multipart/mixed; boundary=\"\"\n\n---\n\n\xe9\n",
    # unterminated multipart, part without headers
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nno close \xe9\n",
    # garbage Content-Type values
    b"Content-Type: ;;;==\"\\\n\nx\n",
    b"Content-Type: (unclosed comment multipart/mixed; boundary=b\n\n--b\n",
    b"Content-Type:\n\n\n",
])
def test_malformed_mime_passes_through(codec, content):
    assert downgrade(codec, content) == wire(content[:-1])


@pytest.mark.parametrize("content", [
    b": no name\n\nx\n",
    b"X-Bad Name: y\nSubject: z\n",
    b"\x00\x01\xff:\n",
    b" continuation first\n",
])
def test_primary_garbage_passes_after_a_separator(codec, content):
    assert downgrade(codec, content) == wire(b"\n" + content[:-1])


def test_garbage_in_primary_headers_gets_a_separator(codec):
    content = b"Subject: x\nnot a header\nContent-Transfer-Encoding: 8bit\n"
    assert downgrade(codec, content) == wire(
        b"Subject: x\n\nnot a header\nContent-Transfer-Encoding: 8bit")


def test_garbage_after_part_headers_gets_no_separator(codec):
    content = (b"Content-Type: multipart/mixed; boundary=b\n\n"
               b"--b\nContent-Transfer-Encoding: 8bit\nno blank line \xe9\n--b--\n")
    assert downgrade(codec, content) == wire(
        b"Content-Type: multipart/mixed; boundary=b\n\n"
        b"--b\nContent-Transfer-Encoding: quoted-printable\nno blank line =E9\n--b--")


def test_headers_only_message(codec):
    assert downgrade(codec, b"Content-Transfer-Encoding: 8bit") == wire(
        b"Content-Transfer-Encoding: quoted-printable")
    assert downgrade(codec, b"Subject: x\n") == wire(b"Subject: x")
    assert downgrade(codec, b"") == b".\r\n"


def test_garbage_leaf_header_then_multipart_label_is_consistent(codec):
    # A multipart whose headers end in garbage: labelled 7bit, never QP-encoded.
    content = (b"Content-Type: multipart/mixed; boundary=b\n"
               b"Content-Transfer-Encoding: 8bit\n"
               b"garbage \xe9\n")
    assert downgrade(codec, content) == wire(
        b"Content-Type: multipart/mixed; boundary=b\n"
        b"Content-Transfer-Encoding: 7bit\n"
        b"\n"
        b"garbage \xe9")


def test_huge_content_type_and_cte_headers(codec):
    """Headers beyond HEADER_PARSE_LIMIT: only the first part is parsed, all is sent."""
    filler = b" x" * 60000
    content = (b"Content-Type: text/plain;" + filler + b"\n"
               b"Content-Transfer-Encoding: 8bit;\n" + (b" " + b"y" * 999 + b"\n") * 120
               + b"\n\xe9\n")
    out = downgrade(codec, content, line_length_limit=0)
    assert out == wire(
        b"Content-Type: text/plain;" + filler + b"\n"
        b"Content-Transfer-Encoding: quoted-printable\n\n=E9")
    seven = content.replace(b"8bit;", b"7bit;")
    assert downgrade(codec, seven, line_length_limit=0) == wire(seven[:-1])
    for size in (1000, 8191, 65536):
        assert downgrade_chunked(codec, content, size, line_length_limit=0) == out
        assert downgrade_chunked(codec, seven, size, line_length_limit=0) == \
            wire(seven[:-1])


# -- long lines are handed to the parser in pieces --------------------------------

RECORD = _common.record_size(2048)


@pytest.mark.parametrize("length", [RECORD - 1, RECORD, RECORD + 1, 2 * RECORD,
                                    2 * RECORD + 1, 3 * RECORD + 17])
@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r\r\n", b""])
def test_long_lines_in_converted_and_plain_parts(codec, length, ending):
    line = bytes((i * 7 + 1) % 256 for i in range(length)).replace(b"\n", b"n")
    line = line.replace(b"\r", b"r")
    content = (b"Content-Type: multipart/mixed; boundary=b\n\n"
               b"--b\nContent-Transfer-Encoding: 8bit\n\n" + line + ending
               + b"--b\n\n" + line + ending + b"--b--\n")
    body = line + b"\r" if ending == b"\r\r\n" else line
    expected_qp = b"\r\n".join(reference_qp_line(body))
    out = downgrade(codec, content, line_length_limit=0)
    if not ending:
        # Without a line ending the boundary is part of the line: one long line.
        assert b"--b--" in out
        return
    assert out == (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        + expected_qp + b"\r\n--b\r\n\r\n"
        + body.replace(b"\r", b" ") + b"\r\n--b--\r\n.\r\n")
    for size in (RECORD - 1, RECORD + 1, 4099):
        assert downgrade_chunked(codec, content, size, line_length_limit=0) == out


def test_long_line_pieces_never_look_like_boundaries(codec):
    # The second piece of a long line starts with "--b": still not a boundary.
    line = b"q" * RECORD + b"--b"
    content = (b"Content-Type: multipart/mixed; boundary=b\n\n--b\n"
               b"Content-Transfer-Encoding: 8bit\n\n" + line + b"\n")
    out = downgrade(codec, content, line_length_limit=0)
    assert out.endswith(b"\r\n".join(reference_qp_line(line)) + b"\r\n.\r\n")


# -- decoding by an independent parser -------------------------------------------

def unstuff(data):
    """Wire bytes back to the message: drop the final dot, undo dot-stuffing."""
    assert data.endswith(b"\r\n.\r\n")
    lines = data[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b"..") else line for line in lines)


def normalise(body):
    return body.replace(b"\r\n", b"\n")


def decoded(entity):
    """A part's decoded body with the line ending that precedes the boundary."""
    return normalise(entity.get_payload(decode=True) + b"\r\n")


PART_BODIES = {
    b"utf8": "Grüße aus Köln – “quoted” = equal\n".encode() * 3 + b"x" * 300
    + b"\n.\n..dots\nFrom the start\ntrailing space \ntrailing tab\t\n\n",
    b"latin1": "naïve café, über\tall ".encode("latin-1") + b"\x00\x01\x7f\xff\rmid-CR",
    b"long": ("é" * 500).encode() + b"\n" + b"=" * 300,
    b"inner": b"deep \xf0\x9f\x93\xa7 message\n",
}


def part(name, body, cte=b"8bit", ctype=b"text/plain; charset=utf-8"):
    return (b"Content-Type: " + ctype + b"\n"
            b"Content-Transfer-Encoding: " + cte + b"\n"
            b"X-Part: " + name + b"\n"
            b"\n" + body)


DECODE_MESSAGE = (
    b"From: a@example.com\nTo: b@example.com\nSubject: decode\nMIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=\"=_outer\"\n"
    b"Content-Transfer-Encoding: 8bit\n\n"
    b"This is MIME.\n"
    b"--=_outer\n" + part(b"utf8", PART_BODIES[b"utf8"]) + b"\n"
    b"--=_outer\n" + part(b"latin1", PART_BODIES[b"latin1"], cte=b"binary",
                          ctype=b"text/html; charset=iso-8859-1") + b"\n"
    b"--=_outer\n" + part(b"long", PART_BODIES[b"long"],
                          ctype=b"application/octet-stream") + b"\n"
    b"--=_outer\n"
    b"Content-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\n"
    b"From: c@example.com\nSubject: inner\nMIME-Version: 1.0\n"
    b"Content-Type: multipart/alternative; boundary=in\n\n"
    b"--in\n" + part(b"inner", PART_BODIES[b"inner"]) + b"\n"
    b"--in--\n"
    b"--=_outer--\n"
)


def parse(data):
    return email.message_from_bytes(unstuff(data), policy=email.policy.compat32)


@pytest.mark.parametrize("chunk", [None, 1, 5, 100])
def test_email_package_recovers_every_converted_part(codec, chunk):
    if chunk is None:
        out = downgrade(codec, DECODE_MESSAGE)
    else:
        out = downgrade_chunked(codec, DECODE_MESSAGE, chunk)
    assert max(out) < 128                     # declared 8-bit was all there was
    seen = set()
    for entity in parse(out).walk():
        name = entity["X-Part"]
        if entity.get_content_maintype() in ("multipart", "message"):
            # Declared 8bit became 7bit; undeclared stays undeclared.
            assert entity["Content-Transfer-Encoding"] in (None, "7bit")
            continue
        if name is None:
            continue
        name = name.encode()
        assert entity["Content-Transfer-Encoding"] == "quoted-printable"
        assert decoded(entity) == normalise(PART_BODIES[name] + b"\n")
        seen.add(name)
    assert seen == set(PART_BODIES)
    top = parse(out)
    assert top["Content-Transfer-Encoding"] == "7bit"
    assert top.get_payload()[3]["Content-Transfer-Encoding"] == "7bit"


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=400))
def test_email_package_recovers_random_bodies(codec, body):
    body = body.replace(b"\n-", b"\n+")       # keep body lines off the boundary
    if body.startswith(b"-"):
        body = b"+" + body[1:]
    content = (b"Content-Type: multipart/mixed; boundary=zz\n\n--zz\n"
               + part(b"p", body) + b"\n--zz--\n")
    out = downgrade(codec, content)
    assert max(out) < 128
    parts = [entity for entity in parse(out).walk() if entity["X-Part"] == "p"]
    assert len(parts) == 1
    assert decoded(parts[0]) == normalise(body + b"\n")
