"""What the per-transaction fast path relies on: shared immutable values, caches that
cannot be fooled, non-blocking socket I/O with deadlines, and one write per small body."""

import dataclasses
import socket
import threading
import time

import pytest

from postclient.smtp import driver
from postclient.smtp.commands import Envelope, Rcpt, rcpt_command
from postclient.smtp.ehlo import Capabilities
from postclient.smtp.events import Ready
from postclient.smtp.protocol import Client, Settings, State
from postclient.smtp.reply import Reply, ReplyReader
from postclient.smtp.xtext import quote_821_local, xtext


# --- shared values --------------------------------------------------------------------

def test_equal_short_replies_are_shared_and_long_or_flagged_ones_are_not():
    first, again = ReplyReader().feed(b"250 2.1.0 Ok\r\n250 2.1.0 Ok\r\n")
    assert first is again and first == Reply.make("250 2.1.0 Ok")
    [flagged] = ReplyReader().feed(b"junk\r\n250 2.1.0 Ok\r\n")
    assert flagged.garbage and flagged is not first
    long_line = b"250 " + b"x" * 200 + b"\r\n"
    a, b = ReplyReader().feed(long_line + long_line)
    assert a == b and a is not b
    multi = b"250-a\r\n250 b\r\n"
    c, d = ReplyReader().feed(multi + multi)
    assert c == d and c is not d


def test_a_known_last_line_is_shared_only_as_a_reply_of_its_own():
    known = ReplyReader().feed(b"250 b\r\n")[0]
    [multi] = ReplyReader().feed(b"250-a\r\n250 b\r\n")      # the known line ends a longer reply
    assert multi is not known and multi.lines == ("250-a", "250 b")
    [cut] = ReplyReader(line_length_limit=5).feed(b"250 bbbb\r\n")
    assert cut.text == "250 b" and cut.truncated and cut is not known
    [flagged] = ReplyReader().feed(b"junk\r\n250 b\r\n")
    assert flagged.garbage and flagged is not known
    Reply.make("250-c")                 # not a reply's end: never taken for one
    [continued] = ReplyReader().feed(b"250-c\r\n250 d\r\n")
    assert continued.lines == ("250-c", "250 d")
    reader = ReplyReader()
    assert reader.feed(b"250 b\r\n250 b\r\n") == [known, known]
    assert reader.feed(b"250 b\r\n")[0] is known and not reader.in_reply


def test_shared_replies_stay_bounded():
    from postclient.smtp import reply
    for i in range(3 * reply._RECENT_MAX):
        ReplyReader().feed(b"250 2.0.0 queued as %d\r\n" % i)
    assert len(reply._recent) <= reply._RECENT_MAX


def test_capabilities_from_an_equal_dict_are_shared_but_a_changed_dict_is_not_fooled():
    caps = Capabilities(esmtp=True, pipelining=True, auth=("PLAIN",),
                        xforward=frozenset({"NAME", "ADDR"}))
    data = caps.to_dict()
    first = Capabilities.from_dict(data)
    assert first == caps and Capabilities.from_dict(caps.to_dict()) is first
    data["auth"].append("LOGIN")          # the caller changes its own dict afterwards
    changed = Capabilities.from_dict(data)
    assert changed.auth == ("PLAIN", "LOGIN") and first.auth == ("PLAIN",)
    assert Capabilities.from_dict(dict(caps.to_dict(), pipelining=False)).pipelining is False


@pytest.mark.parametrize("text, specials, expected", [
    ("abc", "", "abc"), ("a+b", "", "a+2Bb"), ("a=b", "=+", "a+3Db"), ("a b", "", "a+20b"),
    ("é", "", "+C3+A9"), ("", "", ""), ("a\x7f", "", "a+7F"),
])
def test_xtext_plain_text_is_returned_as_it_is_and_the_rest_encoded(text, specials, expected):
    assert xtext(text, specials) == expected


def test_cached_quoting_and_orcpt_give_the_same_lines_every_time():
    caps = Capabilities(esmtp=True, dsn=True)
    rcpt = Rcpt('a b@example.com', original="x@y", notify="SUCCESS")
    lines = {rcpt_command(rcpt, caps) for _ in range(3)}
    assert lines == {'RCPT TO:<"a b"@example.com> ORCPT=rfc822;x@y NOTIFY=SUCCESS'}
    assert quote_821_local("") == "" and quote_821_local("a.b@c") == "a.b@c"


# --- the driver's socket I/O -------------------------------------------------------------

