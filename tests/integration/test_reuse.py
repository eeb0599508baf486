"""Connection caching end to end: engine + reuse.py + a real scache process + an SMTP server.

The scache service runs as a separate process: either the stand-in master
of tests/scache_standin.py (run(context) in a subprocess that the test can
kill), or, in the last tests, spawned by a real master together with the
smtp service.  The receiving server counts TCP connections, messages, RSET
probes and QUITs; it can hang up idle connections behind the client's back
and refuse one recipient with a protocol-error code (501).
"""

import logging
import os
import socket
import time

import pytest

from postclient.config.config import Config
from postclient.queue import queuefile
from postclient.scache import FIND_DEST, FIND_ENDP, SAVE_DEST, SAVE_ENDP
from postclient.scache.client import ScacheClient
from postclient.smtp import agent_client, engine, reuse, service
from postclient.smtp.request import DeliveryRequest, Recipient
from tests.integration.master_harness import master_instance, wait_until  # noqa: F401
from tests.integration.servers import _ThreadedServer, serving
from tests.scache_standin import ScacheProcess

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.integration.dns_server"]     # the scripted_dns fixture

CONTENT = b"Subject: reuse\r\n\r\nhello\r\n"


class CountingServer(_ThreadedServer):
    """A plain ESMTP server (no PIPELINING) that counts what the client does.

    ``hangup_idle``: close a connection as soon as a message is done (the
    client never learns until it uses it); ``bad_rcpt``: answer RCPT for this
    address with 501 (a protocol-error code: that session must not be cached).
    """

    def __init__(self, hangup_idle=False, bad_rcpt=None):
        super().__init__()
        self.hangup_idle = hangup_idle
        self.bad_rcpt = bad_rcpt
        self.messages = 0
        self.rsets = 0
        self.quits = 0

    def wait_quits(self, count, timeout=5.0):
        """The number of QUITs seen, once it reaches ``count`` (the client does not wait
        for the reply to QUIT: smtp_skip_quit_response)."""
        deadline = time.monotonic() + timeout
        while self.quits < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.quits

    def lines(self, connection, record):
        buffer = b""
        while not self._stopping.is_set():
            while b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                yield line.decode("ascii", "replace")
            try:
                connection.settimeout(0.2)
                data = connection.recv(65536)
            except socket.timeout:
                continue
            if not data:
                record.closed_at = time.monotonic()
                return
            record.received += data
            buffer += data

    def handle(self, connection, record):
        connection.sendall(b"220 count.test ESMTP\r\n")
        lines = self.lines(connection, record)
        for line in lines:
            verb = line.split(" ")[0].upper()
            if verb == "EHLO":
                connection.sendall(b"250-count.test\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n")
            elif verb == "RCPT" and self.bad_rcpt and self.bad_rcpt in line:
                connection.sendall(b"501 5.1.3 Bad recipient address syntax\r\n")
            elif verb in ("MAIL", "RCPT", "NOOP", "HELO"):
                connection.sendall(b"250 2.0.0 Ok\r\n")
            elif verb == "RSET":
                self.rsets += 1
                connection.sendall(b"250 2.0.0 Ok\r\n")
            elif verb == "DATA":
                connection.sendall(b"354 go ahead\r\n")
                for body_line in lines:
                    if body_line == ".":
                        break
                self.messages += 1
                connection.sendall(b"250 2.0.0 Ok: queued\r\n")
                if self.hangup_idle:
                    connection.shutdown(socket.SHUT_RDWR)
                    return
            elif verb == "QUIT":
                self.quits += 1
                connection.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                connection.sendall(b"502 5.5.2 Error: command not recognized\r\n")


@pytest.fixture
def servers():
    yield from serving(CountingServer)


@pytest.fixture
def queue_dir(tmp_path):
    assert len(f"{tmp_path}/q/private/scache") < 108     # the UNIX socket path limit
    return tmp_path


def write_config(directory, **settings):
    values = {"queue_directory": f"{directory}/q", "myhostname": "client.postclient.test",
              "smtp_connect_timeout": "5s", "smtp_helo_timeout": "5s", "smtp_rset_timeout": "5s",
              "smtp_quit_timeout": "5s", "connection_cache_protocol_timeout": "2s"}
    values.update(settings)
    with open(os.path.join(directory, "main.cf"), "w") as main_cf:
        for name, value in values.items():
            main_cf.write(f"{name} = {value}\n")
    return directory


