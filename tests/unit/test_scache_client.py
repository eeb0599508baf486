"""The scache client (postclient/scache/client.py): requests, and going on without the cache.

The server is the real one, run() in a thread (tests/scache_standin.py), or
nothing at all, or small impostors that break the protocol.
"""

import logging
import os
import socket
import threading
import time

import pytest

from postclient import ipc
from postclient.scache.client import ScacheClient, shared_client
from tests.scache_standin import ScacheThread, listen_socket


@pytest.fixture
def config_dir(tmp_path):
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}/q\n"
                                      "connection_cache_protocol_timeout = 1s\n")
    return tmp_path


@pytest.fixture
def scache(config_dir):
    started = []

    def start():
        instance = ScacheThread(config_dir)
        started.append(instance)
        return instance

    yield start
    for instance in started:
        try:
            instance.stop()
        except AssertionError:
            pass


def path_in(config_dir):
    return os.path.join(config_dir, "q", "private", "scache")


def disabling_lines(caplog):
    return [r for r in caplog.records if r.getMessage() == "disabling connection caching"]


def test_save_and_find(scache):
    client = ScacheClient(scache().path, timeout=2)
    ours, cached = socket.socketpair()
    assert client.save_endp(2, "smtp:[192.0.2.1]:25", "props", cached.fileno())
    cached.close()                         # the caller closes its own copy
    assert client.save_dest(2, "smtp:example.com:25", "best", "smtp:[192.0.2.1]:25")
    fd, dest_properties, endp_properties = client.find_dest("smtp:example.com:25")
    assert (dest_properties, endp_properties) == ("best", "props")
    received = socket.socket(fileno=fd)
    ours.sendall(b"x")
    assert received.recv(1) == b"x"
    received.close()
    assert client.find_endp("smtp:[192.0.2.1]:25") is None
    assert client.find_dest("smtp:example.com:25") is None
    assert client.failures == 0 and not client.disabled


def test_nobody_listening_disables_caching_after_two_failures(config_dir, caplog):
    caplog.set_level(logging.INFO, logger="postclient")
    os.makedirs(os.path.dirname(path_in(config_dir)), exist_ok=True)
    client = ScacheClient(path_in(config_dir), timeout=1)
    assert client.find_endp("x") is None          # tried twice: one call, two failures
    assert client.disabled
    assert len(disabling_lines(caplog)) == 1
    assert disabling_lines(caplog)[0].levelno == logging.WARNING
    # From now on every call is a miss without trying (and without logging).
    started = time.monotonic()
    assert client.find_dest("x") is None
    assert client.save_dest(2, "d", "", "e") is False
    ours, cached = socket.socketpair()
    assert client.save_endp(2, "e", "", cached.fileno()) is False
    assert time.monotonic() - started < 0.1
    assert len(disabling_lines(caplog)) == 1


def test_save_endp_is_not_retried_but_counts(config_dir, caplog):
    caplog.set_level(logging.INFO, logger="postclient")
    client = ScacheClient(path_in(config_dir), timeout=1)
    ours, cached = socket.socketpair()
    assert client.save_endp(2, "e", "", cached.fileno()) is False
    assert client.failures == 1 and not client.disabled
    assert cached.fileno() >= 0             # still the caller's
    assert client.find_endp("e") is None
    assert client.disabled and len(disabling_lines(caplog)) == 1


def test_a_success_resets_the_failure_count(config_dir, caplog):
    client = ScacheClient(path_in(config_dir), timeout=1)
    ours, cached = socket.socketpair()
    client.save_endp(2, "e", "", cached.fileno())
    assert client.failures == 1
    server = ScacheThread(config_dir)
    try:
        assert client.find_endp("e") is None
        assert client.failures == 0
    finally:
        server.stop()


def test_a_restarted_service_is_reconnected_without_counting_a_failure(config_dir, caplog):
    caplog.set_level(logging.INFO, logger="postclient")
    first = ScacheThread(config_dir)
    client = ScacheClient(first.path, timeout=1)
    assert client.find_endp("e") is None
    first.stop()                             # closes our idle connection too
    second = ScacheThread(config_dir)
    try:
        assert client.find_endp("e") is None
        assert client.failures == 0 and not client.disabled
        assert "problem talking" not in caplog.text
    finally:
        second.stop()


def impostor(config_dir, behaviour):
    """A server on the scache socket that misbehaves once per client, in a thread."""
    sock, path = listen_socket(os.path.join(config_dir, "q"))

    def run():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            try:
                behaviour(conn)
            except OSError:
                pass
            finally:
                conn.close()

    threading.Thread(target=run, daemon=True).start()
    return sock, path


def deadline():
    return time.monotonic() + 2


@pytest.mark.parametrize("behaviour", [
    pytest.param(lambda conn: ipc.announce(conn, "echo", 1, deadline()), id="wrong-protocol"),
    pytest.param(lambda conn: ipc.announce(conn, "scache", 2, deadline()), id="wrong-version"),
    pytest.param(lambda conn: (ipc.announce(conn, "scache", 1, deadline()),
                               ipc.receive_message(conn, deadline()),
                               conn.sendall(b"\0\0\0\2{")), id="garbage-reply"),
    pytest.param(lambda conn: (ipc.announce(conn, "scache", 1, deadline()),
                               ipc.receive_message(conn, deadline()),
                               ipc.send_message(conn, {"status": 0, "properties": ""}, deadline())),
                 id="hit-without-descriptor"),
    pytest.param(lambda conn: (ipc.announce(conn, "scache", 1, deadline()),
                               ipc.receive_message(conn, deadline()),
                               ipc.send_message(conn, {"status": 7}, deadline())),
                 id="unknown-status"),
    pytest.param(lambda conn: (ipc.announce(conn, "scache", 1, deadline()), time.sleep(1.5)),
                 id="silence"),
])
def test_a_misbehaving_service_is_a_failure(config_dir, caplog, behaviour):
    caplog.set_level(logging.INFO, logger="postclient")
    sock, path = impostor(config_dir, behaviour)
    try:
        client = ScacheClient(path, timeout=1)
        assert client.find_endp("e") is None
        assert client.disabled and len(disabling_lines(caplog)) == 1
    finally:
        sock.close()


def test_descriptors_in_a_bad_reply_are_closed(config_dir):
    ours, cached = socket.socketpair()

    def two_descriptors(conn):
        ipc.announce(conn, "scache", 1, deadline())
        ipc.receive_message(conn, deadline())
        ipc.send_message(conn, {"status": 0, "properties": ""}, deadline(),
                         fds=[cached.fileno(), cached.fileno()])

    def copies_of_cached():
        """Descriptors of this process that refer to the passed socket (by inode)."""
        target = f"socket:[{os.fstat(cached.fileno()).st_ino}]"
        count = 0
        for name in os.listdir("/proc/self/fd"):
            try:
                count += os.readlink(f"/proc/self/fd/{name}") == target
            except OSError:
                pass
        return count

    sock, path = impostor(config_dir, two_descriptors)
    try:
        client = ScacheClient(path, timeout=1)
        assert copies_of_cached() == 1
        assert client.find_endp("e") is None
        assert copies_of_cached() == 1        # both received copies were closed
    finally:
        sock.close()
        ours.close()
        cached.close()


def test_shared_client_is_one_per_process_and_path(tmp_path):
    one = shared_client(str(tmp_path), 5)
    assert shared_client(str(tmp_path), 7) is one and one.timeout == 7
    assert one.path == os.path.join(str(tmp_path), "private", "scache")
    assert shared_client(str(tmp_path / "other"), 5) is not one
