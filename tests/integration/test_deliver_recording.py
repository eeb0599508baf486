"""The exact bytes postclient sends, recorded by aiosmtpd-based servers (issue 4).

Each test starts a RecordingServer (tests/integration/servers.py) that answers
as its Script says and records every read as it arrived, every reply it wrote,
every command line and every DATA stream byte for byte.  The rules checked are
postfix-behaviour.md §1.2-§1.6 and §3, and security rules 9-11:

  - PIPELINING: "MAIL RCPT... DATA" leaves in one write (one read, before any
    reply to MAIL); groups never exceed 4096 bytes and each waits for the
    replies of the one before; without PIPELINING one command per reply;
  - the DATA stream: CRLF only, dot-stuffed, one final CRLF.CRLF, long lines
    folded at smtp_line_length_limit, 8BITMIME -> 7BIT with quoted-printable;
  - MAIL/RCPT parameters: SIZE, BODY, ENVID, RET, ORCPT, NOTIFY only when
    announced, SIZE left out when downgrading;
  - what each reply means for each recipient, with Postfix's texts.
"""

import email
import email.policy
import time

import pytest

from tests.integration.servers import (ALL_KEYWORDS, MAILBOX_FULL, USER_UNKNOWN, Script,
                                       deliver_now, hangup_server, recording_server,  # noqa: F401
                                       run_cli, write_main_cf)

pytest_plugins = ["tests.integration.dns_server"]     # dnsmasq_server (next-MX test)
pytestmark = pytest.mark.integration

SENDER = "sender@client.test"
PEER = "127.0.0.1[127.0.0.1]"
CONTENT = (b"From: sender@client.test\n"
           b"To: rcpt@recording.test\n"
           b"Subject: recording\n"
           b"\n"
           b"Hello.\n")
NO_PIPELINING = ("SIZE 10240000", "8BITMIME", "DSN", "ENHANCEDSTATUSCODES")
NO_8BITMIME = ("PIPELINING", "SIZE 10240000", "DSN", "ENHANCEDSTATUSCODES")


@pytest.fixture
def config_dir(tmp_path):
    return write_main_cf(tmp_path / "etc")


def deliver(config_dir, server, recipients=("rcpt@recording.test",), content=CONTENT, **options):
    started = time.monotonic()
    outcome, _ = deliver_now(config_dir, options.pop("nexthop", server.nexthop), list(recipients),
                             content, sender=SENDER, **options)
    return outcome, time.monotonic() - started


def summary(outcome):
    return [(r.recipient.address, r.status, r.dsn, r.text) for r in outcome.results]


def wire_form(content, limit=990):
    """The DATA stream the rules of §3 call for (an oracle independent of the codec):
    lines end in LF or CRLF, a bare CR becomes a space (codec docstring), lines over
    ``limit`` are folded (limit bytes, then SPACE + limit-1 bytes ...), a line that
    starts with "." gets another, and the stream ends with ".\\r\\n"."""
    lines = content.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out = []
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        line = line.replace(b"\r", b" ")
        pieces = [line]
        if limit and len(line) > limit:
            pieces = [line[:limit]] + [b" " + line[i:i + limit - 1]
                                       for i in range(limit, len(line), limit - 1)]
        out += [b"." + piece if piece.startswith(b".") else piece for piece in pieces]
    return b"".join(piece + b"\r\n" for piece in out) + b".\r\n"


def rcpt_line(address, dsn=True, notify=""):
    line = f"RCPT TO:<{address}>"
    if dsn:
        line += f" ORCPT=rfc822;{address}"
        if notify:
            line += f" NOTIFY={notify}"
    return (line + "\r\n").encode()


# --- PIPELINING ------------------------------------------------------------------------

def test_pipelining_sends_mail_rcpts_and_data_in_one_write(config_dir, recording_server):
    server = recording_server(Script(ehlo_keywords=ALL_KEYWORDS))
    recipients = ["a@recording.test", "b@recording.test"]
    outcome, _ = deliver(config_dir, server, recipients, encoding="8bit")
    assert [r.status for r in outcome.results] == ["sent", "sent"]

    (session,) = server.wait_sessions(1)
    group = (f"MAIL FROM:<{SENDER}> SIZE={len(CONTENT)} BODY=8BITMIME\r\n".encode()
             + rcpt_line(recipients[0]) + rcpt_line(recipients[1]) + b"DATA\r\n")
    assert session.read_holding(b"MAIL FROM") == group        # one read: one write
    assert session.replies_sent_before(b"MAIL FROM") == 2      # greeting, EHLO: nothing else
    # the body waits for the 354 (DATA is a synchronisation point)
    assert session.replies_sent_before(b"Subject: recording") == 2 + 4
    assert session.verbs() == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]
    (message,) = server.messages
    assert message.raw == wire_form(CONTENT)
    assert message.recipients == recipients


