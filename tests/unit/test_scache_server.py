"""The scache service (postclient/scache/server.py) run() in a thread with a stand-in context.

Talks to it over its UNIX socket with raw ipc framing, passes socketpair
ends as the cached "connections", and counts this process's descriptors in
/proc/self/fd (the server runs in the same process) to prove that every
descriptor received is stored or closed, and every stored one is closed.
"""

import json
import os
import socket
import struct
import time

import pytest

from postclient import ipc
from postclient.scache import STATUS_BAD, STATUS_FAIL, STATUS_OK
from postclient.scache.server import Statistics
from tests.scache_standin import ScacheThread

TIMEOUT = 5


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def settled_fds(expected, timeout=2.0):
    """The descriptor count once the server thread has caught up (it closes after sending)."""
    deadline = time.monotonic() + timeout
    while open_fds() != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return open_fds()


@pytest.fixture
def config_dir(tmp_path):
    (tmp_path / "main.cf").write_text(
        f"queue_directory = {tmp_path}/q\n"
        "connection_cache_ttl_limit = 1s\n"
        "connection_cache_protocol_timeout = 1s\n"
        "connection_cache_status_update_time = 600s\n")
    return tmp_path


@pytest.fixture
def scache(config_dir):
    started = []

    def start(**options):
        instance = ScacheThread(config_dir, **options)
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()


class Peer:
    """A raw client of the scache protocol."""

    def __init__(self, path, expect=True):
        deadline = time.monotonic() + TIMEOUT
        self.sock = ipc.connect_unix(path, deadline)
        if expect:
            ipc.expect_protocol(self.sock, "scache", 1, deadline)

    def call(self, request, fds=()):
        deadline = time.monotonic() + TIMEOUT
        ipc.send_message(self.sock, request, deadline, fds=fds)
        return ipc.receive_message(self.sock, deadline, want_fds=True)

    def closed_by_server(self):
        self.sock.settimeout(TIMEOUT)
        try:
            return self.sock.recv(100) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


def connection():
    """(ours, cached): a connected pair; ``cached`` goes to the cache."""
    return socket.socketpair()


def save(peer, label, properties="", ttl=10):
    ours, cached = connection()
    reply, fds = peer.call({"request": "save_endp", "ttl": ttl, "label": label,
                            "properties": properties}, fds=[cached.fileno()])
    cached.close()
    assert reply == {"status": STATUS_OK} and fds == []
    return ours


def same_connection(ours, fd):
    """The received descriptor is the other end of ``ours``."""
    received = socket.socket(fileno=fd)
    try:
        ours.sendall(b"ping")
        received.settimeout(TIMEOUT)
        return received.recv(4) == b"ping"
    finally:
        received.close()


def test_announces_its_protocol(scache):
    server = scache()
    sock = ipc.connect_unix(server.path, time.monotonic() + TIMEOUT)
    assert ipc.receive_message(sock, time.monotonic() + TIMEOUT) == {"protocol": "scache",
                                                                      "version": 1}
    sock.close()
    deadline = time.monotonic() + TIMEOUT
    while server.context.available < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.context.taken == server.context.available == 1


def test_save_and_find_endp_hand_back_the_same_connection_oldest_first(scache):
    peer = Peer(scache().path)
    first = save(peer, "smtp:[192.0.2.1]:25", "one")
    second = save(peer, "smtp:[192.0.2.1]:25", "two")
    reply, fds = peer.call({"request": "find_endp", "label": "smtp:[192.0.2.1]:25"})
    assert reply == {"status": STATUS_OK, "properties": "one"} and len(fds) == 1
    assert same_connection(first, fds[0])
    reply, fds = peer.call({"request": "find_endp", "label": "smtp:[192.0.2.1]:25"})
    assert reply["properties"] == "two" and same_connection(second, fds[0])
    reply, fds = peer.call({"request": "find_endp", "label": "smtp:[192.0.2.1]:25"})
    assert reply == {"status": STATUS_FAIL, "properties": ""} and fds == []


