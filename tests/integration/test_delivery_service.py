"""The smtp service's request/reply protocol, queue file updates and status logs.

Runs the service callback (postclient.smtp.service.serve) on one end of a
UNIX socket pair, as the child skeleton would, and talks to it with the
client module the queue manager uses; the receiving server is Postfix's
smtp-sink.  The master-driven tests are in test_services.py.
"""

import dataclasses
import os
import socket
import threading

import pytest

from postclient.config.config import Config
from postclient.queue import queuefile, statuslog
from postclient.smtp import agent_client, service
from postclient.smtp.request import Recipient
from tests.integration.servers import Script, recording_server, smtp_sink  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

CONTENT = b"Subject: service test\r\n\r\nhello\r\n.leading dot\r\n"


@dataclasses.dataclass
class Context:
    config: object
    queue_directory: str
    command: str = "smtp"
    ipc_timeout: int = 30


@pytest.fixture
def queue(tmp_path):
    for name in ("active", "bounce", "defer", "trace", "private"):
        (tmp_path / name).mkdir()
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}\nmaillog_file = {tmp_path}/maillog\n"
                                      "smtp_helo_timeout = 5s\n")
    return tmp_path


def serve_once(queue, command="smtp"):
    """A socket path whose single client is served by service.serve in a thread."""
    path = str(queue / "private" / command)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    context = Context(Config.load(str(queue)), str(queue), command)

    def run():
        conn, _ = listener.accept()
        try:
            service.serve(conn, context)
        finally:
            conn.close()
            listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return path, thread


def enqueue(queue, recipients, queue_id="QID1"):
    path = queuefile.write_queue_file(str(queue / "active"), queue_id, sender="s@example.com",
                                      recipients=recipients, content=CONTENT, arrival_time=1.0)
    return queuefile.read_queue_file(path)


def test_sent_bounced_and_deferred_update_queue_file_and_logs(queue, recording_server, caplog):
    caplog.set_level("INFO", logger="postclient")
    server = recording_server(Script(rcpt_replies={"bad@example.com": "550 5.1.1 <{rcpt}>: unknown user",
                                                   "later@example.com": "450 4.2.0 <{rcpt}>: try later"}))
    queued = enqueue(queue, [Recipient("good@example.com", notify="SUCCESS"),
                             Recipient("bad@example.com"), Recipient("later@example.com")])
    path, thread = serve_once(queue)
    reply = agent_client.deliver_request(path, "active", "QID1", server.nexthop,
                                         [r.offset for r in queued.recipients], timeout=30)
    thread.join(10)
    assert reply["status"] == "ok" and reply["pid"] == os.getpid()
    outcome = {r["recipient"]: (r["status"], r["dsn"]) for r in reply["results"]}
    assert outcome == {"good@example.com": ("sent", "2.0.0"), "bad@example.com": ("bounced", "5.1.1"),
                       "later@example.com": ("deferred", "4.2.0")}
    done = {r.address: r.done for r in queuefile.read_queue_file(queued.path).recipients}
    assert done == {"good@example.com": True, "bad@example.com": True, "later@example.com": False}
    bounce = statuslog.read_status(str(queue), "bounce", "QID1")
    defer = statuslog.read_status(str(queue), "defer", "QID1")
    trace = statuslog.read_status(str(queue), "trace", "QID1")
    assert [(r.recipient, r.dsn) for r in bounce] == [("bad@example.com", "5.1.1")]
    assert bounce[0].reply == "550 5.1.1 <bad@example.com>: unknown user"
    assert bounce[0].relay == f"127.0.0.1[127.0.0.1]:{server.nexthop.rsplit(':', 1)[1]}"
    assert [(r.recipient, r.dsn, r.offset) for r in defer] == [
        ("later@example.com", "4.2.0", queued.recipients[2].offset)]
    assert trace == []          # the server announced DSN: success notices are its job
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("QID1: to=<bad@example.com>, relay=127.0.0.1[127.0.0.1]:") and
               line.endswith("status=bounced (host 127.0.0.1[127.0.0.1] said: 550 5.1.1 "
                             "<bad@example.com>: unknown user (in reply to RCPT TO command))") for line in lines)