@pytest.fixture
def pair():
    """(ours, theirs): a connected socket pair, ours with a small send buffer, closed after."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    yield ours, theirs
    ours.close()
    theirs.close()


def test_connection_read_times_out_at_the_deadline_and_reads_what_arrives(pair):
    ours, theirs = pair
    connection = driver.Connection(ours)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        connection.read(time.monotonic() + 0.2)
    assert 0.15 <= time.monotonic() - started < 2
    with pytest.raises(TimeoutError):
        connection.read(time.monotonic() - 1)
    theirs.sendall(b"250 ok\r\n")
    assert connection.read(time.monotonic() + 5) == b"250 ok\r\n"
    theirs.close()
    assert connection.read(time.monotonic() + 5) == b""


def test_connection_write_sends_everything_even_when_the_socket_buffer_is_full(pair):
    ours, theirs = pair
    data = bytes(range(256)) * 8192             # 2 MiB: many partial sends
    received = bytearray()

    def drain():
        while len(received) < len(data):
            chunk = theirs.recv(65536)
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    connection = driver.Connection(ours)
    connection.write(data, time.monotonic() + 30)
    reader.join(30)
    assert bytes(received) == data and connection.bytes_written == len(data)


def test_connection_write_times_out_when_the_peer_never_reads(pair):
    ours, _ = pair
    connection = driver.Connection(ours)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        connection.write(b"x" * (8 * 1024 * 1024), time.monotonic() + 0.3)
    assert time.monotonic() - started < 3


class _Recorder:
    """A connection whose peer answers at once: records each write."""

    def __init__(self):
        self.writes = []
        self.replies = []
        self.bytes_written = 0

    def write(self, data, deadline):
        self.writes.append(bytes(data))
        if data == b"RSET\r\n":
            self.replies.append(b"250 2.0.0 Ok\r\n")
        elif data.startswith(b"MAIL"):
            self.replies.append(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n")
        elif data.endswith(b"\r\n.\r\n"):
            self.replies.append(b"250 2.0.0 Ok: queued\r\n")

    def read(self, deadline):
        return self.replies.pop(0)

    def close(self):
        pass


def test_a_small_message_goes_as_one_command_group_and_one_body_write():
    caps = Capabilities(esmtp=True, pipelining=True, eightbitmime=True)
    client = Client.resume(Settings(), caps)
    connection = _Recorder()
    assert driver.probe(connection, client)
    content = b"Subject: x\n\n" + b"line\n" * 2000
    envelope = Envelope("s@example.com", [Rcpt("r@example.com")], size=len(content))
    events = driver.run_session(connection, client, envelope, content, driver.SessionOptions(),
                                quit_after=False)
    assert client.state == State.READY and isinstance(events[-1], Ready)
    rset, commands, body = connection.writes
    assert rset == b"RSET\r\n"
    assert commands == b"MAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\nDATA\r\n"
    assert body.startswith(b"Subject: x\r\n\r\nline\r\n") and body.endswith(b"line\r\n.\r\n")


def test_a_batch_parses_its_sites_once_and_replays_them_with_their_end():
    from postclient.smtp import destination, engine
    batch = engine.Batch()
    calls = []
    real = destination.iter_sites

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    destination.iter_sites, saved = counting, destination.iter_sites
    try:
        first = batch.sites("[192.0.2.1]:25, example.com, [bad", "smtp", None)
        assert next(first).text == "[192.0.2.1]:25"       # the first message stops early
        for _ in range(2):                                  # the next ones walk further
            walked = batch.sites("[192.0.2.1]:25, example.com, [bad", "smtp", None)
            assert [next(walked).text, next(walked).text] == ["[192.0.2.1]:25", "example.com"]
            with pytest.raises(destination.DestinationError):
                next(walked)
    finally:
        destination.iter_sites = saved
    assert len(calls) == 1


def test_session_options_for_a_message_are_a_copy_with_its_age():
    base = driver.SessionOptions(line_length_limit=500, pix_delay=3)
    options = base.for_message(42.5)
    assert (options.line_length_limit, options.pix_delay, options.message_age) == (500, 3, 42.5)
    assert options == dataclasses.replace(base, message_age=42.5) and options is not base
    assert base.message_age == 0.0


# --- the delivery log line ------------------------------------------------------------

@pytest.mark.parametrize("digits, expected", [
    (0, ["0", "0", "1", "12", "100"]),
    (1, ["0", "0.1", "1", "12.3", "100"]),
    (2, ["0", "0.1", "1", "12.35", "100"]),
    (6, ["0", "0.1", "1", "12.345678", "100"]),
])
def test_delay_figures_keep_the_resolution_and_drop_trailing_zeros(digits, expected):
    from postclient.smtp.engine import _DELAY_FORMATS
    fmt = _DELAY_FORMATS[digits]          # delay_logging_resolution_limit = digits
    assert [fmt(seconds) for seconds in (0.0, 0.1, 1.0, 12.3456781, 100.0)] == expected
