"""The queue manager end to end: real master, qmgr, smtp agents and receiving servers.

Mail is queued as sendmail would queue it (a durable file in incoming/, then a
wakeup on public/qmgr); a scripted server on loopback receives it, including
the notices the queue manager sends back to the sender (relayhost routes
everything to the test server).
"""

import email
import email.policy
import os
import socket
import time

import pytest

from postclient import ipc
from postclient.queue import queuefile, statuslog
from postclient.queue.qid import new_queue_id
from postclient.smtp.request import Recipient
from tests.integration.counting_server import CountingServer
from tests.integration.master_harness import cmdline, master_instance, wait_until  # noqa: F401
from tests.integration.servers import Script, recording_server  # noqa: F401

pytestmark = pytest.mark.integration

MASTER_CF = ["smtp unix - - n - 4 smtp", "qmgr unix n - n 300 1 qmgr"]
FAST_RETRY = ("minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\nqueue_run_delay = 1s\n"
              "smtp_helo_timeout = 10s\n")


def start(master_instance, server, extra=""):
    return master_instance(MASTER_CF, f"relayhost = {server.nexthop}\n{FAST_RETRY}{extra}")


def submit(master, recipients, sender="alice@example.com", content=None, notify=""):
    queue_id = new_queue_id()
    content = content or (b"From: alice@example.com\r\nSubject: qmgr test\r\nMessage-Id: <"
                          + queue_id.encode() + b"@example.com>\r\n\r\nhello\r\n")
    queuefile.write_queue_file(os.path.join(master.queue_directory, "incoming"), queue_id, sender=sender,
                               recipients=[Recipient(r, notify=notify) for r in recipients],
                               content=content, arrival_time=time.time())
    wake(master)
    return queue_id


def wake(master, request=None):
    deadline = time.monotonic() + 10
    sock = ipc.connect_unix(master.socket_path("qmgr", public=True), deadline)
    try:
        ipc.expect_protocol(sock, "qmgr", 1, deadline)
        ipc.send_message(sock, request or {"request": "wakeup"}, deadline)
    finally:
        sock.close()


def queue_files(master, name):
    directory = os.path.join(master.queue_directory, name)
    return sorted(n for n in os.listdir(directory) if not n.startswith("."))


def empty_queue(master):
    return not any(queue_files(master, name) for name in ("incoming", "active", "deferred"))


def messages_to(server, address):
    found = []
    for message in server.messages:
        if any(address in rcpt.decode() for rcpt in message.rcpt_lines):
            found.append(email.message_from_bytes(message.content, policy=email.policy.compat32))
    return found


def test_submitted_mail_is_delivered_and_removed(master_instance, recording_server):
    server = recording_server()
    master = start(master_instance, server)
    queue_id = submit(master, ["bob@example.net", "carol@example.net"])
    wait_until(lambda: empty_queue(master), 20, what="the queue to drain")
    assert len(server.messages) == 1
    assert master.wait_for_log(rf"{queue_id}: removed")
    assert master.log_lines(rf"{queue_id}: from=<alice@example.com>, size=\d+, nrcpt=2 \(queue active\)")
    assert len(master.log_lines(rf"{queue_id}: to=<.*status=sent")) == 2


def nice_values(pid):
    """The nice value of each thread of a process (Linux keeps one per thread)."""
    values = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/stat") as handle:
            data = handle.read()
        values.append(int(data[data.rindex(")") + 2:].split()[16]))
    return values


def qmgr_pid(master):
    found = [pid for pid in master.session_pids() if "qmgr" in (cmdline(pid) or "")]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may raise a priority")
@pytest.mark.parametrize("boost", [None, 0, 3])
def test_the_queue_manager_runs_at_a_raised_priority(master_instance, recording_server, boost):
    server = recording_server()
    extra = "" if boost is None else f"qmgr_priority_boost = {boost}\n"
    master = start(master_instance, server, extra)
    submit(master, ["bob@example.net"])                # the file worker's threads are running
    wait_until(lambda: empty_queue(master), 20, what="the queue to drain")
    master_nice = nice_values(master.master_pid)[0]
    expected = max(-20, master_nice - (5 if boost is None else boost))
    threads = nice_values(qmgr_pid(master))
    assert len(threads) > 1 and set(threads) == {expected}