@pytest.mark.parametrize("keywords, traced", [(("PIPELINING", "DSN"), []),
                                               (("PIPELINING",), ["asked@example.com"])])
def test_success_trace_only_when_the_server_lacks_dsn(queue, recording_server, keywords, traced):
    server = recording_server(Script(ehlo_keywords=keywords))
    queued = enqueue(queue, [Recipient("asked@example.com", notify="SUCCESS,FAILURE"),
                             Recipient("quiet@example.com")])
    path, thread = serve_once(queue)
    reply = agent_client.deliver_request(path, "active", "QID1", server.nexthop,
                                         [r.offset for r in queued.recipients], timeout=30)
    thread.join(10)
    assert [r["status"] for r in reply["results"]] == ["sent", "sent"]
    trace = statuslog.read_status(str(queue), "trace", "QID1")
    assert [r.recipient for r in trace] == traced
    assert all(r.status == "sent" and r.relay.endswith(server.nexthop.rsplit(":", 1)[1]) for r in trace)


def test_done_recipients_are_never_sent_again(queue, smtp_sink):
    sink = smtp_sink()
    queued = enqueue(queue, [Recipient("one@example.com"), Recipient("two@example.com")])
    queuefile.mark_done(queued.path, queued.recipients[0].offset)
    path, thread = serve_once(queue)
    reply = agent_client.deliver_request(path, "active", "QID1", sink.nexthop,
                                         [r.offset for r in queued.recipients], timeout=30)
    thread.join(10)
    statuses = {r["recipient"]: r["status"] for r in reply["results"]}
    assert statuses == {"one@example.com": "done", "two@example.com": "sent"}
    rcpts = [c for c in sink.commands() if c.upper().startswith("RCPT")]
    assert len(rcpts) == 1 and "two@example.com" in rcpts[0]


def test_corrupt_and_missing_queue_files_and_bad_offsets(queue, caplog):
    caplog.set_level("WARNING", logger="postclient")
    queued = enqueue(queue, [Recipient("one@example.com")])
    path, thread = serve_once(queue)
    sock_path = path
    reply = agent_client.deliver_request(sock_path, "active", "QID1", "[127.0.0.1]:9", [queued.content_offset],
                                         timeout=10)
    thread.join(10)
    assert reply["status"] == "error" and "no recipient record" in reply["reason"]
    assert queuefile.read_queue_file(queued.path).recipients[0].done is False

    os.unlink(path)
    with open(queued.path, "r+b") as handle:
        handle.truncate(os.path.getsize(queued.path) - 3)
    path, thread = serve_once(queue)
    reply = agent_client.deliver_request(path, "active", "QID1", "[127.0.0.1]:9", [queued.recipients[0].offset],
                                         timeout=10)
    thread.join(10)
    assert reply["status"] == "corrupt" and "QID1" in reply["reason"]
    assert not os.path.exists(queued.path)
    assert os.path.exists(queue / "corrupt" / "QID1")
    assert any(r.getMessage().startswith("QID1: corrupt queue file (") and
               r.getMessage().endswith("moved to corrupt/") for r in caplog.records)

    os.unlink(path)
    path, thread = serve_once(queue)
    reply = agent_client.deliver_request(path, "active", "../../etc/passwd", "[127.0.0.1]:9", [1], timeout=10)
    thread.join(10)
    assert reply["status"] == "error" and "bad queue name or id" in reply["reason"]


def test_lmtp_service_speaks_lmtp(queue, smtp_sink):
    sink = smtp_sink(lmtp=True)
    queued = enqueue(queue, [Recipient("x@example.com"), Recipient("y@example.com")])
    path, thread = serve_once(queue, "lmtp")
    reply = agent_client.deliver_request(path, "active", "QID1", sink.lmtp_nexthop,
                                         [r.offset for r in queued.recipients], timeout=30)
    thread.join(10)
    assert [r["status"] for r in reply["results"]] == ["sent", "sent"]
    assert "LHLO" in sink.verbs()
    assert not queuefile.read_queue_file(queued.path).pending()


def test_unreachable_agent_is_an_agent_error(queue):
    with pytest.raises(agent_client.AgentError):
        agent_client.deliver_request(str(queue / "private" / "nothing"), "active", "QID1", "x", [1], timeout=2)