def test_find_dest_goes_through_the_binding(scache):
    peer = Peer(scache().path)
    assert peer.call({"request": "save_dest", "ttl": 10, "label": "smtp:example.com:25",
                      "properties": "best", "endp_label": "smtp:[192.0.2.1]:25"}) == \
        ({"status": STATUS_OK}, [])
    reply, fds = peer.call({"request": "find_dest", "label": "smtp:example.com:25"})
    assert reply == {"status": STATUS_FAIL, "dest_properties": "", "endp_properties": ""}
    ours = save(peer, "smtp:[192.0.2.1]:25", "endp")
    reply, fds = peer.call({"request": "find_dest", "label": "smtp:example.com:25"})
    assert reply == {"status": STATUS_OK, "dest_properties": "best", "endp_properties": "endp"}
    assert same_connection(ours, fds[0])


def test_a_connection_saved_by_one_client_is_found_by_another(scache):
    server = scache()
    one, two = Peer(server.path), Peer(server.path)
    ours = save(one, "smtp:[192.0.2.9]:25")
    reply, fds = two.call({"request": "find_endp", "label": "smtp:[192.0.2.9]:25"})
    assert reply["status"] == STATUS_OK and same_connection(ours, fds[0])


def test_ttl_is_capped_by_connection_cache_ttl_limit_and_expiry_closes(scache):
    peer = Peer(scache().path)
    ours = save(peer, "smtp:[192.0.2.1]:25", ttl=3600)     # capped at 1s
    time.sleep(1.4)
    reply, fds = peer.call({"request": "find_endp", "label": "smtp:[192.0.2.1]:25"})
    assert reply["status"] == STATUS_FAIL
    ours.settimeout(TIMEOUT)
    assert ours.recv(10) == b""          # the cache closed the only other copy


@pytest.mark.parametrize("request_, reason", [
    ({"request": "save_endp", "label": "x", "properties": ""}, "ttl"),
    ({"request": "save_endp", "ttl": 0, "label": "x", "properties": ""}, "ttl"),
    ({"request": "save_endp", "ttl": True, "label": "x", "properties": ""}, "ttl"),
    ({"request": "save_endp", "ttl": 2, "label": "", "properties": ""}, "label"),
    ({"request": "save_endp", "ttl": 2, "label": "x" * 1025, "properties": ""}, "label"),
    ({"request": "save_endp", "ttl": 2, "label": "x", "properties": 5}, "properties"),
    ({"request": "save_endp", "ttl": 2, "label": "x", "properties": "p" * 16385}, "properties"),
    ({"request": "save_endp", "ttl": 2, "label": "x", "properties": "", "extra": 1}, "extra"),
    ({"request": "save_dest", "ttl": 2, "label": "x", "properties": ""}, "endp_label"),
    ({"request": "find_endp"}, "label"),
    ({"request": "find_dest", "label": ["x"]}, "label"),
    ({"request": "flush"}, "unrecognized"),
    ({"no": "request"}, "unrecognized"),
])
def test_bad_requests_get_status_bad_and_the_client_stays(scache, request_, reason):
    peer = Peer(scache().path)
    ours, cached = connection()
    fds = [cached.fileno()] if request_.get("request") == "save_endp" else []
    reply, received = peer.call(request_, fds=fds)
    cached.close()
    assert reply["status"] == STATUS_BAD and reason in reply["reason"]
    assert received == []
    if fds:
        ours.settimeout(TIMEOUT)
        assert ours.recv(10) == b""      # the refused descriptor was closed
    # The same connection still works.
    assert peer.call({"request": "find_endp", "label": "x"})[0]["status"] == STATUS_FAIL


