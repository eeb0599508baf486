"""Delivery against Postfix's smtp-sink and its fault options (issue 4).

The engine (postclient.smtp.engine.deliver, main.cf in a temporary directory)
and the ``postclient deliver`` command (a subprocess: exit codes and JSON
lines) talk to a real smtp-sink started on 127.0.0.1 by the ``smtp_sink``
fixture (tests/integration/servers.py).  The expected texts are Postfix's
(postfix-behaviour.md §1.4-§1.6): "host H[A] said: <reply> (in reply to <command>)",
"lost connection with H[A] while <state>", "conversation with H[A] timed out
while <state>".  smtp-sink names: -r soft-rejects and -f hard-rejects the listed
commands (both imply -p, no PIPELINING), -q hangs up after a command without a
reply, -Q answers 421 and hangs up, -w/-W delay replies, -A aborts with 550
after DATA, -L speaks LMTP.
"""

import re
import time

import pytest

from tests.integration.servers import deliver_now, run_cli, smtp_sink, write_main_cf  # noqa: F401

pytestmark = pytest.mark.integration

RECIPIENTS = ["alice@sink.test", "bob@sink.test", "carol@sink.test"]
SENDER = "sender@client.test"
MESSAGE = (b"From: sender@client.test\n"
           b"To: alice@sink.test, bob@sink.test, carol@sink.test\n"
           b"Subject: sink test\n"
           b"\n"
           b"First line.\n"
           b".A line that starts with a dot\n"
           b"Last line.\n")
PEER = "127.0.0.1[127.0.0.1]"
SOFT_REPLY = "450 4.3.0 Error: command failed"          # smtp-sink's default -r reply
HARD_REPLY = "500 5.3.0 Error: command failed"          # smtp-sink's default -f reply


@pytest.fixture
def config_dir(tmp_path):
    return write_main_cf(tmp_path / "etc")


def deliver(config_dir, sink, recipients=RECIPIENTS, content=MESSAGE, **options):
    started = time.monotonic()
    outcome, reported = deliver_now(config_dir, options.pop("nexthop", sink.nexthop), recipients,
                                    content, sender=SENDER, **options)
    return outcome, reported, time.monotonic() - started


def summary(outcome):
    return [(r.recipient.address, r.status, r.dsn, r.text) for r in outcome.results]


def relay(sink):
    return f"{PEER}:{sink.port}"


# --- plain delivery ------------------------------------------------------------------

def test_plain_delivery_of_several_recipients(config_dir, smtp_sink, caplog):
    sink = smtp_sink()
    caplog.set_level("INFO", logger="postclient")
    outcome, reported, _ = deliver(config_dir, sink, encoding="8bit")

    assert summary(outcome) == [(r, "sent", "2.0.0", "250 2.0.0 Ok") for r in RECIPIENTS]
    assert {r.relay for r in outcome.results} == {relay(sink)}
    assert outcome.destination_down is None
    # on_result saw each recipient exactly once (the queue marks it done there)
    assert sorted(index for index, _ in reported) == [0, 1, 2]

    (message,) = sink.messages(count=1)
    assert message.client_proto == "ESMTP"
    assert message.helo_args == "client.postclient.test"
    assert message.mail_args == f"<{SENDER}> BODY=8BITMIME"
    # smtp-sink announces DSN: ORCPT (from the original address) goes with each RCPT
    assert message.rcpt_args == [f"<{r}> ORCPT=rfc822;{r}" for r in RECIPIENTS]
    assert message.content == MESSAGE              # dot-stuffed on the wire, unstuffed by the sink
    assert sink.verbs() == ["CONNECT", "EHLO", "MAIL", "RCPT", "RCPT", "RCPT", "DATA", ".",
                            "QUIT", "DISCONNECT"]

    lines = [rec.getMessage() for rec in caplog.records if "status=" in rec.getMessage()]
    assert len(lines) == 3
    for line, recipient in zip(lines, RECIPIENTS):
        assert re.fullmatch(rf"TESTQUEUEID: to=<{re.escape(recipient)}>, "
                            rf"relay={re.escape(relay(sink))}, delay=[0-9.]+, "
                            rf"delays=[0-9.]+/[0-9.]+/[0-9.]+/[0-9.]+, dsn=2\.0\.0, "
                            rf"status=sent \(250 2\.0\.0 Ok\)", line), line


