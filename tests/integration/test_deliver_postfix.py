"""``postclient deliver`` into a real Postfix smtpd (tests/integration/postfix_instance.py).

One temporary Postfix instance serves the whole module.  Its smtpd listeners
on 127.0.0.1 relay what they accept into an smtp-sink that dumps every
message, so a test sees both sides: what postclient reports (JSON lines,
exit status, its Postfix-format log) and what the real MTA made of it (its
maillog, and the message and envelope it relayed on).

  main     relay_domains = sink.test; other domains get "Relay access
           denied"; rejected@sink.test gets 550 5.1.1, later@sink.test
           450 4.2.1 (check_recipient_access); a Subject containing
           "reject at end of data" is refused by header_checks after ".";
           smtpd_forbid_bare_newline and smtpd_forbid_unauth_pipelining are
           on, so a bare LF or improper pipelining would be refused.
  nopipe   the same without PIPELINING in the EHLO reply
  nodsn    the same without DSN in the EHLO reply
  small    message_size_limit = 20000 (announced as SIZE 20000)
  strict   smtpd_delay_reject = no, so sender restrictions answer MAIL FROM

Senders blocked@ / greylisted@client.test are refused (553 / 451) by
smtpd_sender_restrictions; datareject@ / datalater@client.test get 554 / 452
to DATA from smtpd_data_restrictions.
"""

import json
import re
import socket
import subprocess
import sys
import time
import uuid

import pytest

from tests.integration.postfix_instance import PostfixInstance

pytestmark = pytest.mark.integration

RECIPIENT_ACCESS = ("inline:{ {rejected@sink.test = 550 5.1.1 no such user here}, "
                    "{later@sink.test = 450 4.2.1 mailbox busy, try later} }")
SENDER_ACCESS = ("inline:{ {blocked@client.test = 553 5.7.1 sender blocked}, "
                 "{greylisted@client.test = 451 4.7.1 greylisted, try again} }")
DATA_ACCESS = ("inline:{ {datareject@client.test = 554 5.7.1 no data for you}, "
               "{datalater@client.test = 452 4.3.1 come back later} }")
HEADER_CHECKS = "/^Subject: .*reject at end of data/ REJECT content refused by policy\n"


@pytest.fixture(scope="module")
def postfix():
    instance = PostfixInstance(
        services={"main": {},
                  "nopipe": {"smtpd_discard_ehlo_keywords": "pipelining"},
                  "nodsn": {"smtpd_discard_ehlo_keywords": "dsn"},
                  "small": {"message_size_limit": "20000"},
                  "strict": {"smtpd_delay_reject": "no"}},
        main_cf={"relay_domains": "sink.test",
                 "smtpd_relay_restrictions": "reject_unauth_destination",
                 "smtpd_recipient_restrictions": RECIPIENT_ACCESS,
                 "smtpd_sender_restrictions": f"check_sender_access {SENDER_ACCESS}",
                 "smtpd_data_restrictions": f"check_sender_access {DATA_ACCESS}",
                 "smtpd_forbid_unauth_pipelining": "yes",
                 "smtpd_forbid_bare_newline": "yes",
                 "smtpd_forbid_bare_newline_exclusions": "",
                 "header_checks": "regexp:$CONFIG/header_checks"},
        tables={"header_checks": HEADER_CHECKS})
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
    """An empty configuration directory: only the -o overrides apply."""
    return str(tmp_path_factory.mktemp("postclient-etc"))


class Run:
    def __init__(self, process):
        self.status = process.returncode
        self.log = process.stderr.decode("utf-8", "replace")
        self.lines = [json.loads(line) for line in process.stdout.decode().splitlines() if line]
        self.by_recipient = {line["recipient"]: line for line in self.lines}

    def __getitem__(self, recipient):
        return self.by_recipient[recipient]


def deliver(config_dir, nexthop, recipients, content, *options, sender="sender@client.test"):
    command = [sys.executable, "-m", "postclient", "deliver", "-c", config_dir,
               "-o", "maillog_file=/dev/stderr", "-o", "myhostname=postclient.test",
               "-o", "inet_interfaces=127.0.0.1", "--nexthop", nexthop,
               "--sender", sender, *options, *recipients]
    process = subprocess.run(command, input=content, capture_output=True, timeout=60)
    run = Run(process)
    assert [line["recipient"] for line in run.lines] == list(recipients), run.log
    return run


