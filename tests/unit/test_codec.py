"""DATA encoding without downgrade: CRLF, bare CR, dot-stuffing, folding, streaming.

Every test runs over both implementations (the `codec` fixture), and
test_compiled_module_loaded fails when the Cython build is missing, so a
broken build cannot hide behind the Python twin.  Expected outputs are
written out by hand or built with explicit slicing from the rules in
docs/codec.md, never taken from either implementation.
"""

import pytest

import postclient.codec
from postclient import extensions
from postclient.codec import _encode_py
from tests.fresh_python import run_python

IMPLEMENTATIONS = {"python": _encode_py}
try:
    from postclient.codec import _encode_c
except ImportError:                                    # reported by the test below
    _encode_c = None
else:
    IMPLEMENTATIONS["cython"] = _encode_c


@pytest.fixture(params=["python", "cython"])
def codec(request):
    if request.param not in IMPLEMENTATIONS:
        pytest.skip("compiled codec not importable: see test_compiled_module_loaded")
    return IMPLEMENTATIONS[request.param]


def chunked(codec, content, sizes, **options):
    """Encoder output for content cut into pieces of the given sizes (cycled)."""
    encoder = codec.Encoder(**options)
    out, start, i = [], 0, 0
    while start < len(content):
        size = sizes[i % len(sizes)]
        out.append(encoder.feed(content[start:start + size]))
        start += size
        i += 1
    out.append(encoder.finish())
    return b"".join(out)


# -- which implementation ----------------------------------------------------

def test_compiled_module_loaded():
    """Fails (does not skip) when the Cython extension did not load."""
    if extensions.disabled():
        assert postclient.codec.IMPLEMENTATION == "python"
        return
    assert _encode_c is not None, (
        "postclient.codec._encode_c is not importable; build it with "
        "`python setup.py build_ext --inplace`")
    assert postclient.codec.IMPLEMENTATION == "cython", postclient.codec._import_error
    assert postclient.codec.encode is _encode_c.encode
    assert postclient.codec.Encoder is _encode_c.Encoder


def test_selector_exports():
    assert set(postclient.codec.__all__) == {"encode", "Encoder", "MimeError",
                                             "IMPLEMENTATION"}
    assert postclient.codec.IMPLEMENTATION in ("cython", "python")
    assert postclient.codec.MimeError is _encode_py.MimeError
    if _encode_c is not None:
        assert _encode_c.MimeError is _encode_py.MimeError


def test_selector_honours_no_extensions():
    code = ("import postclient.codec as c, postclient.codec._encode_py as p;"
            "print(c.IMPLEMENTATION, c.encode is p.encode, c.Encoder is p.Encoder)")
    assert run_python(code, no_extensions=True) == ["python", "True", "True"]


def test_selector_falls_back_when_the_extension_is_missing():
    code = (
        "import sys\n"
        "class Missing:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'postclient.codec._encode_c':\n"
        "            raise ImportError('simulated: not built')\n"
        "sys.meta_path.insert(0, Missing())\n"
        "import postclient.codec as c, postclient.codec._encode_py as p\n"
        "print(c.IMPLEMENTATION, c.encode is p.encode, 'simulated' in c._import_error)\n")
    assert run_python(code) == ["python", "True", "True"]


def test_same_signatures():
    import inspect
    if _encode_c is None:
        pytest.skip("compiled codec not importable")
    assert inspect.signature(_encode_py.encode) == inspect.signature(_encode_c.encode)
    for name in ("feed", "finish"):
        assert callable(getattr(_encode_c.Encoder, name))


# -- rule 1: line endings ------------------------------------------------------