def test_cli_delivery_prints_one_json_line_per_recipient_and_exits_0(config_dir, smtp_sink,
                                                                     tmp_path):
    sink = smtp_sink()
    maillog = tmp_path / "maillog"
    run = run_cli(config_dir, ["--nexthop", sink.nexthop, "--sender", SENDER, *RECIPIENTS],
                  MESSAGE, overrides=[f"maillog_file={maillog}"])
    assert run.returncode == 0, run.stderr
    assert run.results == [{"recipient": r, "status": "sent", "dsn": "2.0.0", "relay": relay(sink),
                            "text": "250 2.0.0 Ok"} for r in RECIPIENTS]
    (message,) = sink.messages(count=1)
    assert message.content == MESSAGE
    assert message.mail_args == f"<{SENDER}>"      # encoding unknown: no BODY=
    log = maillog.read_text()
    assert len(re.findall(r"postclient/smtp\[\d+\]: [0-9A-F]+: to=<[a-z]+@sink\.test>, "
                          rf"relay={re.escape(relay(sink))}, .*dsn=2\.0\.0, status=sent "
                          r"\(250 2\.0\.0 Ok\)", log)) == 3, log


# --- replies that reject a command (-r soft, -f hard) ----------------------------------------

REJECTS = [
    # smtp-sink option and command, the recipients' fate, the "(in reply to ...)" text
    ("-r", "mail", "deferred", "MAIL FROM command"),
    ("-f", "mail", "bounced", "MAIL FROM command"),
    ("-r", "rcpt", "deferred", "RCPT TO command"),
    ("-f", "rcpt", "bounced", "RCPT TO command"),
    ("-r", "data", "deferred", "DATA command"),
    ("-f", "data", "bounced", "DATA command"),
    ("-r", ".", "deferred", "end of DATA command"),
    ("-f", ".", "bounced", "end of DATA command"),
]


@pytest.mark.parametrize("option, command, status, in_reply_to", REJECTS,
                         ids=[f"{o}{c}" for o, c, _, _ in REJECTS])
def test_rejected_command_defers_or_bounces_with_postfix_text(config_dir, smtp_sink, option,
                                                              command, status, in_reply_to):
    sink = smtp_sink(option, command)
    outcome, _, _ = deliver(config_dir, sink)
    reply = SOFT_REPLY if option == "-r" else HARD_REPLY
    dsn = "4.3.0" if option == "-r" else "5.3.0"
    expected = f"host {PEER} said: {reply} (in reply to {in_reply_to})"
    assert summary(outcome) == [(r, status, dsn, expected) for r in RECIPIENTS]
    assert {r.relay for r in outcome.results} == {relay(sink)}
    verbs = sink.verbs()
    # course correction (§1.4): RSET instead of what a refusal makes pointless
    if command == "mail":
        assert verbs[2:] == ["MAIL", "RSET", "QUIT", "DISCONNECT"]
    elif command == "rcpt":
        assert verbs[2:] == ["MAIL", "RCPT", "RCPT", "RCPT", "RSET", "QUIT", "DISCONNECT"]
    elif command == "data":
        assert verbs[2:] == ["MAIL", "RCPT", "RCPT", "RCPT", "DATA", "RSET", "QUIT",
                             "DISCONNECT"]
    else:
        assert verbs[2:] == ["MAIL", "RCPT", "RCPT", "RCPT", "DATA", ".", "QUIT", "DISCONNECT"]