def test_without_pipelining_each_command_waits_for_its_reply(config_dir, recording_server):
    server = recording_server(Script(ehlo_keywords=NO_PIPELINING))
    recipients = ["a@recording.test", "b@recording.test"]
    outcome, _ = deliver(config_dir, server, recipients, encoding="8bit")
    assert [r.status for r in outcome.results] == ["sent", "sent"]

    (session,) = server.wait_sessions(1)
    commands = [f"MAIL FROM:<{SENDER}> SIZE={len(CONTENT)} BODY=8BITMIME\r\n".encode(),
                rcpt_line(recipients[0]), rcpt_line(recipients[1]), b"DATA\r\n"]
    for position, command in enumerate(commands):
        assert session.read_holding(command) == command          # alone in its read
        assert session.replies_sent_before(command) == 2 + position


def greedy_groups(lines, size=4096):
    groups, current = [], b""
    for line in lines:
        if current and len(current) + len(line) > size:
            groups.append(current)
            current = b""
        current += line
    return groups + [current]


def test_pipelined_groups_stay_within_4096_bytes_and_wait_for_replies(config_dir,
                                                                      recording_server):
    server = recording_server(Script(ehlo_keywords=ALL_KEYWORDS))
    recipients = [f"recipient-{n:03d}@a-rather-long-destination-name.recording.test"
                  for n in range(120)]
    outcome, _ = deliver(config_dir, server, recipients)
    assert [r.status for r in outcome.results] == ["sent"] * 120

    (session,) = server.wait_sessions(1)
    lines = ([f"MAIL FROM:<{SENDER}> SIZE={len(CONTENT)}\r\n".encode()]
             + [rcpt_line(r) for r in recipients] + [b"DATA\r\n"])
    expected = greedy_groups(lines)
    assert len(expected) >= 4
    reads = [data for kind, data in session.timeline if kind == "recv"]
    start = next(i for i, data in enumerate(reads) if data.startswith(b"MAIL FROM"))
    assert reads[start:start + len(expected)] == expected
    # each group waits until every reply to the previous groups has been written
    answered = 2
    for group in expected:
        assert session.replies_sent_before(group) == answered
        answered += group.count(b"\r\n")


# --- the DATA stream ---------------------------------------------------------------------

SMUGGLING = (b"Subject: smuggling\n"
             b"\n"
             b".leading dot, CRLF line\r\n"
             b"..two dots\n"
             b"before a lone dot with LF\n"
             b".\n"
             b"between\n"
             b".\r\n"
             b"MAIL FROM:<mallory@evil.test>\r\n"
             b"RCPT TO:<victim@recording.test>\r\n"
             b"DATA\r\n"
             b"forged\n"
             b"\n.\n"
             b"bare\rCR, then CRLF\r\n"
             b"bare LF\nlast line without a newline")


def test_dot_stuffing_and_crlf_normalisation(config_dir, recording_server):
    server = recording_server()
    outcome, _ = deliver(config_dir, server, content=SMUGGLING)
    assert [r.status for r in outcome.results] == ["sent"]

    (session,) = server.wait_sessions(1)
    (message,) = server.messages
    assert message.raw == (b"Subject: smuggling\r\n"
                           b"\r\n"
                           b"..leading dot, CRLF line\r\n"
                           b"...two dots\r\n"
                           b"before a lone dot with LF\r\n"
                           b"..\r\n"
                           b"between\r\n"
                           b"..\r\n"
                           b"MAIL FROM:<mallory@evil.test>\r\n"
                           b"RCPT TO:<victim@recording.test>\r\n"
                           b"DATA\r\n"
                           b"forged\r\n"
                           b"\r\n"
                           b"..\r\n"
                           b"bare CR, then CRLF\r\n"
                           b"bare LF\r\n"
                           b"last line without a newline\r\n"
                           b".\r\n")
    assert message.raw == wire_form(SMUGGLING)
    # nothing in the body became a command
    assert session.verbs() == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    assert all(line.endswith(b"\r\n") and b"\r" not in line[:-2] and b"\n" not in line[:-2]
               for line in session.lines)


def test_stream_boundaries_of_a_large_message_do_not_break_the_rules(config_dir,
                                                                     recording_server):
    """The driver reads stored content in 256 KiB chunks: put a CRLF, a dot line and a
    line to fold across each chunk boundary."""
    chunk = 256 * 1024
    filler = b"f" * 63 + b"\n"

    def pad_to(data, length):
        """``data`` plus filler lines, ``length`` bytes in all, ending in LF."""
        full, rest = divmod(length - len(data), len(filler))
        return data + filler * full + (b"p" * (rest - 1) + b"\n" if rest else b"")

    content = pad_to(b"Subject: boundaries\n\n", chunk - 4) + b"abc\r"    # CR | LF
    content += b"\n.dot line near the start of chunk two\n"
    content = pad_to(content, 2 * chunk)                                 # LF | "."
    content += b".\n"
    content = pad_to(content, 3 * chunk - 500)
    content += b"." + b"L" * 2000 + b"\n"                                # folded across
    content += b"\n.\r\nend\n"
    assert content[chunk - 1:chunk + 1] == b"\r\n"
    assert content[2 * chunk - 1:2 * chunk + 2] == b"\n.\n"

    server = recording_server()
    outcome, _ = deliver(config_dir, server, content=content)
    assert [r.status for r in outcome.results] == ["sent"]
    (message,) = server.messages
    assert message.raw == wire_form(content)