@pytest.fixture
def scache_process():
    started = []

    def start(config_dir):
        process = ScacheProcess(config_dir)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def deliver(config_dir, server, recipients=("a@example.com",), cached=True, queue_id="Q1",
            hold=False):
    config = Config.load(str(config_dir), process_name="smtp")
    request = DeliveryRequest(queue_id=queue_id, nexthop=server.nexthop, sender="s@example.com",
                              recipients=[Recipient(r) for r in recipients], content=CONTENT,
                              use_cached_connection=cached, store_connection=cached)
    return engine.deliver(config, request, hold_idle=hold)


def statuses(outcome):
    return [result.status for result in outcome.results]


def test_caching_serves_many_deliveries_over_few_connections(queue_dir, servers, scache_process):
    config_dir = write_config(queue_dir)
    scache = scache_process(config_dir)
    server = servers()
    for n in range(10):
        assert statuses(deliver(config_dir, server, queue_id=f"Q{n}")) == ["sent"]
    assert server.messages == 10
    assert len(server.connections) == 1
    assert server.rsets == 9              # every reuse was probed first
    assert server.quits == 0
    # The cache owns the idle connection until its TTL; then it is simply closed.
    wait_until(lambda: server.connections[0].closed_at is not None, 5,
               what="the cached connection to expire")
    assert scache.stop() == 0


def test_without_caching_every_message_has_its_own_connection(queue_dir, servers, scache_process):
    config_dir = write_config(queue_dir)
    scache_process(config_dir)
    server = servers()
    for n in range(5):
        assert statuses(deliver(config_dir, server, cached=False, queue_id=f"Q{n}")) == ["sent"]
    assert server.messages == 5
    assert len(server.connections) == 5
    assert server.wait_quits(5) == 5 and server.rsets == 0


def test_on_demand_no_ignores_the_flags_and_destinations_force_caching(queue_dir, servers,
                                                                       scache_process):
    config_dir = write_config(queue_dir, smtp_connection_cache_on_demand="no")
    scache_process(config_dir)
    server = servers()
    for n in range(3):
        deliver(config_dir, server, cached=True)
    assert len(server.connections) == 3
    write_config(queue_dir, smtp_connection_cache_on_demand="no",
                 smtp_connection_cache_destinations="other.example, 127.0.0.1")
    for n in range(3):
        assert statuses(deliver(config_dir, server, cached=False)) == ["sent"]
    assert len(server.connections) == 4 and server.messages == 6


def test_a_connection_the_server_closed_is_caught_by_the_probe(queue_dir, servers,
                                                              scache_process):
    config_dir = write_config(queue_dir)
    scache_process(config_dir)
    server = servers(hangup_idle=True)
    for n in range(3):
        assert statuses(deliver(config_dir, server, queue_id=f"Q{n}")) == ["sent"]
    assert server.messages == 3
    assert len(server.connections) == 3
    assert server.rsets == 0               # the dead connections never got that far


def test_a_session_with_a_protocol_error_is_not_cached(queue_dir, servers, scache_process):
    config_dir = write_config(queue_dir)
    scache_process(config_dir)
    server = servers(bad_rcpt="bad@example.com")
    outcome = deliver(config_dir, server, recipients=("a@example.com", "bad@example.com"))
    assert statuses(outcome) == ["sent", "bounced"]
    assert server.wait_quits(1) == 1       # ended with QUIT, not cached
    assert statuses(deliver(config_dir, server)) == ["sent"]
    assert len(server.connections) == 2
    assert statuses(deliver(config_dir, server)) == ["sent"]
    assert len(server.connections) == 2    # the clean second session was cached


def test_reuse_time_limit_is_honoured(queue_dir, servers, scache_process):
    config_dir = write_config(queue_dir, smtp_connection_reuse_time_limit="1s",
                              smtp_connection_cache_time_limit="2s",
                              connection_cache_ttl_limit="2s")
    scache_process(config_dir)
    server = servers()
    deliver(config_dir, server)
    deliver(config_dir, server)
    assert len(server.connections) == 1
    time.sleep(1.1)        # older than the reuse limit, still within the cache's TTL
    assert statuses(deliver(config_dir, server)) == ["sent"]
    assert len(server.connections) == 2
    assert server.messages == 3
    wait_until(lambda: server.connections[0].closed_at is not None, 2,
               what="the expired connection to be closed")