def message(subject, body="Hello from postclient.\n"):
    marker = uuid.uuid4().hex
    content = (f"From: sender@client.test\nTo: someone@sink.test\nSubject: {subject} {marker}\n"
               f"Message-ID: <{marker}@client.test>\n\n{body}").encode()
    return marker, content


def relayed(postfix, marker, timeout=15.0):
    """The dumps (at the sink behind Postfix) of the message carrying ``marker``."""
    return postfix.wait_for_dumps(lambda dump: marker in dump.text, timeout)


def queue_id(reply_text):
    match = re.search(r"queued as ([0-9A-Za-z]+)", reply_text)
    assert match, reply_text
    return match.group(1)


# --- accepted mail goes through -------------------------------------------------------------

def test_accepted_mail_arrives_at_the_sink_behind_smtpd(postfix, config_dir):
    marker, content = message("plain delivery", "first line\n\nlast line\n")
    run = deliver(config_dir, postfix.nexthop(), ["one@sink.test", "two@sink.test"], content)

    assert run.status == 0, run.log
    endpoint = f"127.0.0.1[127.0.0.1]:{postfix.port()}"
    for recipient in ("one@sink.test", "two@sink.test"):
        line = run[recipient]
        assert (line["status"], line["dsn"], line["relay"]) == ("sent", "2.0.0", endpoint)
        assert re.fullmatch(r"250 2\.0\.0 Ok: queued as [0-9A-Z]+", line["text"]), line
        assert re.search(rf"postclient/smtp\[\d+\]: [0-9A-F]+: to=<{re.escape(recipient)}>, "
                         rf"relay={re.escape(endpoint)}, delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+"
                         rf"/[\d.]+, dsn=2\.0\.0, status=sent \(250 2\.0\.0 Ok: queued as ",
                         run.log), run.log
    # Postfix itself took the message under the queue ID it announced and relayed it on.
    qid = queue_id(run["one@sink.test"]["text"])
    assert queue_id(run["two@sink.test"]["text"]) == qid
    for recipient in ("one@sink.test", "two@sink.test"):
        assert postfix.wait_for_log(rf"{qid}: to=<{re.escape(recipient)}>, .*status=sent"), \
            postfix.maillog()
    (dump,) = relayed(postfix, marker)
    assert sorted(dump.recipients) == sorted(["one@sink.test", "two@sink.test"])
    assert dump.mail_args.startswith("<sender@client.test>")
    assert f"Subject: plain delivery {marker}\n" in dump.content
    assert dump.content.endswith("\nfirst line\n\nlast line\n\n")    # smtp-sink adds a blank line
    assert "from postclient.test (unknown [127.0.0.1])" in dump.content


def test_null_sender_is_accepted(postfix, config_dir):
    marker, content = message("null sender")
    run = deliver(config_dir, postfix.nexthop(), ["bounce-target@sink.test"], content, sender="")
    assert run.status == 0 and run["bounce-target@sink.test"]["status"] == "sent", run.log
    (dump,) = relayed(postfix, marker)
    assert dump.mail_args.startswith("<>")


def test_content_reaches_the_mta_with_crlf_and_dot_stuffing(postfix, config_dir):
    # smtpd_forbid_bare_newline = yes: a bare LF on the wire would be refused.
    body = ("unix line\n"
            "dos line\r\n"
            ".leading dot\n"
            "..two dots\n"
            ".\n"
            "a bare\rcarriage return\n"
            "last line without newline")
    marker, content = message("line endings", body)
    run = deliver(config_dir, postfix.nexthop(), ["lines@sink.test"], content)
    assert run.status == 0 and run["lines@sink.test"]["status"] == "sent", run.log
    (dump,) = relayed(postfix, marker)
    assert dump.content.split("\n\n", 1)[1].startswith(
        "unix line\ndos line\n.leading dot\n..two dots\n.\na bare carriage return\n"
        "last line without newline\n")
    assert "bare <LF>" not in postfix.maillog()


def test_large_message(postfix, config_dir):
    line = "0123456789" * 7 + "\n"
    marker, content = message("large", line * 15000)           # about 1 MB
    run = deliver(config_dir, postfix.nexthop(), ["large@sink.test"], content)
    assert run.status == 0 and run["large@sink.test"]["status"] == "sent", run.log
    (dump,) = relayed(postfix, marker)
    assert dump.content.count(line) == 15000