@pytest.mark.parametrize("limit", [990, 100, 0])
def test_long_lines_are_folded_at_smtp_line_length_limit(config_dir, recording_server, limit):
    content = (b"Subject: folding\n\n"
               + b"a" * 990 + b"\n"                 # exactly the default limit: never folded
               + b"b" * 2500 + b"\n"
               + b"." + b"c" * 1200 + b"\n"         # dot-stuffed first piece, then folded
               + b"end\n")
    server = recording_server()
    outcome, _ = deliver(config_dir, server, content=content,
                         overrides=[f"smtp_line_length_limit={limit}"])
    assert [r.status for r in outcome.results] == ["sent"]
    (message,) = server.messages
    assert message.raw == wire_form(content, limit)
    lines = message.raw.split(b"\r\n")
    if limit == 990:
        assert lines[3] == b"b" * 990 and lines[4] == b" " + b"b" * 989
        assert lines[5] == b" " + b"b" * (2500 - 990 - 989)
        assert lines[2] == b"a" * 990
    if limit:
        assert max(len(line.lstrip(b".")) for line in lines) <= limit


# --- MAIL FROM parameters ----------------------------------------------------------------

MAIL_PARAMETERS = [
    # EHLO keywords, body encoding, what follows MAIL FROM:<sender>
    (ALL_KEYWORDS, "8bit", f" SIZE={len(CONTENT)} BODY=8BITMIME"),
    (ALL_KEYWORDS, "7bit", f" SIZE={len(CONTENT)} BODY=7BIT"),
    (ALL_KEYWORDS, "unknown", f" SIZE={len(CONTENT)}"),
    (("PIPELINING", "8BITMIME"), "8bit", " BODY=8BITMIME"),
    (("PIPELINING", "SIZE"), "7bit", f" SIZE={len(CONTENT)}"),       # SIZE without a limit
    (NO_8BITMIME, "7bit", f" SIZE={len(CONTENT)}"),                 # declared 7bit: no downgrade
    (NO_8BITMIME, "8bit", ""),                                       # downgrade: no SIZE
    (NO_8BITMIME, "unknown", ""),                                    # unknown is downgraded too
    (("PIPELINING",), "8bit", ""),
]


@pytest.mark.parametrize("keywords, encoding, parameters", MAIL_PARAMETERS)
def test_mail_from_parameters_follow_the_announced_extensions(config_dir, recording_server,
                                                              keywords, encoding, parameters):
    server = recording_server(Script(ehlo_keywords=keywords))
    outcome, _ = deliver(config_dir, server, encoding=encoding)
    assert [r.status for r in outcome.results] == ["sent"]
    (message,) = server.messages
    assert message.mail_line == f"MAIL FROM:<{SENDER}>{parameters}\r\n".encode()
    dsn = "DSN" in keywords
    assert message.rcpt_lines == [rcpt_line("rcpt@recording.test", dsn=dsn)]


def test_dsn_parameters_from_the_command_line_when_dsn_is_announced(config_dir,
                                                                    recording_server):
    server = recording_server(Script(ehlo_keywords=ALL_KEYWORDS))
    recipients = ["a@recording.test", "b@recording.test"]
    run = run_cli(config_dir, ["--nexthop", server.nexthop, "--sender", SENDER,
                               "--notify", "failure,SUCCESS", "--envid", "Q1 2+3=x",
                               "--ret", "hdrs", *recipients], CONTENT)
    assert run.returncode == 0, run.stderr
    (message,) = server.messages
    assert message.mail_line == (f"MAIL FROM:<{SENDER}> SIZE={len(CONTENT)} "
                                 f"ENVID=Q1+202+2B3+3Dx RET=HDRS\r\n").encode()
    assert message.rcpt_lines == [rcpt_line(r, notify="SUCCESS,FAILURE") for r in recipients]


def test_no_dsn_parameters_when_dsn_is_not_announced(config_dir, recording_server):
    server = recording_server(Script(ehlo_keywords=("PIPELINING", "SIZE 1000000", "8BITMIME")))
    run = run_cli(config_dir, ["--nexthop", server.nexthop, "--sender", SENDER,
                               "--notify", "SUCCESS,FAILURE", "--envid", "Q1", "--ret", "FULL",
                               "--encoding", "7bit", "a@recording.test"], CONTENT)
    assert run.returncode == 0, run.stderr
    (message,) = server.messages
    assert message.mail_line == f"MAIL FROM:<{SENDER}> SIZE={len(CONTENT)} BODY=7BIT\r\n".encode()
    assert message.rcpt_lines == [b"RCPT TO:<a@recording.test>\r\n"]


# --- 8BITMIME -> 7BIT ----------------------------------------------------------------------

TEXT = ("Grüße aus Köln — naïve café, 100 % sûr.\n"
        "Tab\there, trailing space \n"
        "=equals= and a line that is long enough to need a soft line break in "
        "quoted-printable output, because it runs past seventy-six characters.\n"
        ".a line with a leading dot\n")
HTML = "<p>Grüße — <b>ÆØÅ</b></p>\n"
BINARY = bytes(range(256)) * 4


