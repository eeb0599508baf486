"""Hypothesis: compiled == twin, chunked == whole, and the wire rules on any input.

The compiled codec must give exactly the bytes of its Python twin for
encode() and for Encoder fed in random chunks (splitting CRLF pairs, lines,
boundaries, long-line pieces), with and without downgrade; both must agree
with a small independent model of rules 1-3; and no input, however
malformed, may raise anything but MimeError.
"""

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postclient.codec import _common, _encode_py

try:
    from postclient.codec import _encode_c
except ImportError:                    # test_codec.py's test_compiled_module_loaded fails
    _encode_c = None

IMPLEMENTATIONS = {"python": _encode_py}
if _encode_c is not None:
    IMPLEMENTATIONS["cython"] = _encode_c

needs_compiled = pytest.mark.skipif(
    _encode_c is None, reason="compiled codec not importable: see test_compiled_module_loaded")

SETTINGS = settings(max_examples=250, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture(params=["python", "cython"])
def codec(request):
    if request.param not in IMPLEMENTATIONS:
        pytest.skip("compiled codec not importable: see test_compiled_module_loaded")
    return IMPLEMENTATIONS[request.param]


RECORD = _common.record_size(2048)

FRAGMENTS = [
    b".", b"..", b"\r", b"\n", b"\r\n", b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r",
    b" ", b"\t", b"=", b"-", b"--", b"\xe9", b"\xff\x00", b"x", b"word ",
    b"a" * 73, b"b" * 300, b"c" * 1000, b"\r" * 3,
    b"Subject: s\n", b": x\n", b"X-H :\n", b" folded\n", b"\tfolded\n",
    b"Content-Type: multipart/mixed; boundary=b\n",
    b"Content-Type: multipart/mixed;\n boundary=\"c\"\n",
    b"Content-Type: multipart/digest; boundary=d\n",
    b"Content-Type: message/rfc822\n", b"Content-Type: message/global\n",
    b"Content-Type: message/partial\n", b"Content-Type: text/plain\n",
    b"Content-Type: (x) multipart/alternative; boundary=b; boundary=c\n",
    b"Content-Transfer-Encoding: 8bit\n", b"Content-Transfer-Encoding: binary\n",
    b"Content-Transfer-Encoding:\n 8bit\n", b"Content-Transfer-Encoding: 7bit\n",
    b"content-transfer-encoding : BASE64\n",
    b"--b\n", b"--b--\n", b"--c\n", b"--c--\n", b"--d\n", b"--b \n", b"--bx\n",
]

contents = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=12)), max_size=40,
).map(b"".join)

# Inputs with a line around the MIME parser's piece size (one or two pieces,
# a CR right at a piece boundary, ...).
long_contents = st.tuples(
    contents.map(lambda prefix: prefix + b"\n"),
    st.one_of(st.sampled_from([RECORD - 1, RECORD, RECORD + 1, 2 * RECORD - 1,
                               2 * RECORD, 2 * RECORD + 1]),
              st.integers(RECORD - 3, 2 * RECORD + 3)),
    st.sampled_from([b"\n", b"\r\n", b"\r", b"\r\r\n", b"--b\n", b""]), contents,
).map(lambda t: t[0] + b"\xe8" * t[1] + t[2] + t[3])

options = st.fixed_dictionaries({
    "line_length_limit": st.sampled_from([0, 2, 3, 5, 10, 76, 990]),
    "downgrade": st.booleans(),
    "mime_nesting_limit": st.sampled_from([1, 2, 3, 100]),
    "mime_boundary_length_limit": st.sampled_from([1, 2, 5, 2048]),
})


def outcome(function, *args, **kwargs):
    """Result or exception type, so that both are compared."""
    try:
        return function(*args, **kwargs)
    except _common.MimeError as error:
        return ("MimeError", error.dsn, str(error))


def chunked(codec, content, cuts, **kw):
    encoder = codec.Encoder(**kw)
    out = []
    try:
        start = 0
        for cut in sorted(cuts) + [len(content)]:
            out.append(encoder.feed(content[start:cut]))
            start = cut
        out.append(encoder.finish())
    except _common.MimeError as error:
        return ("MimeError", error.dsn, str(error))
    return b"".join(out)


def cut_points(content):
    """Random cuts, often right after a CR (half a CRLF in each chunk)."""
    after_cr = [i + 1 for i, byte in enumerate(content) if byte == 13]
    cut = st.integers(0, len(content))
    if after_cr:
        cut = st.one_of(cut, st.sampled_from(after_cr))
    return st.lists(cut, max_size=8)