def test_descriptor_rules(scache, tmp_path):
    peer = Peer(scache().path)
    # save_endp without a descriptor
    reply, _ = peer.call({"request": "save_endp", "ttl": 2, "label": "x", "properties": ""})
    assert reply["status"] == STATUS_BAD and "one file descriptor" in reply["reason"]
    # with two
    a_ours, a = connection()
    b_ours, b = connection()
    reply, _ = peer.call({"request": "save_endp", "ttl": 2, "label": "x", "properties": ""},
                         fds=[a.fileno(), b.fileno()])
    assert reply["status"] == STATUS_BAD
    # a descriptor that is not a stream socket
    with open(tmp_path / "file", "w") as handle:
        reply, _ = peer.call({"request": "save_endp", "ttl": 2, "label": "x", "properties": ""},
                             fds=[handle.fileno()])
    assert reply["status"] == STATUS_BAD and "stream socket" in reply["reason"]
    datagram_ours, datagram = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    reply, _ = peer.call({"request": "save_endp", "ttl": 2, "label": "x", "properties": ""},
                         fds=[datagram.fileno()])
    assert reply["status"] == STATUS_BAD
    # a descriptor with a request that takes none
    c_ours, c = connection()
    reply, _ = peer.call({"request": "find_endp", "label": "x"}, fds=[c.fileno()])
    assert reply["status"] == STATUS_BAD and "unexpected file descriptor" in reply["reason"]
    for sock in (a, b, c, datagram):
        sock.close()
    for ours in (a_ours, b_ours, c_ours):
        ours.settimeout(TIMEOUT)
        assert ours.recv(1) == b""
    assert peer.call({"request": "find_endp", "label": "x"})[0]["status"] == STATUS_FAIL


def raw(sock, data, fds=()):
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


@pytest.mark.parametrize("data", [
    frame(b"not json"),
    frame(b"[1, 2]"),
    frame(b"\xff\xfe"),
    frame(b""),
    struct.pack(">I", 64 * 1024 + 1) + b"{",
    struct.pack(">I", 0xFFFFFFFF),
])
def test_garbage_ends_the_connection(scache, data):
    server = scache()
    peer = Peer(server.path)
    raw(peer.sock, data)
    assert peer.closed_by_server()
    # ... and only that one.
    assert Peer(server.path).call({"request": "find_endp", "label": "x"})[0]["status"] == STATUS_FAIL


def test_a_client_that_stops_in_the_middle_of_a_request_is_cut_off(scache):
    peer = Peer(scache().path)
    raw(peer.sock, frame(json.dumps({"request": "find_endp", "label": "x"}).encode())[:10])
    started = time.monotonic()
    assert peer.closed_by_server()
    assert 0.8 <= time.monotonic() - started <= 3       # connection_cache_protocol_timeout = 1s


def test_too_many_descriptors_in_one_message_end_the_connection(scache):
    peer = Peer(scache().path)
    pairs = [connection() for _ in range(6)]
    before = open_fds()
    message = frame(json.dumps({"request": "save_endp", "ttl": 2, "label": "x",
                                "properties": ""}).encode())
    raw(peer.sock, message, fds=[cached.fileno() for _, cached in pairs])
    assert peer.closed_by_server()
    for ours, cached in pairs:
        cached.close()
        ours.settimeout(TIMEOUT)
        assert ours.recv(1) == b""
    assert open_fds() <= before - 6


def test_an_idle_client_between_requests_is_kept(scache):
    peer = Peer(scache().path)
    time.sleep(1.5)                      # longer than the protocol timeout, but idle
    assert peer.call({"request": "find_dest", "label": "x"})[0]["status"] == STATUS_FAIL


def test_every_descriptor_is_stored_or_closed(scache):
    server = scache()
    peer = Peer(server.path)
    baseline = open_fds()
    keep = []
    for n in range(5):
        keep.append(save(peer, f"smtp:[192.0.2.{n}]:25", ttl=1))
    assert settled_fds(baseline + 10) == baseline + 10     # our ends + the cache's copies
    reply, fds = peer.call({"request": "find_endp", "label": "smtp:[192.0.2.0]:25"})
    os.close(fds[0])
    assert settled_fds(baseline + 5 + 4) == baseline + 5 + 4
    # Refused and garbled requests with descriptors leak nothing.
    for _ in range(3):
        ours, cached = connection()
        peer.call({"request": "find_dest", "label": "d"}, fds=[cached.fileno()])
        cached.close()
        ours.close()
    assert settled_fds(baseline + 5 + 4) == baseline + 5 + 4
    time.sleep(1.4)
    assert peer.call({"request": "find_endp", "label": "x"})[0]["status"] == STATUS_FAIL
    assert settled_fds(baseline + 5) == baseline + 5       # expired copies are closed
    for ours in keep:
        ours.close()
    assert settled_fds(baseline) == baseline
    # A saved connection is closed when the service stops.
    ours = save(peer, "smtp:[192.0.2.1]:25")
    peer.close()
    server.stop()
    ours.settimeout(TIMEOUT)
    assert ours.recv(1) == b""
    ours.close()


