"""``postclient deliver --lmtp`` into a real Dovecot LMTP server (see dovecot_lmtp.py).

One Dovecot instance serves the module, on a UNIX socket and on TCP.  Its
users alice, bob and carol have maildirs; dave exists but cannot store mail
(Dovecot fails him after DATA with 451 4.2.0); anyone else is unknown (550
5.1.1 at RCPT).  Each test reads the maildirs back to see what was really
delivered, and to whom.
"""

import json
import re
import subprocess
import sys
import threading
import time
import uuid

import pytest

from postclient.config.config import Config
from postclient.queue import queuefile
from postclient.smtp import agent_client, reuse, service
from postclient.smtp.request import Recipient
from tests.integration.dovecot_lmtp import DovecotLmtp
from tests.integration.master_harness import master_instance  # noqa: F401 (fixture)
from tests.scache_standin import ScacheProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dovecot():
    server = DovecotLmtp(users=("alice", "bob", "carol"), unwritable=("dave",)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
    """An empty configuration directory: only the -o overrides apply."""
    return str(tmp_path_factory.mktemp("postclient-etc"))


@pytest.fixture(params=["unix", "inet"])
def transport(request, dovecot):
    """(nexthop, relay label) for the UNIX socket and for TCP."""
    if request.param == "unix":
        return f"unix:{dovecot.unix_path}", f"postclient.test[{dovecot.unix_path}]"
    return f"inet:127.0.0.1:{dovecot.port}", f"127.0.0.1[127.0.0.1]:{dovecot.port}"


class Run:
    def __init__(self, process):
        self.status = process.returncode
        self.log = process.stderr.decode("utf-8", "replace")
        self.lines = [json.loads(line) for line in process.stdout.decode().splitlines() if line]
        self.by_recipient = {line["recipient"]: line for line in self.lines}

    def __getitem__(self, recipient):
        return self.by_recipient[recipient]


def deliver(config_dir, nexthop, recipients, content, *options):
    command = [sys.executable, "-m", "postclient", "deliver", "--lmtp", "-c", config_dir,
               "-o", "maillog_file=/dev/stderr", "-o", "myhostname=postclient.test",
               "--nexthop", nexthop, "--sender", "sender@client.test", *options, *recipients]
    process = subprocess.run(command, input=content, capture_output=True, timeout=60)
    run = Run(process)
    assert [line["recipient"] for line in run.lines] == list(recipients), run.log
    return run


def message(subject, body="Hello over LMTP.\n"):
    marker = uuid.uuid4().hex
    content = (f"From: sender@client.test\nTo: team@lmtp.test\nSubject: {subject} {marker}\n"
               f"Message-ID: <{marker}@client.test>\n\n{body}").encode()
    return marker, content


def stored(dovecot, user, marker):
    """The messages in ``user``'s maildir that carry ``marker``."""
    return [mail for mail in dovecot.messages(user) if marker.encode() in mail]


def test_known_users_get_the_mail_and_the_unknown_one_bounces(dovecot, config_dir, transport):
    nexthop, relay = transport
    marker, content = message("per-recipient results")
    recipients = ["alice@lmtp.test", "nosuchuser@lmtp.test", "bob@lmtp.test"]
    run = deliver(config_dir, nexthop, recipients, content)

    assert run.status == 69, run.log
    for user in ("alice", "bob"):
        line = run[f"{user}@lmtp.test"]
        assert (line["status"], line["dsn"], line["relay"]) == ("sent", "2.0.0", relay), line
        assert re.fullmatch(rf"250 2\.0\.0 <{user}@lmtp\.test> \S+ Saved", line["text"]), line
        assert len(stored(dovecot, user, marker)) == 1
        assert re.search(rf"postclient/lmtp\[\d+\]: [0-9A-F]+: to=<{user}@lmtp\.test>, "
                         rf"relay={re.escape(relay)}, .*dsn=2\.0\.0, status=sent \(250 2\.0\.0",
                         run.log), run.log
    unknown = run["nosuchuser@lmtp.test"]
    assert (unknown["status"], unknown["dsn"], unknown["relay"]) == ("bounced", "5.1.1", relay)
    host = relay.rsplit(":", 1)[0] if nexthop.startswith("inet:") else relay
    assert unknown["text"] == (f"host {host} said: 550 5.1.1 <nosuchuser@lmtp.test> User doesn't "
                               f"exist: nosuchuser@lmtp.test (in reply to RCPT TO command)")
    assert not stored(dovecot, "carol", marker)
    # One transaction, one reply per accepted recipient after "." (Dovecot numbers them
    # SESSION and SESSION:R<n> within one transaction).
    alice_id = run["alice@lmtp.test"]["text"].split()[3]
    assert run["bob@lmtp.test"]["text"].split()[3].startswith(alice_id + ":R")


def test_body_is_intact_in_the_maildirs(dovecot, config_dir, transport):
    nexthop, _ = transport
    body = ("plain line\n"
            "crlf line\r\n"
            ".leading dot\n"
            "..two leading dots\n"
            ".\n"
            "\n"
            "trailing spaces   \n"
            "tab\tinside\n"
            "caf\u00e9 \u00fcber \u65e5\u672c\n"
            + "x" * 900 + "\n"
            "last line without newline")
    marker, content = message("body intact", body)
    run = deliver(config_dir, nexthop, ["carol@lmtp.test", "alice@lmtp.test"], content,
                  "--encoding", "8bit")
    assert run.status == 0, run.log
    expected = content.replace(b"\r\n", b"\n") + b"\n"
    for user in ("carol", "alice"):
        (mail,) = stored(dovecot, user, marker)
        # Dovecot prepends Return-Path and Received; the rest is the message as sent.
        header, _, rest = mail.partition(b"From: sender@client.test\n")
        assert header.startswith(b"Return-Path: <sender@client.test>\n"
                                 b"Received: from postclient.test")
        assert b"From: sender@client.test\n" + rest == expected


def test_large_message_to_several_users(dovecot, config_dir, transport):
    nexthop, _ = transport
    line = ("%05d " % 0) + "abcdefghij" * 9 + "\n"
    body = "".join(("%05d " % n) + "abcdefghij" * 9 + "\n" for n in range(20000))   # ~2 MB
    marker, content = message("large", body)
    recipients = ["alice@lmtp.test", "bob@lmtp.test", "carol@lmtp.test"]
    run = deliver(config_dir, nexthop, recipients, content)
    assert run.status == 0, run.log
    for user in ("alice", "bob", "carol"):
        (mail,) = stored(dovecot, user, marker)
        assert mail.endswith(body.encode())
        assert line.encode() in mail


def test_failure_after_data_defers_only_that_recipient(dovecot, config_dir, transport):
    nexthop, relay = transport
    marker, content = message("one fails after data")
    run = deliver(config_dir, nexthop, ["alice@lmtp.test", "dave@lmtp.test", "bob@lmtp.test"],
                  content)
    assert run.status == 75, run.log
    dave = run["dave@lmtp.test"]
    assert (dave["status"], dave["dsn"], dave["relay"]) == ("deferred", "4.2.0", relay), dave
    assert re.fullmatch(r"host \S+ said: 451 4\.2\.0 <dave@lmtp\.test> .*"
                        r"\(in reply to end of DATA command\)", dave["text"]), dave
    for user in ("alice", "bob"):
        assert run[f"{user}@lmtp.test"]["status"] == "sent"
        assert len(stored(dovecot, user, marker)) == 1


def test_all_recipients_unknown(dovecot, config_dir, transport):
    nexthop, _ = transport
    marker, content = message("nobody known")
    run = deliver(config_dir, nexthop, ["ghost@lmtp.test", "phantom@lmtp.test"], content)
    assert run.status == 69, run.log
    for line in run.lines:
        assert (line["status"], line["dsn"]) == ("bounced", "5.1.1"), line
        assert line["text"].endswith("(in reply to RCPT TO command)")
    for user in ("alice", "bob", "carol"):
        assert not stored(dovecot, user, marker)


def test_inet_destination_without_port_uses_lmtp_tcp_port(dovecot, config_dir):
    marker, content = message("default port")
    run = deliver(config_dir, "inet:127.0.0.1", ["bob@lmtp.test"], content,
                  "-o", f"lmtp_tcp_port={dovecot.port}")
    assert run.status == 0, run.log
    assert run["bob@lmtp.test"]["relay"] == f"127.0.0.1[127.0.0.1]:{dovecot.port}"
    assert len(stored(dovecot, "bob", marker)) == 1


def test_missing_unix_socket_is_deferred(dovecot, config_dir):
    path = f"{dovecot.root}/no-such-socket"
    marker, content = message("no socket")
    run = deliver(config_dir, f"unix:{path}", ["alice@lmtp.test"], content)
    assert run.status == 75, run.log
    line = run["alice@lmtp.test"]
    assert (line["status"], line["dsn"]) == ("deferred", "4.4.1"), line
    assert path in line["text"] and "No such file or directory" in line["text"], line
    assert not stored(dovecot, "alice", marker)


# --- a batched delivery request through the lmtp service ---------------------------------

class _ServiceContext:
    def __init__(self, config_dir):
        self.config = Config.load(config_dir, process_name="lmtp")
        self.queue_directory = self.config.get("queue_directory")
        self.command = "lmtp"


def test_a_batch_goes_to_dovecot_over_one_session(dovecot, tmp_path, transport):
    nexthop, relay = transport
    root = tmp_path / "q"
    for name in ("active", "bounce", "defer", "trace", "private"):
        (root / name).mkdir(parents=True)
    (tmp_path / "main.cf").write_text(f"queue_directory = {root}\nmyhostname = postclient.test\n"
                                      f"maillog_file = {tmp_path}/maillog\n")
    scache = ScacheProcess(str(tmp_path))
    try:
        markers, messages = {}, []
        for n, user in enumerate(("alice", "bob", "carol")):
            marker, content = message(f"batch {n}")
            markers[user] = marker
            path = queuefile.write_queue_file(str(root / "active"), f"L{n}", sender="sender@client.test",
                                              recipients=[Recipient(f"{user}@lmtp.test")],
                                              content=content.replace(b"\n", b"\r\n"),
                                              arrival_time=time.time())
            offsets = [{"offset": r.offset} for r in queuefile.read_queue_file(path).recipients]
            messages.append({"queue_name": "active", "queue_id": f"L{n}", "recipients": offsets})
        connects_before = dovecot.log().count("Info: Connect from")
        reply = service.handle_batch({"request": "deliver", "nexthop": nexthop, "messages": messages,
                                      "flags": {}}, _ServiceContext(str(tmp_path)))
        assert [m["results"][0]["status"] for m in reply["messages"]] == ["sent"] * 3, reply
        assert {m["results"][0]["relay"] for m in reply["messages"]} == {relay}
        for user, marker in markers.items():
            assert len(stored(dovecot, user, marker)) == 1
        # one LMTP session for the three (no probe in between: nothing else to see)
        assert dovecot.log().count("Info: Connect from") == connects_before + 1
    finally:
        reuse.release_held()
        scache.kill()


def test_a_threaded_lmtp_agent_delivers_to_dovecot_under_a_master(dovecot, master_instance):
    """lmtp_agent_threads=3 under maxproc 6: six requests at once, served by the threads of
    at most two processes, each message stored once."""
    master = master_instance(["lmtp unix - - n - 6 lmtp -o lmtp_agent_threads=3"],
                             "myhostname = postclient.test\n")
    users = ("alice", "bob", "carol") * 2
    markers, replies, threads = [], {}, []
    for n, user in enumerate(users):
        marker, content = message(f"threaded {n}")
        markers.append(marker)
        path = queuefile.write_queue_file(
            f"{master.queue_directory}/active", f"T{n}", sender="sender@client.test",
            recipients=[Recipient(f"{user}@lmtp.test")], content=content.replace(b"\n", b"\r\n"),
            arrival_time=time.time())
        offsets = [r.offset for r in queuefile.read_queue_file(path).recipients]

        def request(queue_id=f"T{n}", offsets=offsets):
            replies[queue_id] = agent_client.deliver_request(
                master.socket_path("lmtp"), "active", queue_id, f"unix:{dovecot.unix_path}",
                offsets, timeout=60)

        threads.append(threading.Thread(target=request))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [replies[f"T{n}"]["results"][0]["status"] for n in range(6)] == ["sent"] * 6, replies
    for user, marker in zip(users, markers):
        assert len(stored(dovecot, user, marker)) == 1
    assert 1 <= len({reply["pid"] for reply in replies.values()}) <= 2
