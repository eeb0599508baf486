"""Reply parsing (postfix-behaviour.md §1.5, security rules 7 and 8): pure, no sockets."""

import random
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postclient.smtp.reply import (Reply, ReplyReader, dsn_valid, enhanced_status,
                                   notice_worthy_code, valid_code)

OK = b"250 2.0.0 Ok\r\n"
EHLO_REPLY = b"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n"
REJECT_RCPT = b"550 5.1.1 <nobody@example.com>: Recipient address rejected\r\n"


def feed_whole(data, **kw):
    return ReplyReader(**kw).feed(data)


def feed_bytes(data, **kw):
    reader = ReplyReader(**kw)
    replies = []
    for i in range(len(data)):
        replies.extend(reader.feed(data[i:i + 1]))
    return replies


def feed_random(data, seed, **kw):
    rng = random.Random(seed)
    reader = ReplyReader(**kw)
    replies, pos = [], 0
    while pos < len(data):
        size = rng.randint(1, 40)
        replies.extend(reader.feed(data[pos:pos + size]))
        pos += size
    return replies


# --- enhanced status codes (the §1.5 examples) ------------------------------------

@pytest.mark.parametrize("line, dsn", [
    ("250 2.1.0 Ok", "2.1.0"),
    ("550 5.1.1 <a@b>: Recipient address rejected", "5.1.1"),
    ("550 4.1.1 x", "5.0.0"),            # class out of step with the code
    ("450 4.7.1 try later", "4.7.1"),
    ("450 5.7.1 try later", "4.0.0"),
    ("550 no enhanced code", "5.0.0"),
    ("250 Ok", "2.0.0"),
    ("250", "2.0.0"),
    ("550  5.7.1 two spaces", "5.7.1"),  # leading spaces are skipped
    ("550 5.7.1000 too long", "5.0.0"),
    ("550 5.7.1x glued", "5.0.0"),
    ("550 5.1.1\tthen tab", "5.1.1"),
    ("354 3.0.0 go ahead", "5.5.0"),     # 3xx: Postfix's protocol-error safety value
    ("999 9.9.9 nonsense", "5.5.0"),
    ("150 x", "5.5.0"),
])
def test_enhanced_status_comes_from_the_last_line_and_must_match_the_class(line, dsn):
    assert enhanced_status(int(line[:3]), line) == dsn
    assert Reply.make(line).dsn == dsn


def test_enhanced_status_of_a_multiline_reply_comes_from_its_last_line():
    reply = Reply.make("550-5.1.1 first line\n550 4.2.2 last line")
    assert (reply.code, reply.dsn) == (550, "5.0.0")
    reply = Reply.make("550-4.2.2 first line\n550 5.2.2 last line")
    assert reply.dsn == "5.2.2"


@pytest.mark.parametrize("text, length", [
    ("2.0.0", 5), ("5.1.1 rest", 5), ("4.123.456", 9), ("5.1234.1", 0), ("5.1.1234", 0),
    ("3.1.1", 0), ("5..1", 0), ("5.1.", 0), ("5.1", 0), ("", 0), ("5", 0), ("5.1.1x", 0),
])
def test_dsn_valid(text, length):
    assert dsn_valid(text) == length


def test_valid_codes_and_codes_worth_a_protocol_notice():
    assert valid_code(200) and valid_code(599) and not valid_code(199) and not valid_code(600)
    assert [c for c in (250, 354, 399, 400, 421, 450, 500, 501, 509, 510, 550, 555, 554, 600)
            if notice_worthy_code(c)] == [250, 354, 399, 500, 501, 509, 555, 600]


# --- line handling -----------------------------------------------------------------

def test_reply_text_is_lines_joined_with_single_spaces():
    [reply] = feed_whole(EHLO_REPLY)
    assert reply.code == 250
    assert reply.lines == ("250-mx.example.com", "250-PIPELINING", "250-SIZE 10240000",
                           "250 8BITMIME")
    assert reply.text == "250-mx.example.com 250-PIPELINING 250-SIZE 10240000 250 8BITMIME"
    assert not reply.garbage and not reply.truncated