def test_hard_reject_with_a_real_reply_text_keeps_its_enhanced_code(config_dir, smtp_sink):
    sink = smtp_sink("-B", "550 5.1.1 Error: no such user here", "-f", "rcpt")
    outcome, _, _ = deliver(config_dir, sink)
    assert summary(outcome) == [
        (r, "bounced", "5.1.1",
         f"host {PEER} said: 550 5.1.1 Error: no such user here (in reply to RCPT TO command)")
        for r in RECIPIENTS]
    assert outcome.results[0].reply.startswith("550 5.1.1")


def test_soft_bounce_turns_the_hard_reject_into_a_deferral(config_dir, smtp_sink):
    sink = smtp_sink("-f", "rcpt")
    outcome, _, _ = deliver(config_dir, sink, overrides=["soft_bounce=yes"])
    assert [(r.status, r.dsn) for r in outcome.results] == [("deferred", "4.3.0")] * 3
    assert all("said: 500 5.3.0 Error: command failed (in reply to RCPT TO command)" in r.text
               for r in outcome.results)


@pytest.mark.parametrize("option, expected_code", [("-r", 75), ("-f", 69)])
def test_cli_exit_status_for_deferred_and_bounced(config_dir, smtp_sink, option, expected_code):
    sink = smtp_sink(option, "rcpt")
    run = run_cli(config_dir, ["--nexthop", sink.nexthop, "--sender", SENDER, *RECIPIENTS[:2]],
                  MESSAGE)
    assert run.returncode == expected_code, run.stderr
    status = "deferred" if option == "-r" else "bounced"
    assert [(r["recipient"], r["status"], r["relay"]) for r in run.results] == [
        (r, status, relay(sink)) for r in RECIPIENTS[:2]]
    assert all(r["text"].endswith("(in reply to RCPT TO command)") for r in run.results)


@pytest.mark.parametrize("args, complaint", [
    ([], "expected at least one RECIPIENT"),
    (["--notify", "SOMETIMES", "alice@sink.test"], "bad --notify"),
    (["alice@sink.test\r\nRCPT TO:<mallory@evil.test>"], "CR, LF or NUL"),
    (["--sender", "s@client.test\nRCPT TO:<mallory@evil.test>", "alice@sink.test"],
     "CR, LF or NUL"),
    (["--ret", "MAYBE", "alice@sink.test"], "invalid choice"),
])
def test_cli_bad_usage_exits_64_without_connecting(config_dir, smtp_sink, args, complaint):
    sink = smtp_sink()
    run = run_cli(config_dir, ["--nexthop", sink.nexthop, *args], MESSAGE)
    assert run.returncode == 64, (run.stdout, run.stderr)
    assert complaint in run.stderr
    assert run.results == []
    time.sleep(0.1)
    assert sink.commands() == []                    # no connection at all


def test_cli_overrides_before_and_after_deliver_both_apply(config_dir, smtp_sink, tmp_path):
    """main.py: -o may come before or after the subcommand; both must count."""
    sink = smtp_sink("-p", "-w", "3")
    maillog = tmp_path / "maillog"
    run = run_cli(config_dir, ["--nexthop", sink.nexthop, "--sender", SENDER, RECIPIENTS[0]],
                  MESSAGE, before=["-o", f"maillog_file={maillog}"],
                  overrides=["smtp_data_init_timeout=1s"])
    assert run.returncode == 75, run.stderr
    assert "timed out while sending DATA command" in run.results[0]["text"]
    assert maillog.exists() and "status=deferred" in maillog.read_text()


# --- the server hangs up (-q) or says 421 (-Q) ---------------------------------------------

HANGUPS = [
    ("connect", "receiving the initial server greeting"),
    ("ehlo", "performing the EHLO handshake"),
    ("mail", "sending MAIL FROM"),
    ("rcpt", "sending RCPT TO"),
    ("data", "sending DATA command"),
    (".", "sending end of data -- message may be sent more than once"),
]


