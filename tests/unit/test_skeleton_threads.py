"""skeleton.serve_threaded(): one process serving several clients at once.

Real sockets: a listening UNIX socket, the status datagram pair and the
lifeline pipe, as the master hands them to a child; the service is a small
function that answers one line per client.
"""

import os
import socket
import threading
import time

import pytest

from postclient.master.proto import AVAILABLE, TAKEN, decode_status
from postclient.server import skeleton


class Child:
    """What the master gives a child, plus the master's ends to watch it with."""

    def __init__(self, tmp_path, serve, threads, **limits):
        self.path = str(tmp_path / "listen")
        self.listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listen.bind(self.path)
        self.listen.listen(16)
        self.listen.setblocking(False)
        self.status, child_status = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.lifeline_read, self.lifeline_write = os.pipe()
        self.context = skeleton.ServiceContext(
            name="test", command="test", arguments=[], config=None,
            queue_directory=str(tmp_path), listen_socket=self.listen,
            lifeline_fd=self.lifeline_read, ipc_timeout=5, status_socket=child_status,
            max_use=limits.get("max_use", 100), max_idle=limits.get("max_idle", 100),
            daemon_timeout=limits.get("daemon_timeout", 100))
        self.serve, self.threads = serve, threads
        self.result = None
        self.runner = None

    def start(self):
        def run():
            self.result = skeleton.serve_threaded(self.serve, self.context, self.threads)
        self.runner = threading.Thread(target=run, daemon=True)
        self.runner.start()
        return self

    def finished(self, timeout=10):
        self.runner.join(timeout)
        return not self.runner.is_alive()

    def reports(self):
        """Status records sent so far: "taken" / "available"."""
        found = []
        self.status.setblocking(False)
        while True:
            try:
                record = decode_status(self.status.recv(64))
            except BlockingIOError:
                return found
            found.append({TAKEN: "taken", AVAILABLE: "available"}[record[2]])

    def client(self, line=b"hello\n"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(self.path)
        sock.sendall(line)
        return sock


def answer(conn, context):
    """The service: one line in, this thread's name out."""
    conn.makefile("rb").readline()
    conn.sendall(threading.current_thread().name.encode() + b"\n")


def reply(sock):
    try:
        return sock.makefile("rb").readline().strip().decode()
    finally:
        sock.close()


def test_clients_are_served_at_once_and_the_master_hears_taken_only_when_all_threads_are_busy(tmp_path):
    together = threading.Barrier(3, timeout=10)     # breaks unless three clients are served at once
    release = threading.Event()

    def serve(conn, context):
        together.wait()
        release.wait(10)
        answer(conn, context)

    child = Child(tmp_path, serve, threads=3).start()
    first, second = child.client(), child.client()
    time.sleep(0.3)
    assert child.reports() == []                    # two of three threads busy: still available
    third = child.client()
    deadline = time.monotonic() + 10
    while not child.reports() == ["taken"]:
        assert time.monotonic() < deadline, "no taken report"
        time.sleep(0.05)
    release.set()
    names = {reply(first), reply(second), reply(third)}
    assert len(names) == 3 and all(name.startswith("serve-") for name in names)
    time.sleep(0.3)
    assert child.reports() == ["available"]         # one thread free again: one report
    os.close(child.lifeline_write)
    assert child.finished() and child.result == 0


def test_max_use_counts_the_clients_of_the_whole_process(tmp_path):
    child = Child(tmp_path, answer, threads=2, max_use=3).start()
    assert all(reply(child.client()).startswith("serve-") for _ in range(3))
    assert child.finished()
    assert child.reports()[-1] == "taken"          # so that the master spawns a successor
    late = child.client()                           # waits in the backlog for another child
    late.settimeout(0.5)
    with pytest.raises(socket.timeout):
        late.recv(1)
    late.close()


def test_a_closed_lifeline_lets_the_clients_in_progress_finish(tmp_path):
    started, release = threading.Event(), threading.Event()

    def serve(conn, context):
        started.set()
        release.wait(10)
        answer(conn, context)

    child = Child(tmp_path, serve, threads=2).start()
    busy = child.client()
    assert started.wait(10)
    os.close(child.lifeline_write)                  # the master is gone or reloaded
    time.sleep(1.5)
    assert not child.finished(0)                    # still serving its client
    release.set()
    assert reply(busy).startswith("serve-")
    assert child.finished() and child.result == 0


def test_max_idle_ends_a_process_without_clients(tmp_path):
    child = Child(tmp_path, answer, threads=2, max_idle=1).start()
    assert reply(child.client()).startswith("serve-")
    began = time.monotonic()
    assert child.finished(10) and child.result == 0
    assert time.monotonic() - began >= 0.9


def test_an_exception_in_one_client_is_logged_and_the_threads_go_on(tmp_path, caplog):
    def serve(conn, context):
        if conn.makefile("rb").readline() == b"boom\n":
            raise ValueError("bad request")
        conn.sendall(b"fine\n")

    child = Child(tmp_path, serve, threads=2).start()
    child.client(b"boom\n").close()
    assert [reply(child.client()) for _ in range(3)] == ["fine"] * 3
    os.close(child.lifeline_write)
    assert child.finished()
    assert "error while serving a client: ValueError: bad request" in caplog.text


def test_the_watchdog_kills_a_process_whose_client_takes_longer_than_daemon_timeout(tmp_path):
    child = Child(tmp_path, lambda conn, context: time.sleep(60), threads=2, daemon_timeout=1)
    pid = os.fork()
    if pid == 0:
        try:
            skeleton.serve_threaded(child.serve, child.context, child.threads)
        finally:
            os._exit(0)                             # only reached if the watchdog failed
    stuck = child.client()
    began = time.monotonic()
    _, status = os.waitpid(pid, 0)
    stuck.close()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == skeleton.EXIT_FATAL
    assert 1 <= time.monotonic() - began < 10


def test_a_client_in_a_threaded_child_learns_of_the_lifeline_without_a_poll_of_its_own(
        tmp_path, monkeypatch):
    """The main thread watches the lifeline; a client asking lifeline_closed()
    before each message of a batch gets the answer from it, without a system
    call, before and after the lifeline closes."""
    polls = []
    real_readable = skeleton._readable
    monkeypatch.setattr(skeleton, "_readable",
                        lambda fd, timeout: polls.append(fd) or real_readable(fd, timeout))
    seen, asked, release = [], threading.Event(), threading.Event()

    def serve(conn, context):
        seen.append(context.lifeline_closed())
        asked.set()
        release.wait(10)
        seen.append(context.lifeline_closed())
        answer(conn, context)

    child = Child(tmp_path, serve, threads=2).start()
    deadline = time.monotonic() + 10
    while not child.context.lifeline_watched:      # the main thread is at its post
        assert time.monotonic() < deadline, "the main thread did not start watching"
        time.sleep(0.01)
    busy = child.client()
    assert asked.wait(10)
    os.close(child.lifeline_write)                  # the master is gone or reloaded
    while not child.context.lifeline_gone:
        assert time.monotonic() < deadline, "the main thread did not see the lifeline close"
        time.sleep(0.02)
    release.set()
    assert reply(busy).startswith("serve-")
    assert child.finished()
    assert seen == [False, True]
    assert child.lifeline_read not in polls


def test_after_a_stop_for_max_use_the_clients_ask_the_lifeline_themselves(tmp_path):
    """The main thread stops watching when the process stops for another reason;
    a client still at work must then see a closed lifeline by itself."""
    started, closed, seen = threading.Event(), threading.Event(), []

    def serve(conn, context):
        started.set()
        closed.wait(10)
        seen.append(context.lifeline_closed())
        answer(conn, context)

    child = Child(tmp_path, serve, threads=2, max_use=1).start()
    busy = child.client()
    assert started.wait(10)
    deadline = time.monotonic() + 10
    while child.context.lifeline_watched:           # max_use reached: the watch ends
        assert time.monotonic() < deadline, "the main thread kept watching"
        time.sleep(0.02)
    os.close(child.lifeline_write)
    closed.set()
    assert reply(busy).startswith("serve-")
    assert child.finished()
    assert seen == [True]