def test_a_5xx_recipient_produces_an_rfc3464_bounce(master_instance, recording_server):
    server = recording_server(Script(rcpt_replies={"nobody@example.net": "550 5.1.1 <{rcpt}>: no such user"}))
    master = start(master_instance, server)
    queue_id = submit(master, ["bob@example.net", "nobody@example.net"])
    wait_until(lambda: messages_to(server, "alice@example.com"), 20, what="the bounce")
    wait_until(lambda: empty_queue(master), 20, what="the queue to drain")
    (bounce,) = messages_to(server, "alice@example.com")
    assert bounce["Subject"] == "Undelivered Mail Returned to Sender"
    assert bounce.get_content_type() == "multipart/report"
    report = [p for p in bounce.walk() if p.get_content_type() == "message/delivery-status"][0]
    per_message, per_recipient = [dict(b.items()) for b in report.get_payload()]
    assert per_message["X-Postfix-Queue-ID"] == queue_id
    assert per_recipient["Final-Recipient"] == "rfc822; nobody@example.net"
    assert per_recipient["Action"] == "failed" and per_recipient["Status"] == "5.1.1"
    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 <nobody@example.net>: no such user"
    returned = bounce.get_payload()[2].get_payload()[0]
    assert returned["Subject"] == "qmgr test"
    # the bounce itself comes from the null sender
    assert any(m.mail_line.startswith(b"MAIL FROM:<>") for m in server.messages)


def test_a_4xx_destination_is_retried_and_delivered_when_it_recovers(master_instance, recording_server):
    server = recording_server(Script(rcpt_reply="451 4.3.0 try again later"))
    master = start(master_instance, server)
    queue_id = submit(master, ["bob@example.net"])
    wait_until(lambda: queue_files(master, "deferred") == [queue_id], 20, what="the deferral")
    defer = statuslog.read_status(master.queue_directory, "defer", queue_id)
    assert defer and defer[-1].dsn == "4.3.0"
    server.script.rcpt_reply = "250 2.1.5 ok"
    wait_until(lambda: empty_queue(master), 30, what="the retry to succeed")
    assert len(server.messages) == 1
    assert master.log_lines(rf"{queue_id}: to=<bob@example.net>.*status=deferred")
    assert master.log_lines(rf"{queue_id}: to=<bob@example.net>.*status=sent")


def test_a_message_past_its_lifetime_bounces(master_instance, recording_server):
    server = recording_server(Script(rcpt_replies={"slow@example.net": "450 4.2.0 mailbox busy"}))
    master = start(master_instance, server, "maximal_queue_lifetime = 0\n")
    queue_id = submit(master, ["slow@example.net"])
    wait_until(lambda: messages_to(server, "alice@example.com"), 20, what="the expiry bounce")
    (bounce,) = messages_to(server, "alice@example.com")
    report = [p for p in bounce.walk() if p.get_content_type() == "message/delivery-status"][0]
    per_recipient = dict(report.get_payload()[1].items())
    assert per_recipient["Action"] == "failed" and per_recipient["Status"] == "4.2.0"
    assert master.wait_for_log(rf"{queue_id}: from=<alice@example.com>, status=expired, returned to sender")
    wait_until(lambda: empty_queue(master), 20, what="the queue to drain")


@pytest.mark.parametrize("keywords, notices", [(("PIPELINING",), 1), (("PIPELINING", "DSN"), 0)])
def test_notify_success(master_instance, recording_server, keywords, notices):
    server = recording_server(Script(ehlo_keywords=keywords))
    master = start(master_instance, server)
    submit(master, ["bob@example.net"], notify="SUCCESS")
    wait_until(lambda: empty_queue(master) and len(server.messages) >= 1 + notices, 20,
               what="delivery (and the success notice)")
    time.sleep(1.5)
    reports = messages_to(server, "alice@example.com")
    assert len(reports) == notices
    if notices:
        assert reports[0]["Subject"] == "Successful Mail Delivery Report"
        block = dict([p for p in reports[0].walk()
                      if p.get_content_type() == "message/delivery-status"][0].get_payload()[1].items())
        assert block["Action"] == "relayed"


def test_null_sender_bounce_goes_to_the_double_bounce_recipient(master_instance, recording_server):
    server = recording_server(Script(rcpt_replies={"gone@example.net": "550 5.1.1 gone"}))
    master = start(master_instance, server, "2bounce_notice_recipient = postmaster@relay.example\n")
    submit(master, ["gone@example.net"], sender="")
    wait_until(lambda: messages_to(server, "postmaster@relay.example"), 20, what="the double bounce")
    wait_until(lambda: empty_queue(master), 20, what="the queue to drain")