@needs_compiled
@SETTINGS
@given(content=st.one_of(contents, long_contents), kw=options)
def test_compiled_encode_equals_twin(content, kw):
    assert outcome(_encode_c.encode, content, **kw) == \
        outcome(_encode_py.encode, content, **kw)


@needs_compiled
@SETTINGS
@given(data=st.data(), kw=options)
def test_compiled_encoder_equals_twin_for_random_chunkings(data, kw):
    content = data.draw(st.one_of(contents, long_contents))
    cuts = data.draw(cut_points(content))
    whole = outcome(_encode_py.encode, content, **kw)
    assert chunked(_encode_c, content, cuts, **kw) == whole
    assert chunked(_encode_py, content, cuts, **kw) == whole


@SETTINGS
@given(data=st.data(), kw=options)
def test_chunking_never_matters(codec, data, kw):
    content = data.draw(contents)
    cuts = data.draw(cut_points(content))
    assert chunked(codec, content, cuts, **kw) == outcome(codec.encode, content, **kw)
    assert chunked(codec, content, range(len(content)), **kw) == \
        outcome(codec.encode, content, **kw)


def model(content, limit):
    """Rules 1-3 as plainly as they can be written (no downgrade)."""
    if not content:
        return b".\r\n"
    lines = re.split(b"\r?\n", content)
    if content.endswith(b"\n"):
        lines.pop()
    out = []
    for line in lines:
        line = line.replace(b"\r", b" ")
        pieces = [line]
        if limit and len(line) > limit:
            pieces = [line[:limit]] + [b" " + line[i:i + limit - 1]
                                       for i in range(limit, len(line), limit - 1)]
        if pieces[0].startswith(b"."):
            pieces[0] = b"." + pieces[0]
        out.extend(piece + b"\r\n" for piece in pieces)
    return b"".join(out) + b".\r\n"


@SETTINGS
@given(content=contents, limit=st.sampled_from([0, 2, 3, 4, 7, 76, 990]))
def test_matches_the_model(codec, content, limit):
    assert codec.encode(content, line_length_limit=limit) == model(content, limit)


def assert_wire_clean(data, limit):
    """security-rules.md rule 9 on the output bytes alone."""
    assert data == b".\r\n" or data.endswith(b"\r\n.\r\n")
    body = data[:-3]
    rest = body.replace(b"\r\n", b"")
    assert b"\r" not in rest and b"\n" not in rest
    for line in body.split(b"\r\n")[:-1]:
        assert line != b"."
        assert not line.startswith(b".") or line.startswith(b"..")
        if limit:
            assert len(line) <= limit + line.startswith(b"..")


@SETTINGS
@given(content=st.one_of(contents, st.binary(max_size=300)), kw=options)
def test_wire_rules_hold_for_any_input(codec, content, kw):
    result = outcome(codec.encode, content, **kw)
    if isinstance(result, tuple):
        assert kw["downgrade"] and result[:2] == ("MimeError", "5.6.0")
        return
    assert_wire_clean(result, kw["line_length_limit"])


@SETTINGS
@given(content=st.one_of(contents, st.binary(max_size=500)))
def test_malformed_mime_never_raises(codec, content):
    # With a generous nesting limit nothing at all may be raised.
    result = codec.encode(content, downgrade=True, mime_nesting_limit=1000)
    assert_wire_clean(result, 990)
    if b"8bit" in content.lower() or b"binary" in content.lower():
        return
    # Nothing declared 8-bit: the downgrade changes nothing, except for the
    # blank line it adds when the primary headers end in a non-header line.
    plain = codec.encode(content).split(b"\r\n")
    lines = result.split(b"\r\n")
    if lines != plain:
        k = next(i for i, (a, b) in enumerate(zip(lines, plain)) if a != b)
        assert lines[k] == b"" and lines[:k] + lines[k + 1:] == plain


@pytest.mark.parametrize("length", [RECORD - 1, RECORD, RECORD + 1, 2 * RECORD])
@pytest.mark.parametrize("ending", [b"\r", b"\r\r\n", b"\r\n", b"\n"])
@pytest.mark.parametrize("downgrade", [False, True])
def test_chunk_cuts_around_piece_boundaries(codec, length, ending, downgrade):
    """Deterministic companion of the hypothesis tests for rare cut positions."""
    head = b"Content-Transfer-Encoding: 8bit\n\n" + b"s" * 5 + b"\n"
    line_start = len(head)
    content = head + b"\xe8" * length + ending + b"abc\r\n"
    whole = codec.encode(content, downgrade=downgrade)
    if _encode_c is not None:
        assert whole == _encode_py.encode(content, downgrade=downgrade)
    for cut in (5, line_start + 1):
        for second in range(line_start + length - 2, line_start + length + 4):
            assert chunked(codec, content, [cut, second], downgrade=downgrade) == whole