# --- refusals ---------------------------------------------------------------------------------

def test_rejected_recipient_bounces_while_the_others_are_sent(postfix, config_dir):
    marker, content = message("one rejected")
    recipients = ["first@sink.test", "rejected@sink.test", "third@sink.test"]
    run = deliver(config_dir, postfix.nexthop(), recipients, content)

    assert run.status == 69, run.log
    bounced = run["rejected@sink.test"]
    assert (bounced["status"], bounced["dsn"]) == ("bounced", "5.1.1")
    assert bounced["text"] == ("host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <rejected@sink.test>: "
                               "Recipient address rejected: no such user here "
                               "(in reply to RCPT TO command)")
    assert run["first@sink.test"]["status"] == run["third@sink.test"]["status"] == "sent"
    assert re.search(r"to=<rejected@sink\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, .*"
                     r"dsn=5\.1\.1, status=bounced \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 550",
                     run.log), run.log
    (dump,) = relayed(postfix, marker)
    assert sorted(dump.recipients) == sorted(["first@sink.test", "third@sink.test"])
    # What smtpd saw: one transaction, the rejected RCPT, DATA, then QUIT; nothing else.
    assert postfix.session_commands(queue_id(run["first@sink.test"]["text"])) == \
        "ehlo=1 mail=1 rcpt=2/3 data=1 quit=1 commands=6/7"


def test_relay_access_denied_bounces_that_recipient(postfix, config_dir):
    marker, content = message("relay denied")
    run = deliver(config_dir, postfix.nexthop(), ["inside@sink.test", "outside@elsewhere.test"],
                  content)
    assert run.status == 69, run.log
    denied = run["outside@elsewhere.test"]
    assert (denied["status"], denied["dsn"]) == ("bounced", "5.7.1")
    assert re.fullmatch(r"host 127\.0\.0\.1\[127\.0\.0\.1\] said: 554 5\.7\.1 "
                        r"<outside@elsewhere\.test>: Relay access denied "
                        r"\(in reply to RCPT TO command\)", denied["text"]), denied
    assert run["inside@sink.test"]["status"] == "sent"
    (dump,) = relayed(postfix, marker)
    assert sorted(dump.recipients) == sorted(["inside@sink.test"])


def test_soft_rejected_recipient_is_deferred_on_the_only_server(postfix, config_dir):
    marker, content = message("one deferred")
    run = deliver(config_dir, postfix.nexthop(), ["later@sink.test", "now@sink.test"], content)
    assert run.status == 75, run.log
    later = run["later@sink.test"]
    assert (later["status"], later["dsn"]) == ("deferred", "4.2.1")
    assert later["text"] == ("host 127.0.0.1[127.0.0.1] said: 450 4.2.1 <later@sink.test>: "
                             "Recipient address rejected: mailbox busy, try later "
                             "(in reply to RCPT TO command)")
    assert run["now@sink.test"]["status"] == "sent"
    (dump,) = relayed(postfix, marker)
    assert sorted(dump.recipients) == sorted(["now@sink.test"])


def test_all_recipients_rejected_bounces_each_with_its_own_reply(postfix, config_dir):
    marker, content = message("all rejected")
    run = deliver(config_dir, postfix.nexthop(), ["rejected@sink.test", "nobody@elsewhere.test"],
                  content)
    assert run.status == 69, run.log
    assert run["rejected@sink.test"]["dsn"] == "5.1.1"
    assert run["nobody@elsewhere.test"]["dsn"] == "5.7.1"
    for line in run.lines:
        assert line["status"] == "bounced"
        assert line["text"].endswith("(in reply to RCPT TO command)"), line
    time.sleep(0.5)
    assert not [dump for dump in postfix.dumps() if marker in dump.text]
    # Postfix counts the commands of each session: no message was taken.
    assert not re.search(rf"{marker}", postfix.maillog())