def eight_bit_message():
    import base64
    encoded = base64.encodebytes(BINARY)
    return (b"From: sender@client.test\n"
            b"Subject: downgrade\n"
            b"MIME-Version: 1.0\n"
            b"Content-Type: multipart/mixed; boundary=\"outer\"\n"
            b"Content-Transfer-Encoding: 8bit\n"
            b"\n"
            b"preamble\n"
            b"--outer\n"
            b"Content-Type: text/plain; charset=utf-8\n"
            b"Content-Transfer-Encoding: 8bit\n"
            b"\n" + TEXT.encode() +
            b"--outer\n"
            b"Content-Type: text/html; charset=utf-8\n"
            b"Content-Transfer-Encoding: 8bit\n"
            b"\n" + HTML.encode() +
            b"--outer\n"
            b"Content-Type: application/octet-stream\n"
            b"Content-Transfer-Encoding: base64\n"
            b"\n" + encoded +
            b"--outer--\n")


def test_8bit_message_is_downgraded_to_7bit_without_8bitmime(config_dir, recording_server):
    server = recording_server(Script(ehlo_keywords=NO_8BITMIME))
    outcome, _ = deliver(config_dir, server, content=eight_bit_message(), encoding="8bit")
    assert [r.status for r in outcome.results] == ["sent"]
    (message,) = server.messages
    assert message.mail_line == f"MAIL FROM:<{SENDER}>\r\n".encode()   # no SIZE, no BODY
    assert max(message.raw) < 128, "8-bit byte on the wire"
    assert all(len(line) <= 990 for line in message.raw.split(b"\r\n"))

    original = email.message_from_bytes(eight_bit_message(), policy=email.policy.default)
    parsed = message.email()
    assert parsed["Content-Transfer-Encoding"] == "7bit"             # multipart: 7bit
    plain, html, binary = parsed.iter_parts()
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    assert html["Content-Transfer-Encoding"] == "quoted-printable"
    assert binary["Content-Transfer-Encoding"] == "base64"           # not declared 8bit
    # the decoded parts are the original ones (MIME gives the LF before a boundary to it)
    assert [part.get_content() for part in parsed.iter_parts()] == [
        part.get_content() for part in original.iter_parts()]
    assert plain.get_content() == TEXT[:-1] and html.get_content() == HTML[:-1]
    assert binary.get_content() == BINARY
    assert parsed["Subject"] == "downgrade" and parsed.preamble == original.preamble


def test_single_part_downgrade_uses_quoted_printable(config_dir, recording_server):
    content = (b"Subject: one part\n"
               b"Content-Type: text/plain; charset=utf-8\n"
               b"Content-Transfer-Encoding: 8bit\n"
               b"\n" + TEXT.encode())
    server = recording_server(Script(ehlo_keywords=NO_8BITMIME))
    outcome, _ = deliver(config_dir, server, content=content, encoding="8bit")
    assert [r.status for r in outcome.results] == ["sent"]
    (message,) = server.messages
    assert max(message.raw) < 128
    parsed = message.email()
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert parsed.get_content() == TEXT


DOTTY = "".join("ü" + "a" * n + "." * 12 + "\n" for n in range(55, 80))   # dots near QP breaks


def test_downgrade_dot_stuffs_the_lines_quoted_printable_makes(config_dir, recording_server):
    content = (b"Subject: dots\n"
               b"Content-Type: text/plain; charset=utf-8\n"
               b"Content-Transfer-Encoding: 8bit\n"
               b"\n" + DOTTY.encode())
    server = recording_server(Script(ehlo_keywords=NO_8BITMIME))
    outcome, _ = deliver(config_dir, server, content=content, encoding="8bit")
    assert [r.status for r in outcome.results] == ["sent"]
    (message,) = server.messages
    wire_lines = message.raw.split(b"\r\n")
    assert any(line.startswith(b"..") for line in wire_lines), "no QP line began with a dot"
    assert max(len(line) for line in wire_lines) <= 77
    assert message.email().get_content() == DOTTY


def test_nested_message_is_downgraded_too(config_dir, recording_server):
    inner = ("Subject: inner\n"
             "Content-Type: text/plain; charset=utf-8\n"
             "Content-Transfer-Encoding: 8bit\n"
             "\n"
             "Innerer Text: Grüße.\n").encode()
    content = (b"Subject: outer\n"
               b"MIME-Version: 1.0\n"
               b"Content-Type: multipart/mixed; boundary=b1\n"
               b"\n"
               b"--b1\n"
               b"Content-Type: message/rfc822\n"
               b"Content-Transfer-Encoding: 8bit\n"
               b"\n" + inner +
               b"--b1--\n")
    server = recording_server(Script(ehlo_keywords=NO_8BITMIME))
    outcome, _ = deliver(config_dir, server, content=content, encoding="8bit")
    assert [r.status for r in outcome.results] == ["sent"]
    (message,) = server.messages
    assert max(message.raw) < 128
    (part,) = message.email().iter_parts()
    assert part["Content-Transfer-Encoding"] == "7bit"             # message/*: 7bit
    nested = part.get_content()
    assert nested["Subject"] == "inner"
    assert nested["Content-Transfer-Encoding"] == "quoted-printable"
    assert nested.get_content() == "Innerer Text: Grüße."