def test_active_messages_are_recovered_after_a_restart(master_instance, recording_server):
    server = recording_server()
    master = start(master_instance, server)
    master.stop()
    queue_id = new_queue_id()
    active = os.path.join(master.queue_directory, "active")
    queuefile.write_queue_file(active, queue_id, sender="alice@example.com",
                               recipients=[Recipient("done@example.net"), Recipient("todo@example.net")],
                               content=b"Subject: recovered\r\n\r\nx\r\n", arrival_time=time.time())
    queued = queuefile.read_queue_file(os.path.join(active, queue_id))
    queuefile.mark_done(queued.path, queued.recipients[0].offset)
    master.start()
    wait_until(lambda: empty_queue(master), 20, what="recovery")
    (message,) = server.messages
    assert message.recipients == ["todo@example.net"]          # never the done one again


def test_delay_warning_is_sent_once(master_instance, recording_server):
    server = recording_server(Script(rcpt_replies={"late@example.net": "451 4.3.0 later"}))
    master = start(master_instance, server, "delay_warning_time = 1s\n")
    queue_id = submit(master, ["late@example.net"])
    wait_until(lambda: messages_to(server, "alice@example.com"), 20, what="the delay warning")
    time.sleep(3)                                   # several more retries
    warnings = messages_to(server, "alice@example.com")
    assert len(warnings) == 1
    assert warnings[0]["Subject"] == "Delayed Mail (still being retried)"
    report = [p for p in warnings[0].walk() if p.get_content_type() == "message/delivery-status"][0]
    assert dict(report.get_payload()[1].items())["Action"] == "delayed"
    assert queue_id in queue_files(master, "deferred") + queue_files(master, "active")


def test_held_mail_is_left_alone(master_instance, recording_server):
    server = recording_server()
    master = start(master_instance, server)
    queue_id = new_queue_id()
    queuefile.write_queue_file(os.path.join(master.queue_directory, "hold"), queue_id, sender="a@example.com",
                               recipients=["held@example.net"], content=b"Subject: held\r\n\r\nx\r\n",
                               arrival_time=time.time())
    wake(master, {"request": "flush"})
    time.sleep(2)
    assert server.messages == [] and queue_files(master, "hold") == [queue_id]


def test_released_mail_goes_out_at_once_without_a_flush(master_instance, recording_server):
    """super -H asks the queue manager to scan deferred/ (queue_run_delay is 300 s here)."""
    server = recording_server()
    master = start(master_instance, server, "queue_run_delay = 300s\n")
    for number in range(3):
        queuefile.write_queue_file(os.path.join(master.queue_directory, "hold"), new_queue_id(),
                                   sender="a@example.com", recipients=[f"r{number}@example.net"],
                                   content=b"Subject: held\r\n\r\nx\r\n", arrival_time=time.time())
    wake(master)                            # the queue manager runs, and has scanned deferred/
    time.sleep(1)
    result = master.cli("super", "-H", "ALL")
    assert result.returncode == 0, result.stderr
    wait_until(lambda: empty_queue(master), 10, what="the released mail to go out")
    assert all(len(messages_to(server, f"r{n}@example.net")) == 1 for n in range(3))