@pytest.mark.parametrize("sender, status, dsn, reply", [
    ("blocked@client.test", "bounced", "5.7.1",
     "553 5.7.1 <blocked@client.test>: Sender address rejected: sender blocked"),
    ("greylisted@client.test", "deferred", "4.7.1",
     "451 4.7.1 <greylisted@client.test>: Sender address rejected: greylisted, try again"),
], ids=["5xx", "4xx"])
def test_mail_from_reject_applies_to_every_recipient(postfix, config_dir, sender, status, dsn,
                                                     reply):
    marker, content = message("sender refused")
    run = deliver(config_dir, postfix.nexthop("strict"), ["m1@sink.test", "m2@sink.test"],
                  content, sender=sender)
    assert run.status == (69 if status == "bounced" else 75), run.log
    for line in run.lines:
        assert (line["status"], line["dsn"]) == (status, dsn), line
        assert line["text"] == (f"host 127.0.0.1[127.0.0.1] said: {reply} "
                                "(in reply to MAIL FROM command)")
    time.sleep(0.3)
    assert not [dump for dump in postfix.dumps() if marker in dump.text]


@pytest.mark.parametrize("sender, status, dsn, reply", [
    ("datareject@client.test", "bounced", "5.7.1",
     "554 5.7.1 <datareject@client.test>: Sender address rejected: no data for you"),
    ("datalater@client.test", "deferred", "4.3.1",
     "452 4.3.1 <datalater@client.test>: Sender address rejected: come back later"),
], ids=["5xx", "4xx"])
def test_data_reject_applies_to_the_accepted_recipients(postfix, config_dir, sender, status, dsn,
                                                        reply):
    marker, content = message("data refused")
    run = deliver(config_dir, postfix.nexthop(), ["d1@sink.test", "rejected@sink.test",
                                                   "d2@sink.test"], content, sender=sender)
    assert run.status == (69 if status == "bounced" else 75), run.log
    assert run["rejected@sink.test"]["text"].endswith("(in reply to RCPT TO command)")
    for recipient in ("d1@sink.test", "d2@sink.test"):
        line = run[recipient]
        assert (line["status"], line["dsn"]) == (status, dsn), line
        assert line["text"] == (f"host 127.0.0.1[127.0.0.1] said: {reply} "
                                "(in reply to DATA command)")
    time.sleep(0.3)
    assert not [dump for dump in postfix.dumps() if marker in dump.text]


def test_end_of_data_reject_bounces_every_accepted_recipient(postfix, config_dir):
    marker, content = message("please reject at end of data")
    run = deliver(config_dir, postfix.nexthop(),
                  ["x@sink.test", "rejected@sink.test", "y@sink.test"], content)
    assert run.status == 69, run.log
    assert run["rejected@sink.test"]["text"].endswith("(in reply to RCPT TO command)")
    for recipient in ("x@sink.test", "y@sink.test"):
        line = run[recipient]
        assert (line["status"], line["dsn"]) == ("bounced", "5.7.1"), line
        assert line["text"] == ("host 127.0.0.1[127.0.0.1] said: 550 5.7.1 content refused by "
                                "policy (in reply to end of DATA command)")
    time.sleep(0.5)
    assert not [dump for dump in postfix.dumps() if marker in dump.text]


def test_size_limit_announced_by_smtpd_stops_before_mail(postfix, config_dir):
    marker, content = message("too big", "x" * 70 + "\n" * 1)
    content += b"y" * 70 + b"\n"
    content += (b"z" * 99 + b"\n") * 300                     # about 30 KB
    size = len(content.replace(b"\n", b"\r\n"))
    run = deliver(config_dir, postfix.nexthop("small"), ["big@sink.test"], content)
    assert run.status == 69, run.log
    line = run["big@sink.test"]
    assert (line["status"], line["dsn"]) == ("bounced", "5.3.4"), line
    match = re.fullmatch(r"message size (\d+) exceeds size limit 20000 of server "
                         r"127\.0\.0\.1\[127\.0\.0\.1\]", line["text"])
    assert match, line
    assert abs(int(match.group(1)) - size) < 1000
    # The session ended after EHLO: smtpd logs the commands it saw.
    disconnect = postfix.wait_for_log(r"postfix/small/smtpd\[\d+\]: disconnect from .* ehlo=1 "
                                      r"(quit=1 )?commands=\d+$")
    assert disconnect, postfix.maillog()
    assert "mail=" not in disconnect.group(0)


# --- ESMTP extensions ----------------------------------------------------------------------

def _improper_pipelining(postfix):
    return re.findall(r"improper command pipelining.*", postfix.maillog())