def test_killing_the_cache_loses_no_message(queue_dir, servers, scache_process, caplog):
    caplog.set_level(logging.INFO, logger="postclient")
    config_dir = write_config(queue_dir)
    scache = scache_process(config_dir)
    server = servers()
    results = []
    for n in range(3):
        results += statuses(deliver(config_dir, server, queue_id=f"Q{n}"))
    assert len(server.connections) == 1
    scache.kill()
    for n in range(3, 8):
        results += statuses(deliver(config_dir, server, queue_id=f"Q{n}"))
    assert results == ["sent"] * 8
    assert server.messages == 8
    disabling = [r for r in caplog.records if r.getMessage() == "disabling connection caching"]
    assert len(disabling) == 1 and disabling[0].levelname == "WARNING"
    # Without the cache each later message has its own connection, ended with QUIT.
    assert len(server.connections) == 1 + 5
    assert server.wait_quits(5) >= 5


# --- in-process reuse: the agent keeps its last idle session between requests -----------

@pytest.fixture
def scache_calls(monkeypatch):
    """The scache requests this process makes, in order; no kept session outlives the test."""
    calls = []
    original = ScacheClient._call

    def counting(self, request, *args, **kwargs):
        calls.append(request["request"])
        return original(self, request, *args, **kwargs)

    monkeypatch.setattr(ScacheClient, "_call", counting)
    yield calls
    reuse.release_held()


def test_back_to_back_requests_reuse_the_session_without_scache(queue_dir, servers,
                                                                scache_process, scache_calls):
    config_dir = write_config(queue_dir)
    scache_process(config_dir)
    server = servers()
    assert statuses(deliver(config_dir, server, queue_id="Q0", hold=True)) == ["sent"]
    assert scache_calls == [FIND_DEST, FIND_ENDP]       # misses; nothing saved yet
    for n in range(1, 6):
        assert statuses(deliver(config_dir, server, queue_id=f"Q{n}", hold=True)) == ["sent"]
    assert scache_calls == [FIND_DEST, FIND_ENDP]       # no find/save round trip in between
    assert len(server.connections) == 1 and server.messages == 6
    assert server.rsets == 5                             # every reuse was still probed first
    assert server.quits == 0
    # Idle: the session goes to scache (endpoint and destination), as before the change ...
    wait_until(lambda: SAVE_DEST in scache_calls, 5, what="the idle session to go to scache")
    assert scache_calls[2:] == [SAVE_ENDP, SAVE_DEST]
    # ... where a request (here: one that does not keep sessions) finds it by destination.
    assert statuses(deliver(config_dir, server, queue_id="Q6")) == ["sent"]
    assert scache_calls[4:] == [FIND_DEST, SAVE_ENDP, SAVE_DEST]
    assert len(server.connections) == 1 and server.rsets == 6


def test_a_request_for_another_destination_hands_the_session_to_scache(queue_dir, servers,
                                                                       scache_process,
                                                                       scache_calls):
    config_dir = write_config(queue_dir)
    scache_process(config_dir)
    first, second = servers(), servers()
    deliver(config_dir, first, queue_id="Q0", hold=True)
    del scache_calls[:]
    assert statuses(deliver(config_dir, second, queue_id="Q1", hold=True)) == ["sent"]
    # The kept session for the first server went to scache before the lookups for the second.
    assert scache_calls == [SAVE_ENDP, SAVE_DEST, FIND_DEST, FIND_ENDP]
    assert statuses(deliver(config_dir, first, queue_id="Q2", hold=True)) == ["sent"]
    assert scache_calls[4:6] == [SAVE_ENDP, SAVE_DEST]   # the second server's, likewise
    assert scache_calls[6] == FIND_DEST                   # a hit: no new connection
    assert len(first.connections) == 1 and first.rsets == 1 and first.messages == 2
    assert len(second.connections) == 1 and second.quits == 0


def test_a_kept_session_is_not_reused_after_its_reuse_time_limit(queue_dir, servers,
                                                                 scache_process, scache_calls):
    config_dir = write_config(queue_dir, smtp_connection_reuse_time_limit="1s")
    scache_process(config_dir)
    server = servers()
    deliver(config_dir, server, queue_id="Q0", hold=True)
    reuse_limit = time.time() + 1.1
    reuse.HOLD_IDLE, saved = 5, reuse.HOLD_IDLE     # keep it in the process meanwhile
    try:
        time.sleep(max(0.0, reuse_limit - time.time()))
        assert statuses(deliver(config_dir, server, queue_id="Q1", hold=True)) == ["sent"]
    finally:
        reuse.HOLD_IDLE = saved
    assert len(server.connections) == 2 and server.rsets == 0
    assert server.wait_quits(1) == 1                   # the old one ended with QUIT


