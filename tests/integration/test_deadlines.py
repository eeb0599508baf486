"""Servers that try to hold the client: deadlines and bounded reading (security rule 7).

A state's timeout is a deadline for the whole command and reply, not for each
read (postfix-behaviour.md §1.4, Postfix 3.7's smtp_per_request_deadline): a
server that drips one byte a second is cut off when the state's timeout has
passed, even though every single read succeeds quickly.  A server that sends
a reply that never ends ("250-x" forever, or one endless line) costs the
client CPU until the deadline, never memory: the reply reader keeps a bounded
number of lines and bytes.  The servers are DripServer and EndlessServer from
tests/integration/servers.py.
"""

import time
import tracemalloc

import pytest

from tests.integration.servers import (deliver_now, drip_server, endless_server,  # noqa: F401
                                       recording_server, run_cli, write_main_cf)

pytestmark = pytest.mark.integration

PEER = "127.0.0.1[127.0.0.1]"
CONTENT = b"Subject: deadlines\n\nHello.\n"
RECIPIENTS = ["a@deadline.test", "b@deadline.test"]
MEMORY_BOUND = 20 * 1024 * 1024        # peak RSS growth of the CLI process
ALLOCATION_BOUND = 2 * 1024 * 1024     # peak traced allocation in-process (the reader keeps
                                       # at most 100 lines / 64 KiB of a reply)


@pytest.fixture
def config_dir(tmp_path):
    return write_main_cf(tmp_path / "etc")


def deliver(config_dir, server, overrides=()):
    started = time.monotonic()
    outcome, _ = deliver_now(config_dir, server.nexthop, RECIPIENTS, CONTENT,
                             overrides=list(overrides))
    return outcome, time.monotonic() - started


def timed_out(state):
    return [(r, "deferred", "4.4.2", f"conversation with {PEER} timed out while {state}")
            for r in RECIPIENTS]


def summary(outcome):
    return [(r.recipient.address, r.status, r.dsn, r.text) for r in outcome.results]


# --- one byte per second -------------------------------------------------------------

def test_greeting_dripped_one_byte_per_second_is_cut_off_by_smtp_helo_timeout(config_dir,
                                                                              drip_server):
    server = drip_server("greeting", interval=1.0)
    outcome, elapsed = deliver(config_dir, server, ["smtp_helo_timeout=2s"])
    assert summary(outcome) == timed_out("receiving the initial server greeting")
    # 2 s, not the 27 s the 27-byte greeting takes, nor 300 s
    assert 1.8 <= elapsed < 4, elapsed
    (connection,) = server.wait_closed()
    assert 1 <= connection.bytes_sent <= 4          # the reads themselves all succeeded
    assert connection.closed_at is not None       # the client hung up, after about 2 s
    assert 1.8 <= connection.closed_at - connection.accepted_at < 4


DRIPS = [
    ("ehlo", "smtp_helo_timeout", "performing the EHLO handshake"),
    ("rcpt", "smtp_rcpt_timeout", "sending RCPT TO"),
    ("dot", "smtp_data_done_timeout", "sending end of data -- message may be sent more than once"),
]


@pytest.mark.parametrize("drip_at, parameter, state", DRIPS, ids=[d for d, _, _ in DRIPS])
def test_reply_dripped_in_a_later_state_is_cut_off_by_that_state_timeout(
        config_dir, drip_server, drip_at, parameter, state):
    # a byte every 0.25 s: no single read ever waits long, the whole reply does
    server = drip_server(drip_at, interval=0.25)
    outcome, elapsed = deliver(config_dir, server, [f"{parameter}=1s"])
    assert summary(outcome) == timed_out(state)
    assert 0.9 <= elapsed < 3, elapsed
    (connection,) = server.wait_closed()
    assert connection.closed_at is not None


# --- replies that never end ----------------------------------------------------------------

def test_endless_multiline_greeting_keeps_memory_bounded(config_dir, endless_server,
                                                         recording_server):
    """The CLI in a subprocess: compare its peak RSS with a plain delivery's."""
    args = ["--sender", "s@client.test", *RECIPIENTS]
    plain = recording_server()
    baseline = run_cli(config_dir, ["--nexthop", plain.nexthop, *args], CONTENT)
    assert baseline.returncode == 0, baseline.stderr

    flood = endless_server("greeting")
    run = run_cli(config_dir, ["--nexthop", flood.nexthop, *args], CONTENT,
                  overrides=["smtp_helo_timeout=3s"], timeout=30)
    assert run.returncode == 75, run.stderr
    assert [(r["status"], r["dsn"], r["text"]) for r in run.results] == [
        ("deferred", "4.4.2",
         f"conversation with {PEER} timed out while receiving the initial server greeting")] * 2
    assert 2.5 <= run.elapsed < 10, run.elapsed
    (connection,) = flood.connections
    swallowed = connection.bytes_sent
    assert swallowed > 4 * MEMORY_BOUND, f"the flood was too small to tell: {swallowed} bytes"
    growth = (run.maxrss_kib - baseline.maxrss_kib) * 1024
    assert growth < MEMORY_BOUND, (f"peak RSS grew by {growth} bytes while reading "
                                   f"{swallowed} bytes of one reply")


@pytest.mark.parametrize("phase, state", [
    ("ehlo", "performing the EHLO handshake"),
    ("endless-line", "receiving the initial server greeting"),
], ids=["multiline-ehlo-reply", "one-endless-line"])
def test_endless_reply_in_process_peak_allocation_is_bounded(config_dir, endless_server,
                                                             recording_server, phase, state):
    line = b"x" * 65536 if phase == "endless-line" else None
    warm_up = recording_server()                 # imports and caches are not the reply's
    deliver(config_dir, warm_up)
    server = endless_server(phase, line=line)
    tracemalloc.start()
    try:
        outcome, elapsed = deliver(config_dir, server, ["smtp_helo_timeout=2s"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary(outcome) == timed_out(state)
    assert 1.8 <= elapsed < 6, elapsed
    (connection,) = server.connections
    assert connection.bytes_sent > 5 * ALLOCATION_BOUND, connection.bytes_sent
    assert peak < ALLOCATION_BOUND, (f"peak allocation {peak} bytes while reading "
                                     f"{connection.bytes_sent} bytes of one reply")
