"""The whole relay: postclient sendmail -> qmgr -> MX lookup in a real DNS server -> MX host.

A master runs pickup, qmgr, smtp and scache on a temporary queue; dnsmasq serves
the standard test zones (tests/integration/dns_server.py) and recording servers
listen on the MX addresses 127.0.0.2 and 127.0.0.3.  transport_maps sends the
test domains to their MX hosts on the servers' port (``smtp:DOMAIN:PORT`` keeps
the MX lookup), and postclient queue shows what is waiting.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.integration.master_harness import master_instance, wait_until  # noqa: F401
from tests.integration.servers import RecordingServer, Script, free_tcp_port

pytest_plugins = ["tests.integration.dns_server"]
pytestmark = pytest.mark.integration

MASTER_CF = ["pickup unix n - n 60 1 pickup", "qmgr unix n - n 300 1 qmgr",
             "smtp unix - - n - 4 smtp", "scache unix - - n - 1 scache"]


@pytest.fixture
def mx_servers():
    port = free_tcp_port("127.0.0.2", "127.0.0.3")
    primary = RecordingServer(Script(rcpt_replies={"gone@mx-order.test": "550 5.1.1 <{rcpt}>: no such user",
                                                   "busy@mx-order.test": "451 4.2.0 busy"}),
                              host="127.0.0.2", port=port)
    backup = RecordingServer(Script(rcpt_replies={"busy@mx-order.test": "451 4.2.0 busy too"}),
                             host="127.0.0.3", port=port)
    primary.start()
    backup.start()
    yield port, primary, backup
    primary.stop()
    backup.stop()


def run(master, *args, stdin=b""):
    return subprocess.run([sys.executable, "-m", "postclient", "-c", master.config_dir, *args],
                          input=stdin, capture_output=True, timeout=60)


def queue_json(master):
    result = run(master, "queue", "-j")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def test_sendmail_to_mx_hosts_found_in_real_dns(master_instance, dnsmasq_server, mx_servers):
    port, primary, backup = mx_servers
    master = master_instance(MASTER_CF, (
        f"dns_resolver_addresses = {dnsmasq_server.resolver_address}\n"
        "inet_interfaces = 127.0.0.1\nmyhostname = relay.example\n"
        "minimal_backoff_time = 60s\nmaximal_backoff_time = 60s\nqueue_run_delay = 60s\n"
        f"transport_maps = inline:{{ mx-order.test=smtp:mx-order.test:{port}, "
        f"example.com=smtp:mx-order.test:{port} }}\n"))
    message = (b"From: Alice <alice@example.com>\nTo: bob@mx-order.test\nSubject: end to end\n\n"
               b"Hello through the whole relay.\n.dot line\n")
    result = run(master, "sendmail", "-f", "alice@example.com", "-i",
                 "bob@mx-order.test", "gone@mx-order.test", "busy@mx-order.test", stdin=message)
    assert result.returncode == 0, result.stderr
    # bob is delivered to the best MX; gone bounces; busy is deferred after the backup MX
    wait_until(lambda: any(m.recipients == ["bob@mx-order.test"] for m in primary.messages), 30,
               what="delivery to the primary MX")
    wait_until(lambda: any("alice@example.com" in m.recipients for m in primary.messages), 30,
               what="the bounce to the sender")
    delivered = [m for m in primary.messages if m.recipients == ["bob@mx-order.test"]][0]
    assert b"Subject: end to end" in delivered.content and b"\r\n.dot line\r\n" in delivered.content
    assert b"Message-ID: <" in delivered.content or b"Message-Id: <" in delivered.content
    assert backup.messages == [] and "busy@mx-order.test" in [r.lower() for r in backup_rcpts(backup)]
    # the queue now holds only the deferred recipient, with its reason
    entries = wait_until(lambda: [e for e in queue_json(master) if e["queue_name"] == "deferred"], 30,
                         what="the deferred message in postclient queue -j")
    (entry,) = entries
    assert entry["sender"] == "alice@example.com"
    assert [r["address"] for r in entry["recipients"]] == ["busy@mx-order.test"]
    assert "451 4.2.0 busy too" in entry["recipients"][0]["delay_reason"]
    listing = run(master, "queue").stdout.decode()
    assert entry["queue_id"] in listing and "busy@mx-order.test" in listing


def backup_rcpts(server):
    return [line.split("<", 1)[1].split(">", 1)[0]
            for session in server.sessions for line in session.commands() if line.upper().startswith("RCPT")]