@pytest.mark.parametrize("command, state", HANGUPS, ids=[c for c, _ in HANGUPS])
def test_disconnect_after_a_command_defers_with_lost_connection(config_dir, smtp_sink, command,
                                                                state):
    # -p: one command at a time, so the state is that of the command the sink hung up on
    sink = smtp_sink("-p", "-q", command)
    outcome, _, _ = deliver(config_dir, sink)
    assert summary(outcome) == [
        (r, "deferred", "4.4.2", f"lost connection with {PEER} while {state}") for r in RECIPIENTS]
    # security rule 1: an unconfirmed recipient is never sent nor bounced; I/O trouble on
    # the final server suspends the destination
    assert outcome.destination_down is not None and outcome.destination_down.dsn == "4.4.2"


def test_disconnect_inside_a_pipelined_group_names_the_oldest_unanswered_command(config_dir,
                                                                                   smtp_sink):
    sink = smtp_sink("-q", "rcpt")                   # PIPELINING announced
    outcome, _, _ = deliver(config_dir, sink)
    assert summary(outcome) == [
        (r, "deferred", "4.4.2", f"lost connection with {PEER} while sending RCPT TO")
        for r in RECIPIENTS]


def test_421_to_mail_defers_every_recipient(config_dir, smtp_sink):
    sink = smtp_sink("-Q", "mail")
    outcome, _, _ = deliver(config_dir, sink)
    assert summary(outcome) == [
        (r, "deferred", "4.0.0",
         f"host {PEER} said: 421 4.0.0 Server closing connection (in reply to MAIL FROM command)")
        for r in RECIPIENTS]


def test_421_greeting_is_a_refusal_to_talk(config_dir, smtp_sink):
    sink = smtp_sink("-Q", "connect")
    outcome, _, _ = deliver(config_dir, sink)
    assert summary(outcome) == [
        (r, "deferred", "4.0.0",
         f"host {PEER} refused to talk to me: 421 4.0.0 Server closing connection")
        for r in RECIPIENTS]


def test_421_to_ehlo_does_not_fall_back_to_helo(config_dir, smtp_sink):
    sink = smtp_sink("-Q", "ehlo")
    outcome, _, _ = deliver(config_dir, sink)
    assert summary(outcome) == [
        (r, "deferred", "4.0.0",
         f"host {PEER} refused to talk to me: 421 4.0.0 Server closing connection")
        for r in RECIPIENTS]
    assert "HELO" not in sink.verbs()


def test_421_to_the_first_rcpt_defers_everyone(config_dir, smtp_sink):
    sink = smtp_sink("-Q", "rcpt")
    outcome, _, _ = deliver(config_dir, sink)
    first, *others = outcome.results
    assert (first.status, first.dsn, first.text) == (
        "deferred", "4.0.0",
        f"host {PEER} said: 421 4.0.0 Server closing connection (in reply to RCPT TO command)")
    for result in others:
        assert (result.status, result.dsn) == ("deferred", "4.4.2")
        assert result.text == f"lost connection with {PEER} while sending RCPT TO"


@pytest.mark.parametrize("options, overrides, status, in_reply_to", [
    (["-f", "rcpt", "-q", "rset"], [], "bounced", "RCPT TO command"),
    (["-r", "mail", "-Q", "rset"], [], "deferred", "MAIL FROM command"),
    (["-q", "quit"], ["smtp_skip_quit_response=no"], "sent", None),
    (["-Q", "quit"], ["smtp_skip_quit_response=no"], "sent", None),
], ids=["hangup-at-rset", "421-to-rset", "hangup-at-quit", "421-to-quit"])
def test_trouble_after_the_outcome_is_known_changes_nothing(config_dir, smtp_sink, options,
                                                            overrides, status, in_reply_to):
    sink = smtp_sink(*options)
    outcome, _, _ = deliver(config_dir, sink, overrides=overrides)
    assert [r.status for r in outcome.results] == [status] * 3
    if in_reply_to:
        assert all(r.text.endswith(f"(in reply to {in_reply_to})") for r in outcome.results)
    else:
        assert {r.text for r in outcome.results} == {"250 2.0.0 Ok"}
    assert outcome.destination_down is None


# --- EHLO refused: HELO ------------------------------------------------------------------

