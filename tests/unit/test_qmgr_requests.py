"""The queue manager's delivery requests on its event loop (postclient/queue/qmgr_requests.py).

Each test runs a real selector loop, as the queue manager's does, against a
scripted agent: a thread that accepts on a real UNIX socket and then
announces, reads and replies (or misbehaves) as the script says.
"""

import os
import selectors
import socket
import threading
import time

import pytest

from postclient import ipc
from postclient.queue.qmgr_requests import Requests
from postclient.smtp import agent_client
from postclient.smtp.service import PROTOCOL, VERSION

HELLO = {"protocol": PROTOCOL, "version": VERSION}
OK = {"status": "ok", "results": [{"offset": 120, "status": "sent"}]}


class Agent:
    """One connection accepted on ``path`` and handed to ``script(conn, agent)``."""

    def __init__(self, path, script):
        self.path = str(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(5)
        self.received = []
        self.closed_by_peer = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()

    def _run(self, script):
        conn, _ = self.listener.accept()
        with conn:
            script(conn, self)

    def receive(self, conn):
        self.received.append(ipc.receive_message(conn, time.monotonic() + 5))

    def wait_for_close(self, conn):
        """Read until the queue manager's side closes."""
        conn.settimeout(5)
        if conn.recv(1) == b"":
            self.closed_by_peer.set()

    def stop(self):
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def loop():
    selector = selectors.DefaultSelector()
    requests = Requests(selector)

    def run(limit=5):
        """Turn the loop until a request ends; its (batch, replies, error)."""
        end = time.monotonic() + limit
        while not requests.done:
            assert time.monotonic() < end, "no request ended"
            wait = requests.timeout(time.monotonic())
            for key, events in selector.select(0.05 if wait is None else min(wait, 0.05)):
                requests.ready(key.data, events)
            requests.expire(time.monotonic())
        return requests.done.popleft()

    yield requests, run
    requests.close()
    selector.close()


def single(path):
    """(request, check) as the queue manager makes them for one message."""
    request = agent_client.single_request("active", "ABC123", "[127.0.0.1]:25", [120])
    return request, (lambda reply: [agent_client.single_reply(reply, path)])


def start(requests, path, batch="batch", timeout=5, request_check=None):
    request, check = request_check or single(str(path))
    requests.start(batch, str(path), request, check, time.monotonic() + timeout)
    return request


def test_a_request_is_announced_sent_and_answered(tmp_path, loop):
    requests, run = loop

    def script(conn, agent):
        ipc.announce(conn, PROTOCOL, VERSION, time.monotonic() + 5)
        agent.receive(conn)
        ipc.send_message(conn, OK, time.monotonic() + 5)
        agent.wait_for_close(conn)

    agent = Agent(tmp_path / "smtp", script)
    request = start(requests, agent.path, batch="B1")
    assert len(requests) == 1
    assert run() == ("B1", [OK], None)
    agent.stop()
    assert agent.received == [request]
    assert agent.closed_by_peer.is_set()            # the connection is closed after the reply
    assert len(requests) == 0 and not requests.selector.get_map()


def test_a_batch_reply_gives_one_reply_per_message(tmp_path, loop):
    requests, run = loop
    messages = [("active", f"ID{n}", [120 + n]) for n in range(3)]
    path = str(tmp_path / "smtp")
    request = agent_client.batch_request("[127.0.0.1]:25", messages, use_cached_connection=True,
                                         store_connection=True)
    check = lambda reply: agent_client.batch_replies(reply, path, len(messages))  # noqa: E731
    replies = [OK, {"status": "skipped", "results": []}, OK]

    def script(conn, agent):
        # the announcement a byte at a time: the reader must put it together
        for byte in ipc.encode_message(HELLO):
            conn.send(bytes([byte]))
            time.sleep(0.002)
        agent.receive(conn)
        ipc.send_message(conn, {"status": "ok", "messages": replies}, time.monotonic() + 5)

    agent = Agent(path, script)
    start(requests, path, batch="B2", request_check=(request, check))
    assert run() == ("B2", replies, None)
    agent.stop()
    assert agent.received == [request]
    assert [m["queue_id"] for m in agent.received[0]["messages"]] == ["ID0", "ID1", "ID2"]


def test_a_request_too_large_for_the_socket_buffer_goes_out_whole(tmp_path, loop):
    requests, run = loop
    path = str(tmp_path / "smtp")
    # about 900 KB: far more than a UNIX socket buffer, so sending waits for EVENT_WRITE
    messages = [("active", f"ID{n:06d}", list(range(100, 140))) for n in range(1200)]
    request = agent_client.batch_request("[127.0.0.1]:25", messages)
    assert 500_000 < len(ipc.encode_message(request)) < ipc.MAX_MESSAGE
    check = lambda reply: agent_client.batch_replies(reply, path, len(messages))  # noqa: E731

    def script(conn, agent):
        ipc.announce(conn, PROTOCOL, VERSION, time.monotonic() + 5)
        time.sleep(0.3)                 # let the queue manager's side fill the buffer first
        agent.receive(conn)
        ipc.send_message(conn, {"status": "ok", "messages": [OK] * len(messages)},
                         time.monotonic() + 5)

    agent = Agent(path, script)
    start(requests, path, request_check=(request, check))
    batch, replies, error = run()
    agent.stop()
    assert error is None and len(replies) == len(messages)
    assert agent.received == [request]


def test_two_requests_in_flight_end_each_on_its_own(tmp_path, loop):
    requests, run = loop
    slow_may_answer = threading.Event()

    def quick(conn, agent):
        ipc.announce(conn, PROTOCOL, VERSION, time.monotonic() + 5)
        agent.receive(conn)
        ipc.send_message(conn, OK, time.monotonic() + 5)

    def slow(conn, agent):
        ipc.announce(conn, PROTOCOL, VERSION, time.monotonic() + 5)
        agent.receive(conn)
        slow_may_answer.wait(5)
        ipc.send_message(conn, dict(OK, results=[{"offset": 120, "status": "deferred"}]),
                         time.monotonic() + 5)

    slow_agent = Agent(tmp_path / "slow", slow)
    quick_agent = Agent(tmp_path / "quick", quick)
    start(requests, slow_agent.path, batch="slow")
    start(requests, quick_agent.path, batch="quick")
    assert run() == ("quick", [OK], None)
    assert len(requests) == 1
    slow_may_answer.set()
    batch, replies, error = run()
    assert (batch, error) == ("slow", None)
    assert replies[0]["results"][0]["status"] == "deferred"
    slow_agent.stop()
    quick_agent.stop()


@pytest.mark.parametrize("behaviour, expected", [
    ("wrong protocol", "expected protocol delivery version 1, got 'scache' version 1"),
    ("close after the announcement", "connection closed"),       # an agent that crashed
    ("close in the middle of the reply", "lost connection in the middle of a message"),
    ("malformed reply", "malformed reply"),
    ("not JSON", "malformed message (not a JSON object)"),
])
def test_an_agent_that_breaks_off_or_misbehaves_ends_the_request_with_a_reason(
        tmp_path, loop, behaviour, expected):
    requests, run = loop

    def script(conn, agent):
        deadline = time.monotonic() + 5
        if behaviour == "wrong protocol":
            ipc.announce(conn, "scache", 1, deadline)
            agent.wait_for_close(conn)
            return
        ipc.announce(conn, PROTOCOL, VERSION, deadline)
        agent.receive(conn)
        if behaviour == "close in the middle of the reply":
            conn.sendall(ipc.encode_message(OK)[:10])
        elif behaviour == "malformed reply":
            ipc.send_message(conn, {"status": "ok"}, deadline)      # no results
        elif behaviour == "not JSON":
            conn.sendall(b"\x00\x00\x00\x03abc")

    agent = Agent(tmp_path / "smtp", script)
    batch, replies, error = run_with(requests, agent.path, run)
    agent.stop()
    assert (batch, replies) == ("batch", None)
    assert error == f"{agent.path}: {expected}"
    if behaviour == "wrong protocol":
        assert agent.received == [] and agent.closed_by_peer.is_set()   # nothing was sent
    assert len(requests) == 0 and not requests.selector.get_map()


def run_with(requests, path, run):
    start(requests, path)
    return run()


def test_an_agent_that_never_answers_times_out_and_is_hung_up_on(tmp_path, loop):
    requests, run = loop

    def script(conn, agent):
        ipc.announce(conn, PROTOCOL, VERSION, time.monotonic() + 5)
        agent.receive(conn)
        agent.wait_for_close(conn)      # no reply: only the queue manager's side closes

    agent = Agent(tmp_path / "smtp", script)
    began = time.monotonic()
    start(requests, agent.path, timeout=0.3)
    assert requests.timeout(time.monotonic()) <= 0.3
    assert run() == ("batch", None, f"{agent.path}: timeout")
    assert 0.25 <= time.monotonic() - began < 3
    agent.stop()
    assert agent.closed_by_peer.is_set()


def test_no_agent_at_the_socket_is_an_error_without_waiting(tmp_path, loop):
    requests, run = loop
    missing = str(tmp_path / "nothing")
    start(requests, missing, batch="B")
    assert len(requests) == 0                   # ended at once, nothing registered
    assert run() == ("B", None, f"connect to {missing}: No such file or directory")
    stale = tmp_path / "stale"                  # a socket file nobody listens on
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(stale))
    listener.close()
    start(requests, stale, batch="C")
    assert run() == ("C", None, f"connect to {stale}: Connection refused")
    assert os.path.exists(stale)


def test_no_descriptor_left_for_a_socket_is_an_error_not_the_end_of_the_loop(tmp_path, loop):
    import resource
    requests, run = loop
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        try:
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        start(requests, tmp_path / "smtp", batch="B")
    finally:
        for descriptor in held:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert run() == ("B", None, f"connect to {tmp_path / 'smtp'}: Too many open files")


def test_close_drops_the_requests_in_flight(tmp_path, loop):
    requests, run = loop

    def script(conn, agent):
        ipc.announce(conn, PROTOCOL, VERSION, time.monotonic() + 5)
        agent.receive(conn)
        agent.wait_for_close(conn)

    agent = Agent(tmp_path / "smtp", script)
    start(requests, agent.path)
    end = time.monotonic() + 5
    while not agent.received and time.monotonic() < end:    # until the request is out
        for key, events in requests.selector.select(0.05):
            requests.ready(key.data, events)
    assert agent.received and len(requests) == 1
    requests.close()
    agent.stop()
    assert agent.closed_by_peer.is_set()
    assert len(requests) == 0 and not requests.done and not requests.selector.get_map()