def test_a_session_with_a_protocol_error_is_not_kept(queue_dir, servers, scache_process,
                                                    scache_calls):
    config_dir = write_config(queue_dir)
    scache_process(config_dir)
    server = servers(bad_rcpt="bad@example.com")
    deliver(config_dir, server, recipients=("a@example.com", "bad@example.com"), hold=True)
    assert server.wait_quits(1) == 1
    assert statuses(deliver(config_dir, server, hold=True)) == ["sent"]
    assert len(server.connections) == 2 and server.rsets == 0


# --- with a real master: the smtp service and scache as the master runs them ------------

MASTER_CF = ["smtp unix - - n - 2 smtp", "scache unix - - n - 1 scache"]
MASTER_MAIN_CF = ("myhostname = client.postclient.test\nsmtp_helo_timeout = 5s\n"
                  "smtp_rset_timeout = 5s\nconnection_cache_protocol_timeout = 2s\n")


def enqueue(master, count):
    active = os.path.join(master.queue_directory, "active")
    os.makedirs(active, exist_ok=True)
    for name in ("bounce", "defer", "trace"):
        os.makedirs(os.path.join(master.queue_directory, name), exist_ok=True)
    queued = []
    for n in range(count):
        path = queuefile.write_queue_file(active, f"R{n:04d}", sender="s@example.com",
                                          recipients=[Recipient(f"r{n}@example.com")],
                                          content=CONTENT, arrival_time=time.time())
        queued.append(queuefile.read_queue_file(path))
    return queued


def request(master, queued, server, cached):
    return agent_client.deliver_request(
        master.socket_path("smtp"), "active", queued.queue_id, server.nexthop,
        [r.offset for r in queued.recipients], timeout=30,
        use_cached_connection=cached, store_connection=cached)


def test_with_a_master_caching_serves_many_requests_over_few_connections(master_instance,
                                                                         servers):
    master = master_instance(MASTER_CF, MASTER_MAIN_CF)
    cached_server, plain_server = servers(), servers()
    queued = enqueue(master, 16)
    for item in queued[:10]:
        reply = request(master, item, cached_server, cached=True)
        assert [r["status"] for r in reply["results"]] == ["sent"]
    for item in queued[10:]:
        request(master, item, plain_server, cached=False)
    assert cached_server.messages == 10 and plain_server.messages == 6
    assert len(cached_server.connections) <= 2          # at most one per smtp process
    assert len(plain_server.connections) == 6
    assert master.children("scache")                     # spawned by the master, on demand
    master.stop()
    assert master.log_lines(r"pctest/scache\[\d+\]: statistics: domain lookup hits=\d+")
    assert master.log_lines(r"pctest/scache\[\d+\]: statistics: max simultaneous domains=1 ")


@pytest.mark.parametrize("threads", [1, 3])
def test_an_agent_at_max_use_hands_its_kept_session_to_scache(master_instance, servers, threads):
    """The skeleton's shutdown(): each process serves one client, then exits;
    its kept session goes to scache, and the next process's request uses it."""
    master = master_instance([f"smtp unix - - n - 3 smtp -o max_use=1 "
                              f"-o smtp_agent_threads={threads}", MASTER_CF[1]], MASTER_MAIN_CF)
    server = servers()
    pids = []
    for item in enqueue(master, 4):
        reply = request(master, item, server, cached=True)
        assert [r["status"] for r in reply["results"]] == ["sent"]
        pids.append(reply["pid"])
        wait_until(lambda: reply["pid"] not in master.children("smtp"), 10,
                   what="the agent to exit after max_use")
    assert len(set(pids)) == 4                          # a new process for each request
    assert server.messages == 4 and len(server.connections) == 1


def test_with_a_master_killing_scache_loses_nothing(master_instance, servers):
    master = master_instance(MASTER_CF, MASTER_MAIN_CF)
    server = servers()
    queued = enqueue(master, 8)
    sent = []
    for item in queued[:4]:
        sent += [r["status"] for r in request(master, item, server, cached=True)["results"]]
    (scache_pid,) = master.children("scache")
    os.kill(scache_pid, 9)
    for item in queued[4:]:
        sent += [r["status"] for r in request(master, item, server, cached=True)["results"]]
    assert sent == ["sent"] * 8 and server.messages == 8
    for item in queued:
        assert all(r.done for r in queuefile.read_queue_file(
            os.path.join(master.queue_directory, "active", item.queue_id)).recipients)
    # The master started a new scache on demand, and caching went on with it.
    wait_until(lambda: master.children("scache") and master.children("scache") != [scache_pid],
               5, what="a new scache process")
    assert len(server.connections) <= 4