def test_bare_lf_and_crlf_both_end_lines_and_one_cr_is_removed():
    [a, b, c] = feed_whole(b"250 a\n250 b\r\n250 c\r\r\n")
    assert (a.text, b.text, c.text) == ("250 a", "250 b", "250 c?")


def test_non_printable_bytes_become_question_marks():
    [reply] = feed_whole(b"550 bad\x00\x07\tbyte \xc3\xa9t\xe9\x7f\r\n")
    assert reply.text == "550 bad???byte ??t??"


def test_bare_code_ends_a_reply():
    [reply] = feed_whole(b"250-first\r\n250\r\n")
    assert reply.code == 250 and reply.lines == ("250-first", "250")


@pytest.mark.parametrize("line", [b"hello world", b"2500 four digits", b"25 two", b"250x",
                                  b"", b"  250 indented", b"abc def"])
def test_non_reply_lines_are_garbage_kept_with_the_next_reply(line):
    [reply] = feed_whole(line + b"\r\n" + OK)
    assert reply.garbage
    assert reply.code == 250
    assert reply.lines[-1] == "250 2.0.0 Ok"
    assert reply.text.endswith("250 2.0.0 Ok")


def test_reading_continues_after_garbage_and_the_following_reply_is_clean():
    replies = feed_whole(b"junk\r\n250 one\r\n250 two\r\n")
    assert [(r.text, r.garbage) for r in replies] == [("junk 250 one", True), ("250 two", False)]


def test_any_three_digit_code_ends_a_reply_even_an_invalid_one():
    [reply] = feed_whole(b"999 what\r\n")
    assert reply.code == 999 and not reply.valid
    [reply] = feed_whole(b"000 zero\r\n")
    assert reply.code == 0 and not reply.valid


def test_long_line_is_cut_at_the_limit_and_the_rest_skipped():
    limit = 64
    data = b"550 " + b"x" * 200 + b"\r\n" + OK
    for replies in (feed_whole(data, line_length_limit=limit),
                    feed_bytes(data, line_length_limit=limit),
                    feed_random(data, 7, line_length_limit=limit)):
        assert [r.text for r in replies] == ["550 " + "x" * (limit - 4), "250 2.0.0 Ok"]
        assert replies[0].truncated and not replies[1].truncated


@pytest.mark.parametrize("extra", [0, 1, 2])
def test_line_length_limit_boundary(extra):
    limit = 32
    body = b"250 " + b"y" * (limit - 4 + extra)
    for data in (body + b"\r\n", body + b"\n"):
        for replies in (feed_whole(data, line_length_limit=limit),
                        feed_bytes(data, line_length_limit=limit)):
            [reply] = replies
            assert reply.text == body[:limit].decode()
            assert reply.truncated == (extra > 0)


def test_carriage_return_at_the_cut_is_not_taken_for_a_line_end():
    limit = 32
    data = b"250 " + b"x" * (limit - 5) + b"\r" + b"yyyy\r\n"
    expected = feed_whole(data, line_length_limit=limit)
    assert expected[0].text == "250 " + "x" * (limit - 5) + "?"
    assert feed_bytes(data, line_length_limit=limit) == expected


# --- incremental parsing -------------------------------------------------------------

CONVERSATION = (b"220 mx.example.com ESMTP\r\n" + EHLO_REPLY + OK + OK + REJECT_RCPT
                + b"garbage line\n" + b"354 End data with <CR><LF>.<CR><LF>\r\n"
                + b"250-2.0.0 Ok\r\n250-more\n250 2.0.0 queued as ABC\r\n" + b"221 Bye")


def test_whole_bytewise_and_random_splits_give_identical_replies():
    expected = feed_whole(CONVERSATION)
    assert [r.code for r in expected] == [220, 250, 250, 250, 550, 354, 250]  # "221 Bye" waits
    assert feed_bytes(CONVERSATION) == expected
    for seed in range(20):
        assert feed_random(CONVERSATION, seed) == expected