def test_an_unreadable_queue_directory_leaves_the_queue_manager_running(master_instance,
                                                                       recording_server):
    """deferred/ turned into a file: the scans warn once and new mail still goes out, by
    the same queue manager; a restarted one starts all the same, and the mail that waited
    in the directory goes out once it is back."""
    server = recording_server()
    master = start(master_instance, server)
    first = submit(master, ["first@example.net"])
    wait_until(lambda: empty_queue(master), 20, what="the first message to go out")
    pid = qmgr_pid(master)
    deferred = os.path.join(master.queue_directory, "deferred")
    aside = deferred + ".aside"
    os.rename(deferred, aside)
    waiting = new_queue_id()
    queuefile.write_queue_file(aside, waiting, sender="a@example.com",
                               recipients=["waited@example.net"],
                               content=b"Subject: waited\r\n\r\nx\r\n", arrival_time=time.time())
    with open(deferred, "wb"):
        pass
    for _ in range(2):
        wake(master, {"request": "flush"})
    second = submit(master, ["second@example.net"])
    wait_until(lambda: messages_to(server, "second@example.net"), 20,
               what="new mail to go out past the unreadable directory")
    assert master.wait_for_log(rf"cannot read queue directory {deferred}: Not a directory")
    assert len(master.log_lines(r"cannot read queue directory")) == 1
    assert qmgr_pid(master) == pid
    os.kill(pid, 9)                 # a new queue manager starts in spite of it
    third = submit(master, ["third@example.net"])
    wait_until(lambda: messages_to(server, "third@example.net"), 20,
               what="mail to go out through a restarted queue manager")
    assert master.log_lines(rf"cannot create queue directory {deferred}: File exists")
    os.unlink(deferred)
    os.rename(aside, deferred)
    wake(master, {"request": "flush"})
    wait_until(lambda: messages_to(server, "waited@example.net"), 20,
               what="the mail that waited in deferred/")
    assert master.wait_for_log(rf"queue directory {deferred} can be read again")
    assert all(len(messages_to(server, f"{name}@example.net")) == 1
               for name in ("first", "second", "third", "waited"))
    assert first != second != third


def test_a_crashing_agent_defers_with_4_3_0_and_throttles_the_transport(master_instance, recording_server):
    server = recording_server()
    # "broken" is served by a program that does not speak the delivery protocol: the
    # request breaks off at once, as when an agent crashes
    master = master_instance(MASTER_CF + ["broken unix - - n - 1 echo"],
                             f"relayhost = {server.nexthop}\n{FAST_RETRY}transport_retry_time = 30s\n"
                             "transport_maps = inline:{ broken.example=broken: }\n")
    queue_id = submit(master, ["x@broken.example", "y@fine.example"])
    wait_until(lambda: queue_files(master, "deferred") == [queue_id], 30, what="the deferral")
    defer = statuslog.read_status(master.queue_directory, "defer", queue_id)
    assert [(r.recipient, r.dsn) for r in defer] == [("x@broken.example", "4.3.0")]
    assert "mail transport unavailable" in defer[0].text
    assert [m.recipients for m in server.messages] == [["y@fine.example"]]


def test_an_agent_that_does_not_answer_within_ipc_timeout_is_given_up(master_instance, recording_server):
    server = recording_server()
    silent = socket.socket()            # connections complete in its backlog; no greeting ever
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        port = silent.getsockname()[1]
        master = master_instance(MASTER_CF, f"relayhost = {server.nexthop}\n{FAST_RETRY}ipc_timeout = 5s\n"
                                            "transport_retry_time = 30s\n"
                                            f"transport_maps = inline:{{ silent.example=smtp:[127.0.0.1]:{port} }}\n")
        began = time.monotonic()
        queue_id = submit(master, ["x@silent.example", "y@fine.example"])
        # the other recipient goes out while the first request is still waiting
        wait_until(lambda: [m.recipients for m in server.messages] == [["y@fine.example"]], 10,
                   what="the recipient of the answering destination")
        assert statuslog.read_status(master.queue_directory, "defer", queue_id) == []
        assert queue_files(master, "deferred") == []
        wait_until(lambda: queue_files(master, "deferred") == [queue_id], 20, what="the deferral")
        assert time.monotonic() - began >= 5
        defer = statuslog.read_status(master.queue_directory, "defer", queue_id)
        assert (defer[0].recipient, defer[0].dsn) == ("x@silent.example", "4.3.0")
        assert defer[0].text == ("mail transport unavailable: "
                                 f"{master.socket_path('smtp')}: timeout")
        assert master.log_lines(rf"{queue_id}: smtp transport problem: .*: timeout")
    finally:
        silent.close()


def test_a_dead_destination_is_suspended(master_instance, recording_server):
    server = recording_server()
    # one recipient per request, one request at a time: the first connection
    # failure must suspend the destination for the other two
    master = master_instance(MASTER_CF, f"relayhost = {server.nexthop}\n{FAST_RETRY}"
                                        "minimal_backoff_time = 30s\nmaximal_backoff_time = 60s\n"
                                        "default_destination_recipient_limit = 1\n"
                                        "initial_destination_concurrency = 1\n"
                                        "transport_maps = inline:{ dead.example=smtp:[127.0.0.1]:9 }\n")
    queue_id = submit(master, ["a@dead.example", "b@dead.example", "c@dead.example", "ok@alive.example"])
    wait_until(lambda: queue_files(master, "deferred") == [queue_id], 30, what="the deferral")
    defer = statuslog.read_status(master.queue_directory, "defer", queue_id)
    assert sorted(r.recipient for r in defer) == ["a@dead.example", "b@dead.example", "c@dead.example"]
    tried = [r for r in defer if r.text.startswith("connect to 127.0.0.1[127.0.0.1]:9: ")]
    suspended = [r for r in defer if r.text.startswith("delivery temporarily suspended: connect to ")]
    assert len(tried) == 1 and len(suspended) == 2
    assert [m.recipients for m in server.messages] == [["ok@alive.example"]]