# --- batched requests: several messages, one session -----------------------------------

def queue_batch(config_dir, count, prefix="B"):
    """``count`` one-recipient queue files in active/; returns the batch's message list."""
    root = f"{config_dir}/q"
    for name in ("active", "bounce", "defer", "trace"):
        os.makedirs(f"{root}/{name}", exist_ok=True)
    messages = []
    for n in range(count):
        path = queuefile.write_queue_file(f"{root}/active", f"{prefix}{n}", sender="s@example.com",
                                          recipients=[Recipient(f"r{n}@example.com")],
                                          content=CONTENT, arrival_time=time.time())
        queued = queuefile.read_queue_file(path)
        messages.append({"queue_name": "active", "queue_id": queued.queue_id,
                         "recipients": [{"offset": r.offset} for r in queued.recipients]})
    return messages


class BatchContext:
    def __init__(self, config_dir):
        self.config = Config.load(str(config_dir), process_name="smtp")
        self.queue_directory = self.config.get("queue_directory")
        self.command = "smtp"


def deliver_batch(config_dir, nexthop, messages, backlog=False):
    return service.handle_batch(
        {"request": "deliver", "nexthop": nexthop, "messages": messages,
         "flags": {"use_cached_connection": backlog, "store_connection": backlog}},
        BatchContext(config_dir))


def pending_after(config_dir, messages):
    return [len(queuefile.read_queue_file(f"{config_dir}/q/active/{m['queue_id']}").pending())
            for m in messages]


def test_a_batch_goes_out_over_one_session_without_probes(queue_dir, servers, scache_process,
                                                          scache_calls):
    config_dir = write_config(queue_dir)
    scache_process(config_dir)
    server = servers()
    messages = queue_batch(config_dir, 5)
    reply = deliver_batch(config_dir, server.nexthop, messages)
    assert reply["status"] == "ok"
    assert [[r["status"] for r in m["results"]] for m in reply["messages"]] == [["sent"]] * 5
    assert pending_after(config_dir, messages) == [0] * 5
    assert len(server.connections) == 1 and server.messages == 5
    assert server.rsets == 0                    # the batch's own session: never probed
    assert server.wait_quits(1) == 1            # no backlog: the last message ends it with QUIT
    assert SAVE_ENDP not in scache_calls


def test_the_next_request_probes_the_session_a_batch_left(queue_dir, servers, scache_process,
                                                          scache_calls):
    config_dir = write_config(queue_dir)
    scache_process(config_dir)
    server = servers()
    first = deliver_batch(config_dir, server.nexthop, queue_batch(config_dir, 3, "F"), backlog=True)
    second = deliver_batch(config_dir, server.nexthop, queue_batch(config_dir, 2, "S"), backlog=True)
    assert [m["results"][0]["status"] for m in first["messages"] + second["messages"]] == ["sent"] * 5
    assert len(server.connections) == 1 and server.messages == 5
    assert server.rsets == 1                    # another request: probed once, as in scache
    assert server.quits == 0                    # a backlog: the session stays for more


def test_a_continued_session_that_broke_goes_on_over_a_new_connection(queue_dir, servers,
                                                                      scache_process,
                                                                      scache_calls):
    config_dir = write_config(queue_dir)
    scache_process(config_dir)
    server = servers(hangup_idle=True)          # closes each connection after its message
    messages = queue_batch(config_dir, 3)
    reply = deliver_batch(config_dir, server.nexthop, messages)
    # MAIL did the probe's job: no deferral, no "destination down", a new connection each time
    assert [m["results"][0]["status"] for m in reply["messages"]] == ["sent"] * 3
    assert not any("destination_down" in m for m in reply["messages"])
    assert pending_after(config_dir, messages) == [0] * 3
    assert len(server.connections) == 3 and server.messages == 3
    assert os.listdir(f"{config_dir}/q/defer") == []


