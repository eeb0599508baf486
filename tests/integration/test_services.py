"""The smtp service under a real master: crash safety and reload, end to end.

A master runs the smtp service on a temporary configuration and queue; a
small SMTP server on loopback receives.  Companion files: test_master.py
(the master and skeleton with the echo service) and test_reuse.py
(connection caching through scache).
"""

import fcntl
import os
import signal
import socket
import threading
import time

import pytest

from postclient.queue import queuefile
from postclient.smtp import agent_client
from postclient.smtp.request import Recipient
from tests.integration.master_harness import master_instance, wait_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

MASTER_CF = ["smtp unix - - n - 4 smtp"]


class SlowSmtpServer:
    """Accepts SMTP; waits ``dot_delay`` seconds (or forever, None) before answering "."."""

    def __init__(self, dot_delay=0.0):
        self.dot_delay = dot_delay
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.helo_names = []
        self.data_started = threading.Event()
        self.delivered = 0
        self.in_data = self.most_in_data = 0    # sessions between DATA and the reply to "."
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def nexthop(self):
        return f"[127.0.0.1]:{self.port}"

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn):
        reader = conn.makefile("rb")
        conn.sendall(b"220 slow.test ESMTP\r\n")
        try:
            for line in reader:
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    self.helo_names.append(line.split()[1].decode())
                    conn.sendall(b"250 slow.test\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    with self.lock:
                        self.in_data += 1
                        self.most_in_data = max(self.most_in_data, self.in_data)
                    self.data_started.set()
                    for body_line in reader:
                        if body_line == b".\r\n":
                            break
                    if self.dot_delay is None:
                        reader.read()           # never answer: wait for the client to vanish
                        return
                    time.sleep(self.dot_delay)
                    with self.lock:
                        self.in_data -= 1
                        self.delivered += 1
                    conn.sendall(b"250 2.0.0 queued\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopping = True
        self.listener.close()


@pytest.fixture
def slow_server():
    started = []

    def make(dot_delay=0.0):
        server = SlowSmtpServer(dot_delay)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def enqueue(master, queue_id, recipients):
    active = os.path.join(master.queue_directory, "active")
    path = queuefile.write_queue_file(active, queue_id, sender="s@example.com",
                                      recipients=[Recipient(r) for r in recipients],
                                      content=b"Subject: t\r\n\r\nbody\r\n", arrival_time=time.time())
    return queuefile.read_queue_file(path)


def deliver_in_background(master, queued, nexthop):
    result = {}

    def run():
        try:
            result["reply"] = agent_client.deliver_request(
                master.socket_path("smtp"), "active", queued.queue_id, nexthop,
                [r.offset for r in queued.recipients], timeout=60)
        except agent_client.AgentError as error:
            result["error"] = str(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_killing_an_smtp_child_mid_delivery_leaves_recipients_pending(master_instance, slow_server):
    # One child that has already served a request: killing a child during its
    # very first client would throttle the service, as in Postfix.
    master = master_instance(["smtp unix - - n - 1 smtp"])
    fast = slow_server()
    warm = enqueue(master, "WARM1", ["w@example.com"])
    agent_client.deliver_request(master.socket_path("smtp"), "active", "WARM1", fast.nexthop,
                                 [r.offset for r in warm.recipients], timeout=30)
    server = slow_server(dot_delay=None)
    queued = enqueue(master, "KILLED1", ["a@example.com", "b@example.com"])
    thread, result = deliver_in_background(master, queued, server.nexthop)
    assert server.data_started.wait(15)
    (child,) = wait_until(lambda: master.children("smtp"), 10, what="the smtp child")
    os.kill(child, signal.SIGKILL)
    thread.join(15)
    assert "error" in result                                  # the agent vanished: no reply
    after = queuefile.read_queue_file(queued.path)
    assert [r.done for r in after.recipients] == [False, False]
    assert not os.path.exists(os.path.join(master.queue_directory, "bounce", "KILLED1"))
    # the master replaces the child and the same recipients can be delivered later
    reply = agent_client.deliver_request(master.socket_path("smtp"), "active", "KILLED1", fast.nexthop,
                                         [r.offset for r in after.recipients], timeout=30)
    assert [r["status"] for r in reply["results"]] == ["sent", "sent"]
    assert not queuefile.read_queue_file(queued.path).pending()


def test_reload_changes_new_deliveries_and_keeps_the_one_in_flight(master_instance, slow_server):
    master = master_instance(MASTER_CF, "smtp_helo_name = before.example\n")
    slow = slow_server(dot_delay=3)
    fast = slow_server()
    in_flight = enqueue(master, "FLIGHT1", ["slow@example.com"])
    thread, result = deliver_in_background(master, in_flight, slow.nexthop)
    assert slow.data_started.wait(15)
    master.write_main_cf("smtp_helo_name = after.example\n")
    master.reload()
    master.wait_for_log(r"reload -- version")
    later = enqueue(master, "LATER1", ["fast@example.com"])
    reply = agent_client.deliver_request(master.socket_path("smtp"), "active", "LATER1", fast.nexthop,
                                         [r.offset for r in later.recipients], timeout=30)
    assert [r["status"] for r in reply["results"]] == ["sent"]
    assert fast.helo_names == ["after.example"]
    thread.join(30)
    assert [r["status"] for r in result["reply"]["results"]] == ["sent"]   # not cut by the reload
    assert slow.helo_names == ["before.example"]
    assert not queuefile.read_queue_file(in_flight.path).pending()


def test_smtp_children_carry_their_service_title(master_instance, slow_server):
    master = master_instance(MASTER_CF + ["relay unix - - n - 2 smtp"])
    server = slow_server()
    for name, queue_id in (("smtp", "T1"), ("relay", "T2")):
        queued = enqueue(master, queue_id, ["t@example.com"])
        agent_client.deliver_request(master.socket_path(name), "active", queue_id, server.nexthop,
                                     [r.offset for r in queued.recipients], timeout=30)
    assert master.children("smtp") and master.children("relay")


def test_done_marks_follow_a_message_moved_during_delivery(master_instance, slow_server):
    master = master_instance(MASTER_CF)
    server = slow_server(dot_delay=2)
    queued = enqueue(master, "MOVED1", ["a@example.com", "b@example.com"])
    thread, result = deliver_in_background(master, queued, server.nexthop)
    assert server.data_started.wait(15)
    held = os.path.join(master.queue_directory, "hold", "MOVED1")
    os.rename(queued.path, held)                 # postclient super -h, mid-delivery
    thread.join(30)
    assert [r["status"] for r in result["reply"]["results"]] == ["sent", "sent"]
    assert [r.done for r in queuefile.read_queue_file(held).recipients] == [True, True]


@pytest.mark.parametrize("threads, processes", [(5, 2), (1, 7)])
def test_maxproc_counts_deliveries_whether_agents_run_threads_or_not(master_instance, slow_server,
                                                                    threads, processes):
    """smtp_agent_threads=5: seven deliveries at once in two processes (5 + 2 threads);
    1: in seven processes, as Postfix.  Either way maxproc 7 lets no eighth start."""
    master = master_instance([f"smtp unix - - n - 7 smtp -o smtp_agent_threads={threads}"])
    server = slow_server(dot_delay=2)
    queued = [enqueue(master, f"CONC{n}", [f"r{n}@example.com"]) for n in range(8)]
    started = [deliver_in_background(master, each, server.nexthop) for each in queued]
    for thread, _ in started:
        thread.join(60)
    replies = [result.get("reply") or result for _, result in started]
    assert [reply["results"][0]["status"] for reply in replies] == ["sent"] * 8, replies
    assert server.most_in_data == 7
    assert len({reply["pid"] for reply in replies}) == processes
    assert all(not queuefile.read_queue_file(each.path).pending() for each in queued)


def test_every_message_of_a_batch_is_locked_from_the_start(master_instance, slow_server):
    """A queue manager restarted while an agent works through a batch of the dead
    one's must find the messages still waiting their turn locked (rule 13)."""
    master = master_instance(MASTER_CF)
    server = slow_server(dot_delay=2)
    first, second = enqueue(master, "BATCH1", ["a@example.com"]), enqueue(master, "BATCH2",
                                                                            ["b@example.com"])
    result = {}

    def run():
        result["replies"] = agent_client.deliver_batch(
            master.socket_path("smtp"), server.nexthop,
            [("active", q.queue_id, [r.offset for r in q.recipients]) for q in (first, second)],
            timeout=60)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert server.data_started.wait(15)         # the first message is being sent
    with open(second.path, "rb") as probe:      # as the queue manager's activation probes
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    thread.join(30)
    assert [m["results"][0]["status"] for m in result["replies"]] == ["sent", "sent"]
    with open(second.path, "rb") as probe:      # released with the reply
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