def test_no_downgrade_when_the_server_has_8bitmime(config_dir, recording_server):
    server = recording_server(Script(ehlo_keywords=ALL_KEYWORDS))
    content = eight_bit_message()
    outcome, _ = deliver(config_dir, server, content=content, encoding="8bit")
    assert [r.status for r in outcome.results] == ["sent"]
    (message,) = server.messages
    assert message.raw == wire_form(content)
    assert message.mail_line.endswith(b" BODY=8BITMIME\r\n")


def test_undeclared_8bit_bytes_pass_unchanged(config_dir, recording_server):
    content = "Subject: no MIME headers\n\nGrüße — undeclared 8-bit text.\n".encode()
    server = recording_server(Script(ehlo_keywords=NO_8BITMIME))
    outcome, _ = deliver(config_dir, server, content=content, encoding="8bit")
    assert [r.status for r in outcome.results] == ["sent"]
    (message,) = server.messages
    assert message.raw == wire_form(content)


# --- what the replies mean for the recipients ------------------------------------------------

def said(reply, command):
    return f"host {PEER} said: {reply} (in reply to {command} command)"


@pytest.mark.parametrize("keywords, verbs", [
    (ALL_KEYWORDS, ["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "RSET", "QUIT"]),
    (NO_PIPELINING, ["EHLO", "MAIL", "RCPT", "RCPT", "RSET", "QUIT"]),
], ids=["pipelining", "no-pipelining"])
def test_all_recipients_rejected_sends_rset_and_no_body(config_dir, recording_server, keywords,
                                                        verbs):
    a, b = "a@recording.test", "b@recording.test"
    server = recording_server(Script(ehlo_keywords=keywords,
                                     rcpt_replies={a: USER_UNKNOWN, b: MAILBOX_FULL}))
    outcome, _ = deliver(config_dir, server, [a, b])
    assert summary(outcome) == [
        (a, "bounced", "5.1.1", said(USER_UNKNOWN.format(rcpt=a), "RCPT TO")),
        (b, "deferred", "4.2.2", said(MAILBOX_FULL.format(rcpt=b), "RCPT TO"))]
    (session,) = server.wait_sessions(1)
    assert session.verbs() == verbs
    assert server.messages == [] and session.partial_body is None


def test_354_without_accepted_recipients_gets_a_lone_dot(config_dir, recording_server):
    a = "a@recording.test"
    server = recording_server(Script(rcpt_replies={a: USER_UNKNOWN},
                                     data_without_recipients=None))    # a lenient server
    outcome, _ = deliver(config_dir, server, [a])
    assert summary(outcome) == [(a, "bounced", "5.1.1",
                                 said(USER_UNKNOWN.format(rcpt=a), "RCPT TO"))]
    (message,) = server.messages
    assert message.raw == b".\r\n"                # no content, and nobody "sent" by its 250


def test_one_recipient_rejected_the_others_delivered(config_dir, recording_server):
    a, b, c = "a@recording.test", "b@recording.test", "c@recording.test"
    server = recording_server(Script(rcpt_replies={b: USER_UNKNOWN, c: MAILBOX_FULL}))
    outcome, _ = deliver(config_dir, server, [a, b, c])
    assert summary(outcome) == [
        (a, "sent", "2.0.0", "250 2.0.0 Ok: queued as REC0001"),
        (b, "bounced", "5.1.1", said(USER_UNKNOWN.format(rcpt=b), "RCPT TO")),
        (c, "deferred", "4.2.2", said(MAILBOX_FULL.format(rcpt=c), "RCPT TO"))]
    (message,) = server.messages
    assert message.recipients == [a] and len(message.rcpt_lines) == 3
    assert message.raw == wire_form(CONTENT)


def test_cli_exit_69_when_some_bounced_and_none_deferred(config_dir, recording_server):
    a, b = "a@recording.test", "b@recording.test"
    server = recording_server(Script(rcpt_replies={b: USER_UNKNOWN}))
    run = run_cli(config_dir, ["--nexthop", server.nexthop, "--sender", SENDER, a, b], CONTENT)
    assert run.returncode == 69, run.stderr
    assert [(r["recipient"], r["status"], r["dsn"]) for r in run.results] == [
        (a, "sent", "2.0.0"), (b, "bounced", "5.1.1")]


def test_250_to_data_is_a_protocol_error(config_dir, recording_server):
    server = recording_server(Script(data_reply="250 2.0.0 Ok"))
    outcome, _ = deliver(config_dir, server)
    assert summary(outcome) == [("rcpt@recording.test", "bounced", "5.5.0",
                                 "Protocol error: " + said("250 2.0.0 Ok", "DATA"))]
    assert server.messages == []


def test_lmtp_one_reply_per_accepted_recipient(config_dir, recording_server):
    a, b, c, d = (f"{name}@recording.test" for name in "abcd")
    server = recording_server(Script(
        lmtp=True, rcpt_replies={b: USER_UNKNOWN},
        lmtp_dot_replies={a: "250 2.1.5 <{rcpt}> delivered", c: MAILBOX_FULL,
                          d: "554 5.7.1 <{rcpt}>: rejected by policy"}))
    outcome, elapsed = deliver(config_dir, server, [a, b, c, d], protocol="lmtp",
                               nexthop=server.lmtp_nexthop,
                               overrides=["lmtp_data_done_timeout=3s"])
    assert summary(outcome) == [
        (a, "sent", "2.1.5", f"250 2.1.5 <{a}> delivered"),
        (b, "bounced", "5.1.1", said(USER_UNKNOWN.format(rcpt=b), "RCPT TO")),
        (c, "deferred", "4.2.2", said(MAILBOX_FULL.format(rcpt=c), "end of DATA")),
        (d, "bounced", "5.7.1", said(f"554 5.7.1 <{d}>: rejected by policy", "end of DATA"))]
    assert elapsed < 2.5                          # three replies awaited, not four
    (session,) = server.wait_sessions(1)
    assert session.verbs() == ["LHLO", "MAIL", "RCPT", "RCPT", "RCPT", "RCPT", "DATA", "QUIT"]
    assert session.lines[0] == b"LHLO client.postclient.test\r\n"


def test_lmtp_hangup_after_the_first_reply_delivers_only_that_recipient(config_dir,
                                                                        recording_server):
    """Security rules 1 and 2: only a recipient's own 2xx after "." delivers it."""
    a, b, c = (f"{name}@recording.test" for name in "abc")
    server = recording_server(Script(lmtp=True, lmtp_hangup_after=1))
    outcome, reported = deliver_now(config_dir, server.lmtp_nexthop, [a, b, c], CONTENT,
                                    sender=SENDER, protocol="lmtp")
    lost = (f"lost connection with {PEER} while sending end of data -- "
            f"message may be sent more than once")
    assert summary(outcome) == [(a, "sent", "2.0.0", "250 2.0.0 Ok: queued as REC0001"),
                                (b, "deferred", "4.4.2", lost), (c, "deferred", "4.4.2", lost)]
    # a was reported (for its done mark) before anything was decided about the others
    assert [(index, result.status) for index, result in reported] == [
        (0, "sent"), (1, "deferred"), (2, "deferred")]


@pytest.mark.parametrize("reply, dsn", [
    ("550-5.1.1 The account that you tried to reach does not exist.\r\n"
     "550 5.1.1 Please check the address.", "5.1.1"),
    ("550 4.1.1 class mismatch", "5.0.0"),
    ("450 no enhanced status code", "4.0.0"),
])
def test_reply_texts_and_enhanced_codes(config_dir, recording_server, reply, dsn):
    server = recording_server(Script(rcpt_reply=reply))
    outcome, _ = deliver(config_dir, server)
    text = reply.replace("\r\n", " ")             # lines joined with a space, as Postfix logs
    assert summary(outcome) == [("rcpt@recording.test", "bounced" if reply[0] == "5" else
                                 "deferred", dsn, said(text, "RCPT TO"))]


BIG = b"Subject: big\n\n" + (b"y" * 78 + b"\n") * 100_000                  # 8 MB


def test_connection_reset_during_the_body_defers(config_dir, hangup_server):
    server = hangup_server()
    outcome, elapsed = deliver(config_dir, server, content=BIG)
    assert summary(outcome) == [("rcpt@recording.test", "deferred", "4.4.2",
                                 f"lost connection with {PEER} while sending message body")]
    assert elapsed < 5


def test_premature_reply_during_the_body_is_read_after_the_write_fails(config_dir,
                                                                        hangup_server):
    server = hangup_server(premature=b"552 5.3.4 Message size exceeds fixed limit\r\n")
    outcome, _ = deliver(config_dir, server, content=BIG)
    assert summary(outcome) == [("rcpt@recording.test", "bounced", "5.3.4",
                                 said("552 5.3.4 Message size exceeds fixed limit",
                                      "end of DATA"))]


# --- the handshake --------------------------------------------------------------------------

def test_ehlo_5xx_falls_back_to_helo(config_dir, recording_server):
    server = recording_server(Script(ehlo_reply="502 5.5.2 Error: command not recognized"))
    outcome, _ = deliver(config_dir, server, ["a@recording.test", "b@recording.test"],
                         encoding="7bit")
    assert [r.status for r in outcome.results] == ["sent", "sent"]
    (session,) = server.wait_sessions(1)
    assert session.commands() == ["EHLO client.postclient.test", "HELO client.postclient.test",
                                  f"MAIL FROM:<{SENDER}>", "RCPT TO:<a@recording.test>",
                                  "RCPT TO:<b@recording.test>", "DATA", "QUIT"]
    # no PIPELINING after HELO: each command after the previous reply
    for position, command in enumerate([b"MAIL FROM", b"RCPT TO:<a", b"RCPT TO:<b", b"DATA"]):
        assert session.replies_sent_before(command) == 3 + position


def test_ehlo_and_helo_5xx_bounce_everyone(config_dir, recording_server):
    server = recording_server(Script(ehlo_reply="550 5.7.1 go away",
                                     helo_reply="550 5.7.1 really, go away"))
    outcome, _ = deliver(config_dir, server)
    assert summary(outcome) == [("rcpt@recording.test", "bounced", "5.7.1",
                                 f"host {PEER} refused to talk to me: 550 5.7.1 really, go away")]
    (session,) = server.wait_sessions(1)
    assert "MAIL" not in session.verbs()


@pytest.mark.parametrize("skip_5xx, status, dsn", [("yes", "deferred", "4.7.1"),
                                                   ("no", "bounced", "5.7.1")])
def test_5xx_greeting(config_dir, recording_server, skip_5xx, status, dsn):
    server = recording_server(Script(greeting="554 5.7.1 No SMTP service here"))
    outcome, _ = deliver(config_dir, server, overrides=[f"smtp_skip_5xx_greeting={skip_5xx}"])
    assert summary(outcome) == [("rcpt@recording.test", status, dsn,
                                 f"host {PEER} refused to talk to me: "
                                 f"554 5.7.1 No SMTP service here")]
    (session,) = server.wait_sessions(1)
    assert not {"EHLO", "HELO", "MAIL"} & set(session.verbs())


def test_5xx_greeting_and_4xx_rcpt_move_on_to_the_next_mx(tmp_path, recording_server,
                                                        dnsmasq_server):
    """mx-order.test: MX 10 mx1 (127.0.0.2), 20 mx2 (127.0.0.3), 30 mx3 (127.0.0.4)."""
    from tests.integration.servers import free_tcp_port

    port = free_tcp_port("127.0.0.2", "127.0.0.3", "127.0.0.4")
    a, b = "a@mx-order.test", "b@mx-order.test"
    mx1 = recording_server(Script(greeting="554 5.7.1 No SMTP service here"),
                           host="127.0.0.2", port=port)
    mx2 = recording_server(Script(rcpt_replies={b: "451 4.7.1 <{rcpt}>: try again later"}),
                           host="127.0.0.3", port=port)
    mx3 = recording_server(host="127.0.0.4", port=port)
    config_dir = write_main_cf(tmp_path / "etc",
                               dns_resolver_addresses=dnsmasq_server.resolver_address)
    outcome, _ = deliver(config_dir, mx1, [a, b], nexthop=f"mx-order.test:{port}")
    assert [(r.status, r.relay) for r in outcome.results] == [
        ("sent", f"mx2.mx-order.test[127.0.0.3]:{port}"),
        ("sent", f"mx3.mx-order.test[127.0.0.4]:{port}")]
    assert [m.recipients for m in mx2.messages] == [[a]]
    assert [m.recipients for m in mx3.messages] == [[b]]       # only the one mx2 deferred
    assert mx1.messages == []


def test_4xx_rcpt_on_the_last_server_defers(tmp_path, recording_server, dnsmasq_server):
    """smtp_mx_session_limit (2): the second session is the last, so it is final."""
    from tests.integration.servers import free_tcp_port

    port = free_tcp_port("127.0.0.2", "127.0.0.3", "127.0.0.4")
    b = "b@mx-order.test"
    busy = Script(rcpt_replies={b: "451 4.7.1 <{rcpt}>: try again later"})
    servers = [recording_server(busy, host=f"127.0.0.{n}", port=port) for n in (2, 3, 4)]
    config_dir = write_main_cf(tmp_path / "etc",
                               dns_resolver_addresses=dnsmasq_server.resolver_address)
    outcome, _ = deliver(config_dir, servers[0], [b], nexthop=f"mx-order.test:{port}")
    assert summary(outcome) == [
        (b, "deferred", "4.7.1",
         f"host mx2.mx-order.test[127.0.0.3] said: 451 4.7.1 <{b}>: try again later "
         f"(in reply to RCPT TO command)")]
    assert [len(s.sessions) for s in servers] == [1, 1, 0]

    outcome, _ = deliver(config_dir, servers[0], [b], nexthop=f"mx-order.test:{port}",
                         overrides=["smtp_mx_session_limit=0"])
    assert outcome.results[0].text.startswith("host mx3.mx-order.test[127.0.0.4] said: 451")
    assert [len(s.sessions) for s in servers] == [2, 2, 1]


FIRST_MX_TROUBLE = [
    # what mx1 does, and whether the recipients move on (soft) or bounce there (hard)
    (Script(greeting="554 5.7.1 No SMTP service here"), "next"),       # skip_5xx_greeting
    (Script(greeting="421 4.3.2 Service shutting down"), "next"),
    (Script(ehlo_reply="421 4.3.2 Service shutting down"), "next"),
    (Script(mail_reply="451 4.3.0 Temporary failure"), "next"),
    (Script(data_reply="451 4.3.0 Temporary failure"), "next"),
    (Script(dot_reply="451 4.3.0 Temporary failure"), "next"),
    (Script(mail_reply="550 5.7.1 Sender rejected"), "bounce"),
    (Script(data_reply="554 5.7.1 Transaction failed"), "bounce"),
    (Script(dot_reply="554 5.7.1 Message rejected"), "bounce"),
]


@pytest.mark.parametrize("script, fate", FIRST_MX_TROUBLE,
                         ids=["greeting-5xx", "greeting-4xx", "ehlo-421", "mail-4xx", "data-4xx",
                              "dot-4xx", "mail-5xx", "data-5xx", "dot-5xx"])
def test_first_mx_trouble_follows_the_policy_table(tmp_path, recording_server, dnsmasq_server,
                                                   script, fate):
    """postfix-behaviour.md §1.6: soft trouble on a non-final MX moves every recipient to
    the next MX; a hard reply bounces them at once, even there."""
    from tests.integration.servers import free_tcp_port

    port = free_tcp_port("127.0.0.2", "127.0.0.3")
    mx1 = recording_server(script, host="127.0.0.2", port=port)
    mx2 = recording_server(host="127.0.0.3", port=port)
    config_dir = write_main_cf(tmp_path / "etc",
                               dns_resolver_addresses=dnsmasq_server.resolver_address)
    recipients = ["a@mx-order.test", "b@mx-order.test"]
    outcome, _ = deliver(config_dir, mx1, recipients, nexthop=f"mx-order.test:{port}")
    if fate == "next":
        assert [(r.status, r.relay) for r in outcome.results] == [
            ("sent", f"mx2.mx-order.test[127.0.0.3]:{port}")] * 2
        assert [m.recipients for m in mx2.messages] == [recipients]
    else:
        assert [(r.status, r.dsn[0], r.relay) for r in outcome.results] == [
            ("bounced", "5", f"mx1.mx-order.test[127.0.0.2]:{port}")] * 2
        assert outcome.results[0].text.startswith("host mx1.mx-order.test[127.0.0.2] said: 5")
        assert mx2.sessions == []


def test_connect_refused_defers_with_4_4_1(config_dir):
    from tests.integration.servers import free_tcp_port

    port = free_tcp_port()                              # nothing listens there
    outcome, _ = deliver_now(config_dir, f"[127.0.0.1]:{port}", ["a@recording.test"], CONTENT)
    assert summary(outcome) == [("a@recording.test", "deferred", "4.4.1",
                                 f"connect to {PEER}:{port}: Connection refused")]
    assert outcome.destination_down is not None


def test_pix_greeting_disables_esmtp(config_dir, recording_server):
    server = recording_server(Script(greeting="220 ****************************0*2**0*"))
    outcome, _ = deliver(config_dir, server, encoding="8bit")
    assert [r.status for r in outcome.results] == ["sent"]
    (session,) = server.wait_sessions(1)
    assert session.commands()[:2] == ["HELO client.postclient.test", f"MAIL FROM:<{SENDER}>"]


def test_size_limit_of_the_server_bounces_before_mail(config_dir, recording_server):
    limit = len(CONTENT) - 1
    server = recording_server(Script(ehlo_keywords=("PIPELINING", f"SIZE {limit}")))
    outcome, _ = deliver(config_dir, server)
    assert summary(outcome) == [("rcpt@recording.test", "bounced", "5.3.4",
                                 f"message size {len(CONTENT)} exceeds size limit {limit} "
                                 f"of server {PEER}")]
    (session,) = server.wait_sessions(1)
    assert session.verbs() == ["EHLO", "QUIT"]


# --- CR, LF and NUL never reach the wire (security rule 10) -----------------------------------

@pytest.mark.parametrize("sender, recipients, overrides, expected", [
    ("s@client.test\r\nRCPT TO:<mallory@evil.test>", ["a@recording.test"], [],
     [("bounced", "5.1.7")]),
    (SENDER, ["a@recording.test\nRCPT TO:<mallory@evil.test>", "b\0@recording.test"], [],
     [("bounced", "5.1.3"), ("bounced", "5.1.3")]),
    (SENDER, ["a@recording.test"], ["smtp_helo_name=client\rRSET"], [("deferred", "4.3.5")]),
], ids=["sender", "recipients", "helo-name"])
def test_cr_lf_nul_refused_before_connecting(config_dir, recording_server, sender, recipients,
                                             overrides, expected):
    server = recording_server()
    outcome, _ = deliver_now(config_dir, server.nexthop, recipients, CONTENT, sender=sender,
                             overrides=overrides)
    assert [(r.status, r.dsn) for r in outcome.results] == expected, summary(outcome)
    assert {r.relay for r in outcome.results} == {"none"}
    time.sleep(0.2)
    assert server.sessions == []                 # no connection at all


def test_a_recipient_with_crlf_does_not_stop_the_others(config_dir, recording_server):
    server = recording_server()
    bad, good = "a@recording.test\r\nRCPT TO:<mallory@evil.test>", "b@recording.test"
    outcome, _ = deliver_now(config_dir, server.nexthop, [bad, good], CONTENT, sender=SENDER)
    # security rule 10 refuses the bad one before connecting; rule 11/15: only that one
    assert [(r.status, r.dsn) for r in outcome.results] == [("bounced", "5.1.3"),
                                                           ("sent", "2.0.0")], summary(outcome)
    (session,) = server.wait_sessions(1)
    assert b"mallory" not in session.raw
    assert session.commands()[1:3] == [f"MAIL FROM:<{SENDER}> SIZE={len(CONTENT)}",
                                       "RCPT TO:<b@recording.test> ORCPT=rfc822;b@recording.test"]