def test_the_descriptor_limit_drops_the_oldest(scache, caplog):
    caplog.set_level("INFO", logger="postclient")
    peer = Peer(scache(max_sessions=3).path)
    ends = [save(peer, "smtp:[192.0.2.1]:25", properties=str(n)) for n in range(4)]
    ends[0].settimeout(TIMEOUT)
    assert ends[0].recv(1) == b""         # the oldest was closed to make room
    found = [peer.call({"request": "find_endp", "label": "smtp:[192.0.2.1]:25"})[0]["properties"]
             for _ in range(4)]
    assert found == ["1", "2", "3", ""]
    assert "connection cache full (3 connections)" in caplog.text


def test_too_many_clients_are_refused(scache, caplog):
    caplog.set_level("INFO", logger="postclient")
    server = scache(max_clients=2)
    peers = [Peer(server.path), Peer(server.path)]
    third = Peer(server.path, expect=False)
    assert third.closed_by_server()
    assert "too many clients (2)" in caplog.text
    peers[0].close()
    time.sleep(0.2)
    assert Peer(server.path).call({"request": "find_endp", "label": "x"})[0]["status"] == STATUS_FAIL


def test_wakeup_request_is_answered_by_hanging_up(scache):
    peer = Peer(scache().path)
    raw(peer.sock, frame(b'{"request":"wakeup"}'))
    assert peer.closed_by_server()


def test_statistics_are_logged_like_postfix(config_dir, caplog):
    caplog.set_level("INFO", logger="postclient")
    with open(config_dir / "main.cf", "a") as main_cf:
        main_cf.write("connection_cache_status_update_time = 1s\n")
    server = ScacheThread(config_dir)
    try:
        peer = Peer(server.path)
        ours = [save(peer, "e1"), save(peer, "e1"), save(peer, "e2")]
        peer.call({"request": "save_dest", "ttl": 5, "label": "d", "properties": "",
                   "endp_label": "e1"})
        for request in ({"request": "find_dest", "label": "d"}, {"request": "find_dest", "label": "z"},
                        {"request": "find_endp", "label": "e2"}, {"request": "find_endp", "label": "e2"},
                        {"request": "find_endp", "label": "e9"}):
            for fd in peer.call(request)[1]:
                os.close(fd)
        deadline = time.monotonic() + 3
        while "max simultaneous" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.stop()
    text = caplog.text
    assert "statistics: start interval " in text
    assert "statistics: domain lookup hits=1 miss=1 success=50%" in text
    assert "statistics: address lookup hits=1 miss=2 success=33%" in text
    assert "statistics: max simultaneous domains=1 addresses=2 connection=3" in text
    for sock in ours:
        sock.close()


def test_statistics_lines():
    stats = Statistics(clock=lambda: 0.0)
    assert stats.lines() == []
    stats.dest_hits, stats.dest_miss, stats.max_sessions = 3, 1, 7
    lines = stats.lines()
    assert lines[0].startswith("statistics: start interval ")
    assert lines[1:] == ["statistics: domain lookup hits=3 miss=1 success=75%",
                         "statistics: max simultaneous domains=0 addresses=0 connection=7"]


def test_it_exits_after_max_idle_without_clients(config_dir):
    server = ScacheThread(config_dir, max_idle=1)
    server.thread.join(4)
    assert not server.thread.is_alive()
    server.stop()