def test_after_the_destination_goes_down_the_rest_of_a_batch_is_skipped(queue_dir, scache_process,
                                                                        scache_calls):
    config_dir = write_config(queue_dir)
    scache_process(config_dir)
    with socket.socket() as unused:             # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    messages = queue_batch(config_dir, 3)
    reply = deliver_batch(config_dir, f"[127.0.0.1]:{port}", messages)
    first, *rest = reply["messages"]
    assert first["results"][0]["status"] == "deferred" and first["destination_down"]
    assert [m["status"] for m in rest] == ["skipped", "skipped"]
    assert all(m["results"] == [] for m in rest)
    assert pending_after(config_dir, messages) == [1, 1, 1]
    assert os.listdir(f"{config_dir}/q/defer") == [messages[0]["queue_id"]]


@pytest.mark.parametrize("messages", [[], "x", [1], [{}] * (service.MAX_BATCH + 1)])
def test_a_malformed_batch_is_refused(queue_dir, messages):
    config_dir = write_config(queue_dir)
    reply = deliver_batch(config_dir, "[127.0.0.1]:25", messages)
    assert reply["status"] == "error" and reply["messages"] == []


def test_a_batch_resolves_its_destination_once(queue_dir, scripted_dns, scache_process,
                                               scache_calls):
    scripted_dns.rcode("broken.test", "SERVFAIL")
    config_dir = write_config(queue_dir, dns_resolver_addresses=scripted_dns.resolver_address,
                              inet_interfaces="127.0.0.1")
    scache_process(config_dir)
    single = deliver_batch(config_dir, "broken.test", queue_batch(config_dir, 1, "O"))
    one_message = len(scripted_dns.queries)
    assert one_message >= 1 and single["messages"][0]["results"][0]["status"] == "deferred"
    reply = deliver_batch(config_dir, "broken.test", queue_batch(config_dir, 3, "T"))
    assert [m["results"][0]["status"] for m in reply["messages"]] == ["deferred"] * 3
    assert len(scripted_dns.queries) == 2 * one_message     # not 4 times


def test_a_stopping_agent_finishes_the_message_at_hand_and_starts_no_other(queue_dir, servers,
                                                                          scache_process,
                                                                          scache_calls):
    config_dir = write_config(queue_dir)
    scache_process(config_dir)
    server = servers()
    messages = queue_batch(config_dir, 4)
    context = BatchContext(config_dir)
    delivered = []
    context.lifeline_closed = lambda: bool(delivered.append(1) or len(delivered) > 1)
    reply = service.handle_batch({"request": "deliver", "nexthop": server.nexthop,
                                  "messages": messages, "flags": {}}, context)
    # asked before the 2nd message (still open) and before the 3rd (closed: the master went away)
    assert [m["status"] for m in reply["messages"]] == ["ok", "ok", "skipped", "skipped"]
    assert reply["messages"][2]["reason"] == "delivery agent stopping"
    assert server.messages == 2 and pending_after(config_dir, messages) == [0, 0, 1, 1]


def test_a_batch_message_removed_or_held_while_it_waits_is_not_sent(queue_dir, servers,
                                                                    scache_process, scache_calls):
    # The batch opens every file when the request comes; a message that super -d
    # deletes or super -h moves away before it is taken up must not go out
    # through that early descriptor.  A message is taken up when the one before
    # it ends its data (its MAIL goes out behind that "."): from then on it is
    # at hand, and its done marks follow the file where it was moved.
    config_dir = write_config(queue_dir)
    scache_process(config_dir)
    server = servers()
    messages = queue_batch(config_dir, 5)
    os.makedirs(f"{config_dir}/q/hold")
    context = BatchContext(config_dir)
    asked = []
    active, hold = f"{config_dir}/q/active", f"{config_dir}/q/hold"

    def meanwhile():            # called before each message after the first
        if not asked:           # the turn of messages[1], already under way
            for message in messages[1:3]:
                os.rename(f"{active}/{message['queue_id']}", f"{hold}/{message['queue_id']}")
            os.unlink(f"{active}/{messages[3]['queue_id']}")
        asked.append(1)
        return False

    context.lifeline_closed = meanwhile
    reply = service.handle_batch({"request": "deliver", "nexthop": server.nexthop,
                                  "messages": messages, "flags": {}}, context)
    statuses = [m["status"] for m in reply["messages"]]
    assert statuses == ["ok", "ok", "error", "error", "ok"], reply
    assert all("does not exist" in m["reason"] for m in reply["messages"][2:4])
    assert server.messages == 3
    taken = queuefile.read_queue_file(f"{hold}/{messages[1]['queue_id']}")
    assert taken.pending() == []            # sent, and marked done in the moved file
    held = queuefile.read_queue_file(f"{hold}/{messages[2]['queue_id']}")
    assert len(held.pending()) == 1         # still to deliver once released