def test_ehlo_refused_falls_back_to_helo_without_esmtp_parameters(config_dir, smtp_sink):
    sink = smtp_sink("-r", "ehlo")
    outcome, _, _ = deliver(config_dir, sink, encoding="8bit")
    assert [r.status for r in outcome.results] == ["sent"] * 3
    commands = sink.commands()
    assert commands[1:4] == ["EHLO client.postclient.test", "HELO client.postclient.test",
                             f"MAIL FROM:<{SENDER}>"]
    assert commands[4:7] == [f"RCPT TO:<{r}>" for r in RECIPIENTS]   # no ORCPT after HELO
    (message,) = sink.messages(count=1)
    assert message.client_proto == "SMTP" and message.content == MESSAGE


def test_ehlo_and_helo_refused_bounces_everyone(config_dir, smtp_sink):
    sink = smtp_sink("-f", "ehlo,helo")
    outcome, _, _ = deliver(config_dir, sink)
    assert summary(outcome) == [
        (r, "bounced", "5.3.0", f"host {PEER} refused to talk to me: {HARD_REPLY}")
        for r in RECIPIENTS]
    assert "MAIL" not in sink.verbs()


# --- what the sink announces (-8 no 8BITMIME, -P a PIX firewall greeting) -----------------------

EIGHT_BIT = (b"Subject: downgrade\n"
             b"Content-Type: text/plain; charset=utf-8\n"
             b"Content-Transfer-Encoding: 8bit\n"
             b"\n"
             b"Gr\xc3\xbc\xc3\x9fe = greetings\n")


def test_sink_without_8bitmime_receives_quoted_printable(config_dir, smtp_sink):
    sink = smtp_sink("-8")
    outcome, _, _ = deliver(config_dir, sink, content=EIGHT_BIT, encoding="8bit")
    assert [r.status for r in outcome.results] == ["sent"] * 3
    (message,) = sink.messages(count=1)
    assert message.mail_args == f"<{SENDER}>"                       # no BODY=
    assert message.content == (b"Subject: downgrade\n"
                                b"Content-Type: text/plain; charset=utf-8\n"
                                b"Content-Transfer-Encoding: quoted-printable\n"
                                b"\n"
                                b"Gr=C3=BC=C3=9Fe =3D greetings\n")


def test_sink_with_8bitmime_receives_the_8bit_message_unchanged(config_dir, smtp_sink):
    sink = smtp_sink()
    outcome, _, _ = deliver(config_dir, sink, content=EIGHT_BIT, encoding="8bit")
    assert [r.status for r in outcome.results] == ["sent"] * 3
    (message,) = sink.messages(count=1)
    assert message.mail_args == f"<{SENDER}> BODY=8BITMIME"
    assert message.content == EIGHT_BIT


def test_pix_greeting_gets_helo(config_dir, smtp_sink):
    sink = smtp_sink("-P")
    outcome, _, _ = deliver(config_dir, sink)
    assert [r.status for r in outcome.results] == ["sent"] * 3
    assert sink.verbs()[:3] == ["CONNECT", "HELO", "MAIL"]


# --- slow replies (-w, -W) and the per-state timeouts ------------------------------------------

# -p everywhere: with PIPELINING smtp-sink answers the commands after a delayed one
# (DATA, QUIT) before the delayed reply, out of order, which no client can survive.
SLOW = [
    (["-p", "-w", "3"], "smtp_data_init_timeout=1s", "sending DATA command"),
    (["-p", "-W", "rcpt:3"], "smtp_rcpt_timeout=1s", "sending RCPT TO"),
    (["-p", "-W", ".:3"], "smtp_data_done_timeout=1s",
     "sending end of data -- message may be sent more than once"),
    (["-W", "connect:3"], "smtp_helo_timeout=1s", "receiving the initial server greeting"),
]