@pytest.mark.parametrize("content, expected", [
    (b"", b".\r\n"),
    (b"\n", b"\r\n.\r\n"),
    (b"\r\n", b"\r\n.\r\n"),
    (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
    (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
    (b"a\r\nb\nc\r\n", b"a\r\nb\r\nc\r\n.\r\n"),
    (b"abc", b"abc\r\n.\r\n"),                       # gets a line ending
    (b"a\nbc", b"a\r\nbc\r\n.\r\n"),
    (b"\n\n", b"\r\n\r\n.\r\n"),
])
def test_line_endings(codec, content, expected):
    assert codec.encode(content) == expected


@pytest.mark.parametrize("content, expected", [
    (b"a\rb\n", b"a b\r\n.\r\n"),                    # bare CR inside a line
    (b"abc\r", b"abc \r\n.\r\n"),                    # bare CR at the very end
    (b"a\r\r\n", b"a \r\n.\r\n"),                    # CR before CRLF
    (b"\r", b" \r\n.\r\n"),
    (b"\r\r\r\n\r", b"  \r\n \r\n.\r\n"),
    (b"a\n\rb", b"a\r\n b\r\n.\r\n"),                # LF then CR: LF ends, CR bare
])
def test_bare_cr_becomes_space(codec, content, expected):
    assert codec.encode(content) == expected


# -- rule 2: dot-stuffing and the end of data ---------------------------------

@pytest.mark.parametrize("content, expected", [
    (b".\n", b"..\r\n.\r\n"),
    (b".", b"..\r\n.\r\n"),
    (b"..x\n", b"...x\r\n.\r\n"),
    (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"x.\n.y\n", b"x.\r\n..y\r\n.\r\n"),
    (b" .\n", b" .\r\n.\r\n"),
    (b"x\n.", b"x\r\n..\r\n.\r\n"),
    (b"x\n.\r\n", b"x\r\n..\r\n.\r\n"),
])
def test_dot_stuffing(codec, content, expected):
    assert codec.encode(content) == expected


# SMTP smuggling: a server that takes LF or CR alone as a line ending must
# never see "<LF>.<LF>" style end-of-data inside the content.
@pytest.mark.parametrize("content, expected", [
    (b"a\n.\nb\n", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"a\n.\r\nb\n", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"a\r.\rb\n", b"a . b\r\n.\r\n"),
    (b"a\r\n.\rb\n", b"a\r\n.. b\r\n.\r\n"),
    (b"a\r\n.\r", b"a\r\n.. \r\n.\r\n"),
    (b"a\r.\r\nb", b"a .\r\nb\r\n.\r\n"),
    (b"\n.\n", b"\r\n..\r\n.\r\n"),
    (b"\r\n.\r\n", b"\r\n..\r\n.\r\n"),
    (b"a\r\n.\r\nMAIL FROM:<x>\r\n", b"a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"),
])
def test_smuggling_inputs(codec, content, expected):
    assert codec.encode(content) == expected
    for size in (1, 2, 3):
        assert chunked(codec, content, [size]) == expected


def assert_wire_clean(data, limit):
    """Rule 9 of security-rules.md, checked on raw output bytes."""
    assert data.endswith(b".\r\n")
    assert data == b".\r\n" or data.endswith(b"\r\n.\r\n")
    body = data[:-3]
    assert b"\r" not in body.replace(b"\r\n", b"")
    assert b"\n" not in body.replace(b"\r\n", b"")
    lines = body.split(b"\r\n")[:-1]
    for line in lines:
        assert line != b"."
        assert not line.startswith(b".") or line.startswith(b"..")
        if limit:
            assert len(line) <= limit + line.startswith(b"..")


def test_every_smuggling_variant_is_clean(codec):
    pieces = [b"\r", b"\n", b".", b"x"]
    import itertools
    for size in range(1, 6):
        for combo in itertools.product(pieces, repeat=size):
            content = b"".join(combo)
            assert_wire_clean(codec.encode(content), 0)
            assert_wire_clean(codec.encode(content, line_length_limit=2), 2)


# -- rule 3: folding -------------------------------------------------------------

def pattern(length):
    """Bytes that differ from position to position, so misplaced slices show."""
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789"
    return bytes(alphabet[i % len(alphabet)] for i in range(length))


def test_line_of_exactly_limit_is_unchanged(codec):
    line = pattern(990)
    assert codec.encode(line + b"\n") == line + b"\r\n.\r\n"
    assert codec.encode(line + b"\r\n") == line + b"\r\n.\r\n"
    assert codec.encode(line) == line + b"\r\n.\r\n"


def test_line_of_limit_plus_one_is_folded(codec):
    line = pattern(991)
    expected = line[:990] + b"\r\n " + line[990:] + b"\r\n.\r\n"
    assert codec.encode(line + b"\n") == expected
    assert codec.encode(line + b"\r\n") == expected


def test_5000_byte_line(codec):
    line = pattern(5000)
    expected = (line[:990] + b"\r\n"
                + b" " + line[990:1979] + b"\r\n"
                + b" " + line[1979:2968] + b"\r\n"
                + b" " + line[2968:3957] + b"\r\n"
                + b" " + line[3957:4946] + b"\r\n"
                + b" " + line[4946:5000] + b"\r\n"
                + b".\r\n")
    assert codec.encode(line + b"\n") == expected
    assert chunked(codec, line + b"\n", [7, 990, 1]) == expected
    assert codec.encode(line + b"\n", line_length_limit=0) == line + b"\r\n.\r\n"


@pytest.mark.parametrize("content, limit, expected", [
    (b"abcdefghij\n", 4, b"abcd\r\n efg\r\n hij\r\n.\r\n"),
    (b"abcdefgh\n", 4, b"abcd\r\n efg\r\n h\r\n.\r\n"),
    (b"abcdefg\n", 4, b"abcd\r\n efg\r\n.\r\n"),
    (b"abcde\n", 2, b"ab\r\n c\r\n d\r\n e\r\n.\r\n"),
    (b"abcd\n", 4, b"abcd\r\n.\r\n"),
    (b"abcd\r\n", 4, b"abcd\r\n.\r\n"),               # CRLF does not count
    (b"ab\rd\n", 3, b"ab \r\n d\r\n.\r\n"),            # a bare CR counts as its SPACE
    (b"Subject: hello world\n\nbody\n", 10,
     b"Subject: h\r\n ello worl\r\n d\r\n\r\nbody\r\n.\r\n"),    # headers alike
])
def test_folding_small_limits(codec, content, limit, expected):
    assert codec.encode(content, line_length_limit=limit) == expected


def test_stuffed_dot_at_fold_boundary(codec):
    # A line that starts with "." and is folded: the added dot does not count.
    line = b"." + pattern(990)                              # 991 bytes
    assert codec.encode(line + b"\n") == (
        b"." + line[:990] + b"\r\n " + line[990:] + b"\r\n.\r\n")
    # A dot as the first byte of a continuation: preceded by SPACE, not stuffed.
    line = pattern(990) + b".x"
    assert codec.encode(line + b"\n") == pattern(990) + b"\r\n .x\r\n.\r\n"
    line = b"abcd.efg.hi"
    assert codec.encode(line, line_length_limit=4) == b"abcd\r\n .ef\r\n g.h\r\n i\r\n.\r\n"
    # A dot line of exactly the limit is stuffed and not folded.
    line = b"." + pattern(989)
    assert codec.encode(line) == b"." + line + b"\r\n.\r\n"


def test_folding_disabled(codec):
    line = pattern(20000)
    assert codec.encode(line, line_length_limit=0) == line + b"\r\n.\r\n"


# -- streaming ------------------------------------------------------------------

STREAM_SAMPLES = [
    b"",
    b"a\r\nb\r\n",
    b"a\r\n.\r\nb\r\r\n\r",
    b".\r.\n.\r\n..\n",
    b"x" * 25 + b"\r\n" + b"." + b"y" * 30 + b"\r\r\n",
    b"\r\n\r\n\r",
]


@pytest.mark.parametrize("content", STREAM_SAMPLES)
@pytest.mark.parametrize("limit", [0, 2, 7, 990])
def test_every_two_chunk_split(codec, content, limit):
    whole = codec.encode(content, line_length_limit=limit)
    for cut in range(len(content) + 1):
        encoder = codec.Encoder(line_length_limit=limit)
        out = encoder.feed(content[:cut]) + encoder.feed(content[cut:]) + encoder.finish()
        assert out == whole, cut
    assert chunked(codec, content, [1], line_length_limit=limit) == whole


def test_encoder_emits_long_lines_incrementally(codec):
    """Without downgrade nothing but a possible CR is held between feeds."""
    encoder = codec.Encoder(line_length_limit=100)
    first = encoder.feed(b"z" * 1000)
    assert first.replace(b"\r\n ", b"") == b"z" * 1000
    second = encoder.feed(b"z" * 1000 + b"\r")
    assert second.replace(b"\r\n ", b"") == b"z" * 1000
    assert encoder.feed(b"\n") == b"\r\n"
    assert encoder.finish() == b".\r\n"


def test_feed_accepts_bytes_like(codec):
    encoder = codec.Encoder()
    out = (encoder.feed(bytearray(b"a\n")) + encoder.feed(memoryview(b"b\n"))
           + encoder.feed(b"") + encoder.finish())
    assert out == b"a\r\nb\r\n.\r\n"
    assert codec.encode(bytearray(b".")) == b"..\r\n.\r\n"
    assert codec.encode(memoryview(b"xx.\n")[2:]) == b"..\r\n.\r\n"


def test_rejects_non_contiguous_buffers(codec):
    with pytest.raises(BufferError):
        codec.encode(memoryview(b"a.b.c.")[::2])
    with pytest.raises(BufferError):
        codec.Encoder().feed(memoryview(b"a.b.c.")[::2])


def test_rejects_text(codec):
    with pytest.raises(TypeError):
        codec.encode("text")
    with pytest.raises(TypeError):
        codec.Encoder().feed("text")


def test_finish_closes_the_encoder(codec):
    encoder = codec.Encoder()
    assert encoder.feed(b"a") == b"a"
    assert encoder.finish() == b"\r\n.\r\n"
    with pytest.raises(RuntimeError):
        encoder.feed(b"b")
    with pytest.raises(RuntimeError):
        encoder.finish()


@pytest.mark.parametrize("options", [
    {"line_length_limit": 1},
    {"line_length_limit": -1},
    {"mime_nesting_limit": 0},
    {"mime_boundary_length_limit": 0},
    {"line_length_limit": 1 << 40},
])
def test_bad_options(codec, options):
    with pytest.raises(ValueError):
        codec.Encoder(**options)
    with pytest.raises(ValueError):
        codec.encode(b"x", **options)


def test_options_are_keyword_only_and_typed(codec):
    with pytest.raises(TypeError):
        codec.Encoder(990)
    with pytest.raises(TypeError):
        codec.encode(b"x", line_length_limit=9.5)
    with pytest.raises(TypeError):
        codec.encode(b"x", bogus=1)


def test_large_input_matches_line_by_line_rules(codec):
    """A few MB of mixed content: same result as the rules applied per line."""
    lines = []
    for i in range(60000):
        kind = i % 7
        if kind == 0:
            lines.append(b"." + pattern(i % 50))
        elif kind == 1:
            lines.append(b"")
        elif kind == 2:
            lines.append(pattern(1000 + i % 5))
        else:
            lines.append(pattern(i % 80))
    content = b"\n".join(lines) + b"\n"
    expected = []
    for line in lines:
        pieces = [line[:990]] + [b" " + line[i:i + 989] for i in range(990, len(line), 989)]
        if pieces[0].startswith(b"."):
            pieces[0] = b"." + pieces[0]
        expected.extend(piece + b"\r\n" for piece in pieces)
    expected = b"".join(expected) + b".\r\n"
    assert codec.encode(content) == expected
    assert chunked(codec, content, [65536, 1, 4093]) == expected