def test_flush_revives_a_suspended_destination(master_instance, recording_server):
    server = recording_server()
    dead_port = server.nexthop.rsplit(":", 1)[1]
    server.stop()                                   # the destination is down...
    master = master_instance(MASTER_CF, f"relayhost = [127.0.0.1]:{dead_port}\n"
                                        "minimal_backoff_time = 300s\nmaximal_backoff_time = 600s\n")
    queue_id = submit(master, ["bob@example.net"])
    wait_until(lambda: queue_files(master, "deferred") == [queue_id], 20, what="the deferral")
    revived = recording_server(port=int(dead_port))  # ...and comes back
    wake(master, {"request": "flush"})
    wait_until(lambda: empty_queue(master), 20, what="the flush to deliver despite the suspension")
    assert [m.recipients for m in revived.messages] == [["bob@example.net"]]


def start_batching(master_instance, server, concurrency):
    """A relay with scache, batches of up to 10 and a fixed concurrency."""
    return master_instance(MASTER_CF + ["scache unix - - n - 1 scache"],
                           f"relayhost = {server.nexthop}\n{FAST_RETRY}"
                           f"initial_destination_concurrency = {concurrency}\n"
                           f"default_destination_concurrency_limit = {concurrency}\n"
                           "default_delivery_batch_limit = 10\n")


def queue_backlog(master, count):
    """``count`` one-recipient messages in incoming/ (r0@example.com ...), then a wakeup."""
    incoming = os.path.join(master.queue_directory, "incoming")
    for n in range(count):
        queue_id = new_queue_id()
        content = b"Message-Id: <" + queue_id.encode() + b"@x>\r\n\r\nhi\r\n"
        queuefile.write_queue_file(incoming, queue_id, sender="alice@example.com",
                                   recipients=[Recipient(f"r{n}@example.com")],
                                   content=content, arrival_time=time.time())
    wake(master)


def test_a_backlog_goes_out_in_batches_over_few_sessions(master_instance, recording_server):
    server = recording_server()
    master = start_batching(master_instance, server, 1)
    queue_backlog(master, 30)
    wait_until(lambda: len(server.messages) == 30 and empty_queue(master), 60,
               what="the backlog to be delivered")
    assert sorted(m.rcpt_lines[0].split(b">")[0] for m in server.messages) == sorted(
        f"RCPT TO:<r{n}@example.com".encode() for n in range(30))
    # One request at a time, up to 10 messages each (fewer while the queue manager is
    # still reading the files in: a batch takes the backlog there is).  Inside a
    # request the session goes on without a probe; only a new request probes a kept
    # session or connects.  One message per request would make that 30.
    probes = sum(line.upper() == b"RSET\r\n" for s in server.sessions for line in s.lines)
    assert probes + len(server.sessions) <= 12
    assert len(master.log_lines(r"status=sent")) == 30


def test_a_reload_during_a_batched_drain_defers_nothing(master_instance):
    # Agents see the reload (their lifeline closes) in the middle of their batches:
    # each finishes the message at hand and hands the rest back, which new agents
    # deliver - nothing is deferred, nothing is sent twice.
    server = CountingServer(dot_delay=0.05).start()
    try:
        master = start_batching(master_instance, server, 2)
        queue_backlog(master, 40)
        wait_until(lambda: len(server.counts()) >= 3, 30, what="the first deliveries")
        master.reload()
        wait_until(lambda: len(server.counts()) == 40 and empty_queue(master), 60,
                   what="the drain after the reload")
        assert sorted(server.counts().values()) == [1] * 40
        assert not master.log_lines(r"status=deferred")
        assert not os.listdir(os.path.join(master.queue_directory, "defer"))
    finally:
        server.stop()