@pytest.mark.parametrize("options, timeout, state", SLOW, ids=[s for _, s, _ in SLOW])
def test_slow_reply_times_out_with_the_state_timeout(config_dir, smtp_sink, options, timeout,
                                                     state):
    sink = smtp_sink(*options)
    outcome, _, elapsed = deliver(config_dir, sink, overrides=[timeout])
    assert summary(outcome) == [
        (r, "deferred", "4.4.2", f"conversation with {PEER} timed out while {state}")
        for r in RECIPIENTS]
    assert 0.9 <= elapsed < 2.5, elapsed          # the 1 s timeout, not the 3 s delay


def test_slow_reply_within_the_timeout_is_waited_for(config_dir, smtp_sink):
    sink = smtp_sink("-p", "-w", "1")
    outcome, _, elapsed = deliver(config_dir, sink, overrides=["smtp_data_init_timeout=3s"])
    assert [r.status for r in outcome.results] == ["sent"] * 3
    assert elapsed >= 0.9


# --- abort after DATA (-A) ------------------------------------------------------------------

def test_abort_after_data_bounces_with_the_premature_reply(config_dir, smtp_sink):
    sink = smtp_sink("-A", "0")
    outcome, _, _ = deliver(config_dir, sink)
    assert summary(outcome) == [
        (r, "bounced", "5.0.0",
         f"host {PEER} said: 550 This violates SMTP (in reply to end of DATA command)")
        for r in RECIPIENTS]


def test_abort_after_data_during_a_large_body_still_reads_the_premature_reply(config_dir,
                                                                             smtp_sink):
    sink = smtp_sink("-A", "0")
    body = b"Subject: big\n\n" + (b"y" * 78 + b"\n") * 100_000           # 8 MB
    outcome, _, elapsed = deliver(config_dir, sink, content=body)
    assert summary(outcome) == [
        (r, "bounced", "5.0.0",
         f"host {PEER} said: 550 This violates SMTP (in reply to end of DATA command)")
        for r in RECIPIENTS]
    assert elapsed < 5


# --- LMTP (-L) -----------------------------------------------------------------------------

def test_lmtp_delivery_of_several_recipients(config_dir, smtp_sink):
    sink = smtp_sink(lmtp=True)
    outcome, _, _ = deliver(config_dir, sink, protocol="lmtp", nexthop=sink.lmtp_nexthop)
    assert summary(outcome) == [(r, "sent", "2.2.0", "250 2.2.0 Ok") for r in RECIPIENTS]
    (message,) = sink.messages(count=1)
    assert message.client_proto == "LMTP"
    assert message.helo_args == "client.postclient.test"
    assert len(message.rcpt_args) == 3 and message.content == MESSAGE
    assert sink.verbs()[1] == "LHLO"


@pytest.mark.parametrize("option, status, dsn", [("-f", "bounced", "5.3.0"),
                                                 ("-r", "deferred", "4.3.0")])
def test_lmtp_reads_one_end_of_data_reply_per_recipient(config_dir, smtp_sink, option, status,
                                                        dsn):
    sink = smtp_sink(option, ".", lmtp=True)
    outcome, _, elapsed = deliver(config_dir, sink, protocol="lmtp", nexthop=sink.lmtp_nexthop,
                                  overrides=["lmtp_data_done_timeout=3s"])
    reply = HARD_REPLY if option == "-f" else SOFT_REPLY
    assert summary(outcome) == [
        (r, status, dsn, f"host {PEER} said: {reply} (in reply to end of DATA command)")
        for r in RECIPIENTS]
    assert elapsed < 2.5                          # no recipient waited for a reply that never came


def test_cli_lmtp_exit_0(config_dir, smtp_sink):
    sink = smtp_sink(lmtp=True)
    run = run_cli(config_dir, ["--lmtp", "--nexthop", sink.lmtp_nexthop, "--sender", SENDER,
                               *RECIPIENTS], MESSAGE)
    assert run.returncode == 0, run.stderr
    assert [(r["recipient"], r["status"], r["dsn"]) for r in run.results] == [
        (r, "sent", "2.2.0") for r in RECIPIENTS]