def test_trailing_partial_line_waits_for_more():
    reader = ReplyReader()
    assert reader.feed(b"250 done\r\n221 By") == [Reply.make("250 done")]
    assert reader.in_reply and reader.buffered == len(b"221 By")
    assert reader.feed(b"e\r\n") == [Reply.make("221 Bye")]
    assert not reader.in_reply


def test_next_reply_returns_one_reply_at_a_time():
    reader = ReplyReader()
    reader.push(OK + REJECT_RCPT + OK)
    assert reader.next_reply().code == 250
    assert reader.next_reply().code == 550
    assert reader.next_reply().code == 250
    assert reader.next_reply() is None


def test_discard_forgets_buffered_and_partial_input():
    reader = ReplyReader()
    reader.push(b"220 go ahead\r\n250 injected\r\n250-partial")
    assert reader.next_reply().code == 220
    assert reader.discard() == len(b"250 injected\r\n250-partial")
    assert reader.next_reply() is None
    assert reader.feed(b"250 after tls\r\n") == [Reply.make("250 after tls")]


line_pieces = st.lists(st.one_of(
    st.sampled_from([b"250 ok", b"250-cont", b"550 5.1.1 no", b"junk", b"", b"999 x",
                     b"250", b"\x00\xff", b"2500 x"]),
    st.binary(max_size=40)), max_size=15)


@settings(max_examples=200, deadline=None)
@given(line_pieces, st.sampled_from([b"\r\n", b"\n"]), st.lists(st.integers(1, 30), max_size=30))
def test_any_input_parses_the_same_however_it_is_split(lines, eol, cuts):
    data = eol.join(lines) + eol
    kw = dict(line_length_limit=16, max_lines=4, max_stored=40)
    expected = feed_whole(data, **kw)
    assert feed_bytes(data, **kw) == expected
    reader, replies, pos = ReplyReader(**kw), [], 0
    for cut in cuts + [len(data)]:
        replies.extend(reader.feed(data[pos:pos + cut]))
        pos += cut
    assert replies == expected
    for reply in expected:
        assert len(reply.lines) <= 4
        assert all(len(line) <= 16 for line in reply.lines)


# --- bounded memory (security rule 7) --------------------------------------------------

def test_number_of_stored_lines_is_bounded_but_the_final_line_is_kept():
    data = b"".join(b"250-line %d\r\n" % i for i in range(500)) + b"250 2.0.0 end\r\n"
    [reply] = feed_whole(data, max_lines=10)
    assert len(reply.lines) == 10
    assert reply.lines[:2] == ("250-line 0", "250-line 1")
    assert reply.lines[-1] == "250 2.0.0 end" and reply.dsn == "2.0.0"
    assert reply.truncated


def test_stored_text_is_bounded():
    data = b"".join(b"550-" + b"z" * 1000 + b"\r\n" for _ in range(50)) + b"550 5.7.1 no\r\n"
    [reply] = feed_whole(data, max_stored=4000)
    assert sum(len(line) for line in reply.lines[:-1]) <= 4000
    assert reply.lines[-1] == "550 5.7.1 no" and reply.dsn == "5.7.1" and reply.truncated


def test_endless_multiline_reply_does_not_grow_memory():
    reader = ReplyReader()
    chunk = b"".join(b"250-this reply never ends %06d\r\n" % i for i in range(1000))
    reader.feed(chunk)                     # warm up
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(200):               # 200,000 more lines, ~7 MB
            assert reader.feed(chunk) == []
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 256 * 1024
    assert reader.buffered < 100
    [reply] = reader.feed(b"250 finally\r\n")
    assert len(reply.lines) == 100 and reply.truncated


def test_endless_line_without_newline_does_not_grow_memory():
    reader = ReplyReader(line_length_limit=2048)
    reader.feed(b"550 ")
    for _ in range(1000):
        assert reader.feed(b"x" * 4096) == []
    assert reader.buffered <= 2049
    [reply] = reader.feed(b"\r\n")
    assert reply.code == 550 and len(reply.text) == 2048 and reply.truncated