def _pipeline(port, greeting_command, pipelined):
    """Send one HELO/EHLO, then ``pipelined`` commands in one write; the reply lines after it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220")
        sock.sendall(greeting_command + b"\r\n")
        while not reader.readline()[3:4] == b" ":
            pass
        sock.sendall(b"".join(command + b"\r\n" for command in pipelined))
        return reader.readline()


def test_this_smtpd_refuses_improper_pipelining(postfix):
    """Control: smtpd_forbid_unauth_pipelining really catches a client that pipelines."""
    before = len(_improper_pipelining(postfix))
    after_ehlo = _pipeline(postfix.port(), b"EHLO control.test",
                           [b"MAIL FROM:<control@client.test>", b"RCPT TO:<a@sink.test>"])
    assert after_ehlo.startswith(b"250")      # PIPELINING announced: allowed
    after_helo = _pipeline(postfix.port(), b"HELO control.test",
                           [b"MAIL FROM:<control@client.test>", b"RCPT TO:<a@sink.test>"])
    assert after_helo.startswith(b"554 5.5.0"), after_helo
    deadline = time.monotonic() + 5
    while len(_improper_pipelining(postfix)) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_improper_pipelining(postfix)) == before + 1, postfix.maillog()


@pytest.mark.parametrize("service, options", [
    ("main", []),                                           # PIPELINING: one write MAIL..DATA
    ("nopipe", []),                                         # EHLO without PIPELINING
    ("main", ["-o", "smtp_never_send_ehlo=yes"]),           # HELO: smtpd refuses any pipelining
], ids=["pipelining", "no-pipelining", "helo"])
def test_pipelining_is_used_only_as_announced(postfix, config_dir, service, options):
    marker, content = message(f"pipelining via {service} {options}")
    recipients = [f"p{n}@sink.test" for n in range(5)]
    before = _improper_pipelining(postfix)
    run = deliver(config_dir, postfix.nexthop(service), recipients, content, *options)
    assert run.status == 0, run.log
    assert all(line["status"] == "sent" for line in run.lines)
    (dump,) = relayed(postfix, marker)
    assert sorted(dump.recipients) == sorted(recipients)
    assert _improper_pipelining(postfix) == before
    if options:
        assert "Received: from postclient.test (unknown [127.0.0.1])" in dump.content
        assert re.search(r"by smtpd\.postfix\.test \(Postfix\) with SMTP id", dump.content)


def test_dsn_parameters_are_accepted_and_passed_on(postfix, config_dir):
    marker, content = message("dsn parameters", "caf\u00e9 8-bit body\n")
    run = deliver(config_dir, postfix.nexthop(), ["user+tag@sink.test", "plain@sink.test"], content,
                  "--notify", "SUCCESS,FAILURE", "--envid", "id+with=specials", "--ret", "HDRS",
                  "--encoding", "8bit")
    assert run.status == 0, run.log
    assert {line["status"] for line in run.lines} == {"sent"}
    (dump,) = relayed(postfix, marker)
    # Postfix's own client relays what its smtpd understood from ours.
    mail_args = dump.mail_args.split()
    assert mail_args[0] == "<sender@client.test>"
    assert "BODY=8BITMIME" in mail_args
    assert "RET=HDRS" in mail_args
    assert "ENVID=id+2Bwith+3Dspecials" in mail_args
    rcpt_args = {args.split()[0]: set(args.split()[1:]) for args in dump.rcpt_args}
    assert rcpt_args == {
        "<user+tag@sink.test>": {"NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;user+2Btag@sink.test"},
        "<plain@sink.test>": {"NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;plain@sink.test"}}
    assert "caf\u00e9 8-bit body" in dump.content


def test_dsn_parameters_are_withheld_from_a_server_without_dsn(postfix, config_dir):
    marker, content = message("no dsn")
    run = deliver(config_dir, postfix.nexthop("nodsn"), ["quiet@sink.test"], content,
                  "--notify", "FAILURE", "--envid", "withheld", "--ret", "FULL")
    # Postfix's smtpd answers 555 to ENVID/RET/NOTIFY/ORCPT it did not announce.
    assert run.status == 0, run.log
    assert run["quiet@sink.test"]["status"] == "sent"
    (dump,) = relayed(postfix, marker)
    assert "ENVID" not in dump.mail_args and "RET=" not in dump.mail_args
    assert "NOTIFY" not in dump.rcpt_args[0]


def test_envelope_from_smtpd_log_matches(postfix, config_dir):
    marker, content = message("logged envelope")
    run = deliver(config_dir, postfix.nexthop(), ["logged@sink.test"], content,
                  sender="Strange.Sender+x@client.test")
    assert run.status == 0, run.log
    qid = queue_id(run["logged@sink.test"]["text"])
    assert postfix.wait_for_log(rf"{qid}: from=<Strange\.Sender\+x@client\.test>, size=\d+, "
                                rf"nrcpt=1"), postfix.maillog()
    assert postfix.wait_for_log(rf"{qid}: message-id=<{marker}@client\.test>"), postfix.maillog()


def test_overrides_before_and_after_the_command_name_both_apply(postfix, config_dir):
    """``postclient -o A deliver -o B``: both A and B are in force (cli/main.py promises it)."""
    marker, content = message("overrides on both sides")
    command = [sys.executable, "-m", "postclient", "-c", config_dir,
               "-o", "smtp_helo_name=before.client.test", "-o", "maillog_file=/dev/stderr",
               "deliver", "-o", "smtp_never_send_ehlo=yes", "--nexthop", postfix.nexthop(),
               "--sender", "sender@client.test", "both@sink.test"]
    process = subprocess.run(command, input=content, capture_output=True, timeout=60)
    run = Run(process)
    assert run.status == 0 and run["both@sink.test"]["status"] == "sent", run.log
    (dump,) = relayed(postfix, marker)
    # HELO (not EHLO: the override after "deliver") with the name set before "deliver".
    assert re.search(r"Received: from before\.client\.test \(unknown \[127\.0\.0\.1\]\)\n"
                     r"\tby smtpd\.postfix\.test \(Postfix\) with SMTP id", dump.content), \
        dump.content


# --- a batch: the next message pipelined behind the "." ----------------------------------------

def test_a_batch_pipelines_each_next_message_behind_the_dot_into_smtpd(postfix, tmp_path):
    # smtpd_forbid_unauth_pipelining = yes: Postfix would refuse commands sent
    # ahead where RFC 2920 does not allow them.  One session carries the whole
    # batch; every message is relayed on once.
    from postclient.config.config import Config
    from postclient.queue import queuefile
    from postclient.smtp import reuse, service
    from postclient.smtp.request import Recipient
    from tests.scache_standin import ScacheProcess

    root = tmp_path / "q"
    for name in ("active", "bounce", "defer", "trace", "private"):
        (root / name).mkdir(parents=True)
    (tmp_path / "main.cf").write_text(f"queue_directory = {root}\nmyhostname = postclient.test\n")
    scache = ScacheProcess(str(tmp_path))
    improper_before = len(_improper_pipelining(postfix))
    try:
        markers, messages = [], []
        for n in range(4):
            marker, content = message(f"batch {n}")
            markers.append(marker)
            path = queuefile.write_queue_file(
                str(root / "active"), f"PB{n}", sender="sender@client.test",
                recipients=[Recipient(f"batch{n}@sink.test")],
                content=content.replace(b"\n", b"\r\n"), arrival_time=time.time())
            queued = queuefile.read_queue_file(path)
            messages.append({"queue_name": "active", "queue_id": "PB%d" % n,
                             "recipients": [{"offset": r.offset} for r in queued.recipients]})

        class Context:
            config = Config.load(str(tmp_path), process_name="smtp")
            queue_directory = str(root)
            command = "smtp"

        reply = service.handle_batch({"request": "deliver", "nexthop": postfix.nexthop(),
                                      "messages": messages,
                                      "flags": {"use_cached_connection": True,
                                                "store_connection": False}}, Context)
    finally:
        reuse.release_held()
        scache.kill()
    texts = [m["results"][0]["text"] for m in reply["messages"]]
    assert [m["results"][0]["status"] for m in reply["messages"]] == ["sent"] * 4, texts
    commands = postfix.session_commands(queue_id(texts[0]))
    assert commands == "ehlo=1 mail=4 rcpt=4 data=4 quit=1 commands=14", postfix.maillog()
    assert len(_improper_pipelining(postfix)) == improper_before, postfix.maillog()
    for marker in markers:
        assert len(relayed(postfix, marker)) == 1
