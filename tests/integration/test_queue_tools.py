"""The queue tools as an operator runs them: ``python -m postclient queue|super|cat``.

Each test builds a queue in a short temporary directory (UNIX socket paths
are limited to 107 bytes) and, where the queue manager matters, listens on
``public/qmgr`` itself: a fake queue manager that announces the qmgr
protocol and records what it is asked.  One test runs a real master whose
``public/qmgr`` is served by another protocol (the echo service).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from postclient import ipc
from postclient.master.listen import make_queue_directories
from postclient.queue import queuefile, statuslog
from tests.integration.master_harness import master_instance, wait_until  # noqa: F401 (fixture)
from tests.integration.servers import recording_server  # noqa: F401 (fixture)

ID1 = "0660CF1CE689CF05CFD000"
ID2 = "0660CF1CE689CF05CFD001"
ARRIVAL = 1605989735
CONTENT = b"Subject: hello\r\n\r\nbody\r\n"
REFUSED = "connect to mx.example.com[192.0.2.1]:25: Connection refused"


class Queue:
    def __init__(self, root):
        self.root = root
        self.config_dir = os.path.join(root, "etc")
        self.directory = os.path.join(root, "q")
        os.makedirs(self.config_dir)
        make_queue_directories(self.directory)
        with open(os.path.join(self.config_dir, "main.cf"), "w") as handle:
            handle.write(f"queue_directory = {self.directory}\nipc_timeout = 5s\n")

    def path(self, *parts):
        return os.path.join(self.directory, *parts)

    def put(self, queue_name, queue_id, recipients=("a@example.com",), **extra):
        return queuefile.write_queue_file(self.path(queue_name), queue_id, sender="s@example.com",
                                          recipients=list(recipients), content=CONTENT,
                                          arrival_time=ARRIVAL, **extra)

    def cli(self, *args, stdin=None):
        return subprocess.run([sys.executable, "-m", "postclient", "-c", self.config_dir, *args],
                              input=stdin, capture_output=True, text=True, timeout=30,
                              env=dict(os.environ, TZ="UTC"))


@pytest.fixture
def queue():
    root = tempfile.mkdtemp(prefix="pcq", dir="/tmp")
    yield Queue(root)
    shutil.rmtree(root, ignore_errors=True)


class FakeQmgr:
    """Listens on public/qmgr, announces ``protocol``, records one request per connection."""

    def __init__(self, path, protocol="qmgr", answer=None):
        self.requests = []
        self.answer = answer
        self.protocol = protocol
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                deadline = time.monotonic() + 5
                try:
                    ipc.announce(conn, self.protocol, 1, deadline)
                    self.requests.append(ipc.receive_message(conn, deadline))
                    if self.answer is not None:
                        ipc.send_message(conn, self.answer, deadline)
                except ipc.IpcError:
                    pass

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def fake_qmgr(queue):
    servers = []

    def start(**options):
        server = FakeQmgr(queue.path("public", "qmgr"), **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


# --- flush ------------------------------------------------------------------------------
def test_flush_asks_the_queue_manager(queue, fake_qmgr):
    qmgr = fake_qmgr()
    done = queue.cli("queue", "-f")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    done = queue.cli("queue", "-s", "Example.COM")
    assert (done.returncode, done.stderr) == (0, "")
    assert qmgr.requests == [{"request": "flush"}, {"request": "flush_site", "site": "example.com"}]


def test_flush_accepts_an_ok_answer_and_reports_a_refusal(queue, fake_qmgr):
    qmgr = fake_qmgr(answer={"status": "ok"})
    assert queue.cli("queue", "-f").returncode == 0
    qmgr.answer = {"status": "error", "reason": "unknown destination"}
    done = queue.cli("queue", "-s", "example.net")
    assert done.returncode == 75 and "refused the request: unknown destination" in done.stderr
    assert len(qmgr.requests) == 2


def test_flush_without_a_queue_manager_exits_75_and_keeps_the_mail(queue):
    queue.put("deferred", ID1)
    done = queue.cli("queue", "-f")
    assert (done.returncode, done.stdout) == (75, "")
    assert done.stderr.startswith("postclient/queue: warning: cannot flush the mail queue: connect to ")
    assert "will be processed when the queue manager runs" in done.stderr
    assert os.listdir(queue.path("deferred")) == [ID1]


def test_flush_with_a_stale_socket_exits_75(queue):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(queue.path("public", "qmgr"))
    stale.close()                                   # the file stays, nobody listens
    done = queue.cli("queue", "-s", "example.com")
    assert done.returncode == 75 and "Connection refused" in done.stderr


def test_flush_refuses_a_listener_that_is_not_a_queue_manager(queue, fake_qmgr):
    impostor = fake_qmgr(protocol="delivery")
    done = queue.cli("queue", "-f")
    assert done.returncode == 75 and "expected protocol qmgr version 1" in done.stderr
    assert impostor.requests == []


def test_flush_and_release_reach_the_real_queue_manager(master_instance, recording_server):  # noqa: F811
    server = recording_server()
    master = master_instance(["smtp unix - - n - 2 smtp", "qmgr unix n - n 300 1 qmgr"],
                             f"relayhost = {server.nexthop}\nqueue_run_delay = 300s\n")
    queue = master.queue_directory
    staging = os.path.join(queue, "staging")
    os.mkdir(staging)
    for queue_name, queue_id in (("deferred", ID1), ("hold", ID2)):
        # Made not due for an hour before it enters the queue: the queue manager's first
        # scan of deferred/ may run at any moment and must not find it due.
        path = queuefile.write_queue_file(staging, queue_id, sender="s@example.com",
                                          recipients=[f"{queue_id}@example.net"],
                                          content=CONTENT, arrival_time=time.time())
        os.utime(path, (time.time() + 3600, time.time() + 3600))
        os.rename(path, os.path.join(queue, queue_name, queue_id))
    listed = master.cli("queue", "-j")
    assert [json.loads(line)["queue_name"] for line in listed.stdout.splitlines()] == ["deferred", "hold"]
    done = master.cli("queue", "-f")
    assert (done.returncode, done.stderr) == (0, "")
    wait_until(lambda: len(server.messages) == 1 and not os.listdir(os.path.join(queue, "deferred"))
               and not os.listdir(os.path.join(queue, "active")), 20, what="the flushed message")
    assert os.listdir(os.path.join(queue, "hold")) == [ID2]        # a flush never touches hold/
    done = master.cli("super", "-H", ID2)
    assert done.returncode == 0 and "warning" not in done.stderr
    assert master.cli("queue", "-s", "example.net").returncode == 0
    wait_until(lambda: len(server.messages) == 2, 20, what="the released message")
    wait_until(lambda: master.cli("queue").stdout == "Mail queue is empty\n", 10, what="an empty queue")


def test_flush_against_a_real_master_without_a_queue_manager(master_instance):  # noqa: F811
    master = master_instance(["qmgr unix n - n - 1 echo"])
    done = master.cli("queue", "-f")
    assert done.returncode == 75 and "expected protocol qmgr version 1, got 'echo'" in done.stderr
    done = master.cli("queue")
    assert (done.returncode, done.stdout) == (0, "Mail queue is empty\n")


# --- listing ------------------------------------------------------------------------------
def test_listing_and_json_from_the_command_line(queue):
    path = queue.put("deferred", ID1, ["a@example.com", "b@example.com"])
    queued = queuefile.read_queue_file(path)
    statuslog.append_status(queue.directory, "defer", ID1, statuslog.StatusRecord(
        recipient="a@example.com", offset=queued.recipients[0].offset, text=REFUSED))
    queue.put("hold", ID2)
    with open(queue.path("incoming", "0660CF1CE689CF05CFD0FF"), "wb") as handle:
        handle.write(b"PCQ1\nA")
    done = queue.cli("queue", "-p")
    assert done.returncode == 0
    assert done.stdout == (
        "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
        f"{ID1}      {len(CONTENT)} Sat Nov 21 20:15:35  s@example.com\n"
        + " " * (76 - len(REFUSED)) + f"({REFUSED})\n"
        + " " * 41 + "a@example.com\n"
        + " " * 58 + "(reason unavailable)\n"
        + " " * 41 + "b@example.com\n"
        "\n"
        f"{ID2}!      {len(CONTENT)} Sat Nov 21 20:15:35  s@example.com\n"
        + " " * 41 + "a@example.com\n"
        "\n-- 0 Kbytes in 2 Requests.\n")
    assert "incoming/0660CF1CE689CF05CFD0FF: corrupt queue file" in done.stderr
    done = queue.cli("queue", "-j")
    assert done.returncode == 0
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        {"queue_name": "deferred", "queue_id": ID1, "arrival_time": ARRIVAL,
         "message_size": len(CONTENT), "forced_expire": False, "sender": "s@example.com",
         "recipients": [{"address": "a@example.com", "delay_reason": REFUSED},
                        {"address": "b@example.com"}]},
        {"queue_name": "hold", "queue_id": ID2, "arrival_time": ARRIVAL,
         "message_size": len(CONTENT), "forced_expire": False, "sender": "s@example.com",
         "recipients": [{"address": "a@example.com"}]}]
    assert os.listdir(queue.path("corrupt")) == []


# --- super and cat ------------------------------------------------------------------------
def test_requeue_moves_the_message_and_wakes_the_queue_manager(queue, fake_qmgr):
    qmgr = fake_qmgr()
    queue.put("deferred", ID1)
    done = queue.cli("super", "-r", ID1)
    assert done.returncode == 0
    assert done.stderr == f"postclient/super: {ID1}: requeued\npostclient/super: Requeued: 1 message\n"
    assert os.listdir(queue.path("incoming")) == [ID1] and os.listdir(queue.path("deferred")) == []
    assert qmgr.requests == [{"request": "wakeup"}]


def test_requeue_without_a_queue_manager_warns_and_still_moves(queue):
    queue.put("hold", ID1)
    done = queue.cli("super", "-H", "ALL")
    assert done.returncode == 0 and os.listdir(queue.path("deferred")) == [ID1]
    assert "Released from hold: 1 message" in done.stderr
    assert "processed when the queue manager runs" in done.stderr


def test_delete_ids_from_standard_input(queue):
    queue.put("deferred", ID1)
    queue.put("hold", ID2)
    done = queue.cli("super", "-d", "-", stdin=f"{ID1}\nnonsense\n{ID2}\n")
    assert done.returncode == 0
    assert done.stderr == (f"postclient/super: {ID1}: removed\n"
                           "postclient/super: warning: invalid mail queue id: nonsense\n"
                           f"postclient/super: {ID2}: removed\n"
                           "postclient/super: Deleted: 2 messages\n")
    assert os.listdir(queue.path("deferred")) == os.listdir(queue.path("hold")) == []


def test_cat_from_the_command_line(queue):
    path = queue.put("deferred", ID1)
    offset = queuefile.read_queue_file(path).content_offset
    done = subprocess.run([sys.executable, "-m", "postclient", "-c", queue.config_dir, "cat", ID1],
                          capture_output=True, timeout=30, env=dict(os.environ, TZ="UTC"))
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout == (
        f"*** ENVELOPE RECORDS deferred/{ID1} ***\n"
        f"message_size: {len(CONTENT):>15} {offset:>15} {1:>15}\n"
        "message_arrival_time: Sat Nov 21 20:15:35 2020\n"
        "sender: s@example.com\n"
        "named_attribute: encoding=unknown\n"
        "named_attribute: smtputf8=0\n"
        "recipient: a@example.com\n"
        f"*** MESSAGE CONTENTS deferred/{ID1} ***\n").encode() + CONTENT + (
        f"*** HEADER EXTRACTED deferred/{ID1} ***\n"
        f"*** MESSAGE FILE END deferred/{ID1} ***\n").encode()
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) - 3)
    done = queue.cli("cat", ID1)
    assert done.returncode == 1 and "corrupt queue file" in done.stderr
    assert done.stdout.startswith(f"*** ENVELOPE RECORDS deferred/{ID1} ***\n")
