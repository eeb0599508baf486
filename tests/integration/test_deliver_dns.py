"""Delivery through real DNS: MX order, dead and soft MX hosts, fallback relays, DNS errors, loops.

A real dnsmasq (tests/integration/dns_server.py, standard_zones()) serves the
test domains; their MX hosts are 127.0.0.2, 127.0.0.3 ...  Each test starts
aiosmtpd servers (recording what they were sent and answering as told) or
smtp-sinks (for their fault options: 5xx greeting, hang-up) on the addresses
it needs, all on one high port P, and runs ``postclient deliver --nexthop
DOMAIN:P`` so that every MX host is contacted on P.  A few tests call the
engine in-process instead, to deliver many messages quickly.  The SERVFAIL
tests use the scripted DNS responder instead of dnsmasq.  The
client is told ``dns_resolver_addresses = 127.0.0.1:<dnsmasq>`` and
``inet_interfaces = 127.0.0.1``: only 127.0.0.1 is "this machine", so the
mail-loop tests use the zones whose MX host is 127.0.0.1, on port 25 (loop
detection applies to port 25 only; nothing here listens on 127.0.0.1:25, so a
client that connected anyway would be refused and defer instead of
bouncing).  The two tests that need a server on port 25 bind it on
127.0.0.2/127.0.0.4 only.
"""

import json
import re
import socket
import subprocess
import sys
import uuid

import pytest
from aiosmtpd.controller import Controller

from postclient.config.config import Config
from postclient.smtp import engine
from postclient.smtp.request import DeliveryRequest, Recipient
from tests.integration.postfix_instance import SmtpSink
from tests.integration.servers import serving

pytest_plugins = ["tests.integration.dns_server"]     # fixtures dnsmasq_server, scripted_dns
pytestmark = pytest.mark.integration

MX_ADDRESSES = [f"127.0.0.{n}" for n in range(2, 9)]     # mx-order.test ... many-mx.test


# --- SMTP servers on the MX addresses ------------------------------------------------------

class MxServer:
    """aiosmtpd on address:port; records RCPT/DATA and answers as scripted.

    ``rcpt_reply`` (e.g. "450 4.2.0 busy"): the reply to every RCPT; None
    accepts.  ``hostname``: the name in the greeting and the EHLO reply.
    """

    def __init__(self, address, port, rcpt_reply=None, hostname=None):
        self.address = address
        self.port = port
        self.rcpt_reply = rcpt_reply
        self.hostname = hostname or f"server-{address}"
        self.rcpts = []              # every RCPT address seen, accepted or not
        self.messages = []           # (mail_from, [rcpt], content bytes)
        self.controller = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpts.append(address)
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content))
        return f"250 2.0.0 Ok: queued on {self.address}"

    def start(self):
        self.controller = Controller(self, hostname=self.address, port=self.port,
                                     server_hostname=self.hostname, ready_timeout=10)
        self.controller.start()
        return self

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def got(self, marker):
        """The recipients of the messages carrying ``marker`` that this server accepted."""
        return [rcpt for _, rcpts, content in self.messages if marker.encode() in content
                for rcpt in rcpts]


def _port_free_everywhere(port):
    for address in ["127.0.0.1"] + MX_ADDRESSES:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError:
                return False
    return True


@pytest.fixture(scope="module")
def mx_port():
    """One port, free on 127.0.0.1 and every MX address, for all the MX servers."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.2", 0))
            port = probe.getsockname()[1]
        if _port_free_everywhere(port):
            return port
    raise RuntimeError("no port free on all of 127.0.0.1-8")


@pytest.fixture
def servers(mx_port):
    """servers(address, **options) starts an MxServer on address:P; all stop after the test."""
    yield from serving(lambda address, port=None, **options:
                       MxServer(address, port or mx_port, **options))


@pytest.fixture
def sinks(mx_port):
    """sinks(address, *options) starts an smtp-sink on address:P with fault options."""
    yield from serving(lambda address, *options:
                       SmtpSink(address=address, port=mx_port, options=options))


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
    """An empty configuration directory: only the -o overrides apply."""
    return str(tmp_path_factory.mktemp("postclient-etc"))


# --- running postclient deliver ------------------------------------------------------------

class Run:
    def __init__(self, process):
        self.status = process.returncode
        self.log = process.stderr.decode("utf-8", "replace")
        self.lines = [json.loads(line) for line in process.stdout.decode().splitlines() if line]
        self.by_recipient = {line["recipient"]: line for line in self.lines}

    def __getitem__(self, recipient):
        return self.by_recipient[recipient]


def message(subject="test"):
    marker = uuid.uuid4().hex
    content = (f"From: sender@client.test\nSubject: {subject} {marker}\n"
               f"Message-ID: <{marker}@client.test>\n\nbody {marker}\n").encode()
    return marker, content


def deliver(config_dir, dns, recipients, *options, nexthop=None, content=None):
    """Run ``postclient deliver``; returns (Run, marker)."""
    marker, default_content = message()
    command = [sys.executable, "-m", "postclient", "deliver", "-c", config_dir,
               "-o", "maillog_file=/dev/stderr", "-o", "myhostname=postclient.test",
               "-o", f"dns_resolver_addresses={dns.resolver_address}",
               "-o", "inet_interfaces=127.0.0.1", "-o", "smtp_connect_timeout=5s",
               *options, "--sender", "sender@client.test"]
    if nexthop:
        command += ["--nexthop", nexthop]
    process = subprocess.run(command + list(recipients), input=content or default_content,
                             capture_output=True, timeout=60)
    run = Run(process)
    assert [line["recipient"] for line in run.lines] == list(recipients), run.log
    return run, marker


# --- MX order --------------------------------------------------------------------------------

def test_best_mx_gets_the_mail(dnsmasq_server, config_dir, servers, mx_port):
    mx1, mx2, mx3 = (servers(address) for address in MX_ADDRESSES[:3])
    run, marker = deliver(config_dir, dnsmasq_server, ["a@mx-order.test", "b@mx-order.test"],
                          nexthop=f"mx-order.test:{mx_port}")
    assert run.status == 0, run.log
    relay = f"mx1.mx-order.test[127.0.0.2]:{mx_port}"
    for recipient in ("a@mx-order.test", "b@mx-order.test"):
        line = run[recipient]
        assert (line["status"], line["relay"], line["text"]) == (
            "sent", relay, "250 2.0.0 Ok: queued on 127.0.0.2"), line
        assert re.search(rf"to=<{re.escape(recipient)}>, relay={re.escape(relay)}, .*status=sent",
                         run.log), run.log
    assert mx1.got(marker) == ["a@mx-order.test", "b@mx-order.test"]
    assert mx2.rcpts == mx3.rcpts == []


def test_dead_primary_mail_goes_to_the_backup(dnsmasq_server, config_dir, servers, mx_port):
    backup = servers("127.0.0.3")                    # nothing listens on 127.0.0.2
    run, marker = deliver(config_dir, dnsmasq_server, ["user@dead-primary.test"],
                          nexthop=f"dead-primary.test:{mx_port}")
    assert run.status == 0, run.log
    line = run["user@dead-primary.test"]
    assert (line["status"], line["relay"]) == (
        "sent", f"backup.dead-primary.test[127.0.0.3]:{mx_port}"), line
    assert re.search(rf"postclient/smtp\[\d+\]: connect to primary\.dead-primary\.test"
                     rf"\[127\.0\.0\.2\]:{mx_port}: Connection refused", run.log), run.log
    assert backup.got(marker) == ["user@dead-primary.test"]


def test_implicit_mx_delivers_to_the_domain_address(dnsmasq_server, config_dir, servers,
                                                  mx_port):
    server = servers("127.0.0.2")
    run, marker = deliver(config_dir, dnsmasq_server, ["user@implicit.test"],
                          nexthop=f"implicit.test:{mx_port}")
    assert run.status == 0, run.log
    assert run["user@implicit.test"]["relay"] == f"implicit.test[127.0.0.2]:{mx_port}"
    assert server.got(marker) == ["user@implicit.test"]


@pytest.mark.parametrize("override, name", [("no", "alias.cname-mx.test"),
                                            ("yes", "real.cname-mx.test")])
def test_mx_host_behind_a_cname(dnsmasq_server, config_dir, servers, mx_port, override, name):
    server = servers("127.0.0.2")
    run, marker = deliver(config_dir, dnsmasq_server, ["user@cname-mx.test"],
                          "-o", f"smtp_cname_overrides_servername={override}",
                          nexthop=f"cname-mx.test:{mx_port}")
    assert run.status == 0, run.log
    assert run["user@cname-mx.test"]["relay"] == f"{name}[127.0.0.2]:{mx_port}"
    assert server.got(marker) == ["user@cname-mx.test"]


def _deliver_in_process(config_dir, dns, nexthop, recipient, *overrides):
    config = Config.load(config_dir, [f"dns_resolver_addresses={dns.resolver_address}",
                                      "inet_interfaces=127.0.0.1", *overrides],
                         require_main_cf=False)
    request = DeliveryRequest(queue_id=uuid.uuid4().hex[:10].upper(), nexthop=nexthop,
                              sender="sender@client.test", recipients=[Recipient(recipient)],
                              content=b"Subject: equal\n\nequal preferences\n")
    (result,) = engine.deliver(config, request).results
    return result


def test_equal_preferences_share_the_mail(dnsmasq_server, config_dir, servers, mx_port):
    equal = [servers(address) for address in MX_ADDRESSES[:3]]
    results = [_deliver_in_process(config_dir, dnsmasq_server, f"equal-pref.test:{mx_port}",
                                   f"r{n}@equal-pref.test", "smtp_randomize_addresses=yes")
               for n in range(24)]
    assert {result.status for result in results} == {"sent"}
    counts = [len(server.messages) for server in equal]
    # 24 messages over three equal MX hosts: all on one host has odds 3 * 3**-24.
    assert sum(counts) == 24 and sum(1 for count in counts if count) >= 2, counts
    for server in equal:
        assert len(server.rcpts) == len(server.messages)       # each message went to one host


def test_equal_preferences_keep_one_order_without_randomizing(dnsmasq_server, config_dir,
                                                               servers, mx_port):
    equal = [servers(address) for address in MX_ADDRESSES[:3]]
    results = [_deliver_in_process(config_dir, dnsmasq_server, f"equal-pref.test:{mx_port}",
                                   f"r{n}@equal-pref.test", "smtp_randomize_addresses=no")
               for n in range(6)]
    assert {result.status for result in results} == {"sent"}
    assert sorted(len(server.messages) for server in equal) == [0, 0, 6]


def test_equal_preferences_with_one_host_down(dnsmasq_server, config_dir, servers, mx_port):
    alive = [servers(address) for address in ("127.0.0.3", "127.0.0.4")]   # .2 is down
    results = [_deliver_in_process(config_dir, dnsmasq_server, f"equal-pref.test:{mx_port}",
                                   f"r{n}@equal-pref.test", "smtp_randomize_addresses=yes")
               for n in range(8)]
    assert [result.status for result in results] == ["sent"] * 8
    assert sum(len(server.messages) for server in alive) == 8


# --- failing MX hosts ------------------------------------------------------------------------

def test_soft_primary_hands_the_recipient_to_the_next_mx(dnsmasq_server, config_dir, servers,
                                                         mx_port):
    mx1 = servers("127.0.0.2", rcpt_reply="450 4.2.0 mx1 is busy")
    mx2 = servers("127.0.0.3")
    run, marker = deliver(config_dir, dnsmasq_server, ["user@mx-order.test"],
                          nexthop=f"mx-order.test:{mx_port}")
    assert run.status == 0, run.log
    assert run["user@mx-order.test"]["relay"] == f"mx2.mx-order.test[127.0.0.3]:{mx_port}"
    assert mx1.rcpts == ["user@mx-order.test"] and mx1.messages == []
    assert mx2.got(marker) == ["user@mx-order.test"]
    assert "mx1 is busy" not in run.log             # a soft error on a non-final MX is not logged


@pytest.mark.parametrize("session_limit, final", [("2", 2), ("0", 3)],
                         ids=["session-limit-2", "no-session-limit"])
def test_soft_everywhere_is_deferred_on_the_final_mx(dnsmasq_server, config_dir, servers, mx_port,
                                                      session_limit, final):
    mx = [servers(address, rcpt_reply=f"450 4.2.0 mx{n} is busy")
          for n, address in enumerate(MX_ADDRESSES[:3], 1)]
    run, marker = deliver(config_dir, dnsmasq_server, ["user@mx-order.test"],
                          "-o", f"smtp_mx_session_limit={session_limit}",
                          nexthop=f"mx-order.test:{mx_port}")
    assert run.status == 75, run.log
    line = run["user@mx-order.test"]
    host = f"mx{final}.mx-order.test[127.0.0.{final + 1}]"
    assert (line["status"], line["dsn"], line["relay"]) == (
        "deferred", "4.2.0", f"{host}:{mx_port}"), line
    assert line["text"] == (f"host {host} said: 450 4.2.0 mx{final} is busy "
                            f"(in reply to RCPT TO command)")
    # Each MX up to the final one was asked once; none after it.
    assert [len(server.rcpts) for server in mx] == [1] * final + [0] * (3 - final)


def test_mx_address_limit_makes_the_fifth_mx_final(dnsmasq_server, config_dir, servers, mx_port):
    """many-mx.test has 7 MX hosts; smtp_mx_address_limit = 5 (default) stops at mx5."""
    mx = [servers(address, rcpt_reply=f"450 4.2.0 mx{n} is busy")
          for n, address in enumerate(MX_ADDRESSES, 1)]
    run, _ = deliver(config_dir, dnsmasq_server, ["user@many-mx.test"],
                     "-o", "smtp_mx_session_limit=0", nexthop=f"many-mx.test:{mx_port}")
    assert run.status == 75, run.log
    line = run["user@many-mx.test"]
    assert line["text"] == ("host mx5.many-mx.test[127.0.0.6] said: 450 4.2.0 mx5 is busy "
                            "(in reply to RCPT TO command)")
    assert [len(server.rcpts) for server in mx] == [1, 1, 1, 1, 1, 0, 0]


def test_5xx_greeting_on_the_primary_goes_to_the_next_mx(dnsmasq_server, config_dir, servers,
                                                         sinks, mx_port):
    sinks("127.0.0.2", "-f", "CONNECT", "-B", "554 5.7.1 mx1 says go away")
    mx2 = servers("127.0.0.3")
    run, marker = deliver(config_dir, dnsmasq_server, ["user@mx-order.test"],
                          nexthop=f"mx-order.test:{mx_port}")
    assert run.status == 0, run.log
    assert run["user@mx-order.test"]["relay"] == f"mx2.mx-order.test[127.0.0.3]:{mx_port}"
    assert mx2.got(marker) == ["user@mx-order.test"]


def test_5xx_greeting_bounces_without_skip_5xx_greeting(dnsmasq_server, config_dir, servers,
                                                        sinks, mx_port):
    sinks("127.0.0.2", "-f", "CONNECT", "-B", "554 5.7.1 mx1 says go away")
    mx2 = servers("127.0.0.3")
    run, _ = deliver(config_dir, dnsmasq_server, ["user@mx-order.test"],
                     "-o", "smtp_skip_5xx_greeting=no", nexthop=f"mx-order.test:{mx_port}")
    assert run.status == 69, run.log
    line = run["user@mx-order.test"]
    assert (line["status"], line["dsn"]) == ("bounced", "5.7.1"), line
    assert line["text"] == (f"host mx1.mx-order.test[127.0.0.2] refused to talk to me: "
                            f"554 5.7.1 mx1 says go away")
    assert mx2.rcpts == []


def test_failed_handshake_does_not_count_towards_the_session_limit(dnsmasq_server, config_dir,
                                                                    servers, sinks, mx_port):
    """mx1 refuses at the greeting (no session); mx2 and mx3 are sessions 1 and 2."""
    sinks("127.0.0.2", "-f", "CONNECT", "-B", "554 5.7.1 mx1 says go away")
    mx2 = servers("127.0.0.3", rcpt_reply="450 4.2.0 mx2 is busy")
    mx3 = servers("127.0.0.4", rcpt_reply="450 4.2.0 mx3 is busy")
    run, _ = deliver(config_dir, dnsmasq_server, ["user@mx-order.test"],
                     "-o", "smtp_mx_session_limit=2", nexthop=f"mx-order.test:{mx_port}")
    assert run.status == 75, run.log
    line = run["user@mx-order.test"]
    assert line["text"] == ("host mx3.mx-order.test[127.0.0.4] said: 450 4.2.0 mx3 is busy "
                            "(in reply to RCPT TO command)"), line
    assert mx2.rcpts == mx3.rcpts == ["user@mx-order.test"]


def test_lost_connection_on_the_primary_goes_to_the_next_mx(dnsmasq_server, config_dir, servers,
                                                            sinks, mx_port):
    mx1 = sinks("127.0.0.2", "-q", "RCPT")                # hangs up when RCPT arrives
    mx2 = servers("127.0.0.3")
    run, marker = deliver(config_dir, dnsmasq_server, ["a@mx-order.test", "b@mx-order.test"],
                          nexthop=f"mx-order.test:{mx_port}")
    assert run.status == 0, run.log
    for recipient in ("a@mx-order.test", "b@mx-order.test"):
        assert run[recipient]["relay"] == f"mx2.mx-order.test[127.0.0.3]:{mx_port}"
    assert mx2.got(marker) == ["a@mx-order.test", "b@mx-order.test"]
    assert mx1.dumps() == [] and "fatal" not in mx1.log(), mx1.log()


def test_lost_connection_on_the_final_mx_is_deferred(dnsmasq_server, config_dir, sinks, mx_port):
    mx = [sinks(address, "-q", "RCPT") for address in ("127.0.0.2", "127.0.0.3")]
    run, _ = deliver(config_dir, dnsmasq_server, ["user@mx-order.test"],
                     nexthop=f"mx-order.test:{mx_port}")
    assert not [sink.log() for sink in mx if "fatal" in sink.log()]
    assert run.status == 75, run.log
    line = run["user@mx-order.test"]
    assert (line["status"], line["dsn"], line["relay"]) == (
        "deferred", "4.4.2", f"mx2.mx-order.test[127.0.0.3]:{mx_port}"), line
    assert line["text"] == ("lost connection with mx2.mx-order.test[127.0.0.3] while "
                            "sending RCPT TO")


def test_hard_reject_on_the_primary_bounces_without_trying_more(dnsmasq_server, config_dir,
                                                                 servers, mx_port):
    mx1 = servers("127.0.0.2", rcpt_reply="550 5.1.1 no such user")
    mx2 = servers("127.0.0.3")
    run, _ = deliver(config_dir, dnsmasq_server, ["nobody@mx-order.test"],
                     nexthop=f"mx-order.test:{mx_port}")
    assert run.status == 69, run.log
    line = run["nobody@mx-order.test"]
    assert (line["status"], line["dsn"]) == ("bounced", "5.1.1")
    assert line["text"] == (f"host mx1.mx-order.test[127.0.0.2] said: 550 5.1.1 no such user "
                            f"(in reply to RCPT TO command)")
    assert mx1.rcpts == ["nobody@mx-order.test"] and mx2.rcpts == []


def test_fallback_relay_takes_the_mail_when_every_mx_is_down(dnsmasq_server, config_dir, servers,
                                                             mx_port):
    relay = servers("127.0.0.5")                     # relay.test; no MX host is listening
    run, marker = deliver(config_dir, dnsmasq_server, ["user@mx-order.test"],
                          "-o", f"smtp_fallback_relay=relay.test:{mx_port}",
                          nexthop=f"mx-order.test:{mx_port}")
    assert run.status == 0, run.log
    assert run["user@mx-order.test"]["relay"] == f"relay.test[127.0.0.5]:{mx_port}"
    assert relay.got(marker) == ["user@mx-order.test"]
    for n in (1, 2, 3):
        assert f"connect to mx{n}.mx-order.test[127.0.0.{n + 1}]:{mx_port}: Connection refused" \
            in run.log


def test_fallback_relay_after_soft_mx_hosts(dnsmasq_server, config_dir, servers, mx_port):
    mx = [servers(address, rcpt_reply="451 4.3.0 try later") for address in MX_ADDRESSES[:3]]
    relay = servers("127.0.0.5")
    run, marker = deliver(config_dir, dnsmasq_server, ["user@mx-order.test"],
                          "-o", f"smtp_fallback_relay=[127.0.0.5]:{mx_port}",
                          nexthop=f"mx-order.test:{mx_port}")
    assert run.status == 0, run.log
    assert run["user@mx-order.test"]["relay"] == f"127.0.0.5[127.0.0.5]:{mx_port}"
    assert relay.got(marker) == ["user@mx-order.test"]
    assert [len(server.rcpts) for server in mx] == [1, 1, 0]      # smtp_mx_session_limit = 2


# --- DNS answers that stop delivery ---------------------------------------------------------

def test_null_mx_bounces(dnsmasq_server, config_dir):
    run, _ = deliver(config_dir, dnsmasq_server, ["user@nullmx.test"])
    assert run.status == 69, run.log
    line = run["user@nullmx.test"]
    assert (line["status"], line["dsn"], line["relay"]) == ("bounced", "5.1.0", "none"), line
    assert line["text"] == "Domain nullmx.test does not accept mail (nullMX)"
    assert re.search(r"to=<user@nullmx\.test>, relay=none, .*dsn=5\.1\.0, status=bounced "
                     r"\(Domain nullmx\.test does not accept mail \(nullMX\)\)", run.log), run.log


def test_nxdomain_bounces(dnsmasq_server, config_dir):
    run, _ = deliver(config_dir, dnsmasq_server, ["user@nxdomain.test"])
    assert run.status == 69, run.log
    line = run["user@nxdomain.test"]
    assert (line["status"], line["dsn"], line["relay"]) == ("bounced", "5.4.4", "none"), line
    assert line["text"] == ("Host or domain name not found. Name service error for "
                            "name=nxdomain.test type=A: Host not found")


def test_nxdomain_still_tries_the_fallback_relay(dnsmasq_server, config_dir, servers, mx_port):
    """A hard lookup error is not final while fallback relays remain (smtp_connect.c)."""
    relay = servers("127.0.0.5")
    run, marker = deliver(config_dir, dnsmasq_server, ["user@nxdomain.test"],
                          "-o", f"smtp_fallback_relay=[127.0.0.5]:{mx_port}",
                          nexthop=f"nxdomain.test:{mx_port}")
    assert run.status == 0, run.log
    assert run["user@nxdomain.test"]["relay"] == f"127.0.0.5[127.0.0.5]:{mx_port}"
    assert relay.got(marker) == ["user@nxdomain.test"]


def test_servfail_defers(scripted_dns, config_dir):
    scripted_dns.rcode("servfail.test", "SERVFAIL")
    run, _ = deliver(config_dir, scripted_dns, ["user@servfail.test"])
    assert run.status == 75, run.log
    line = run["user@servfail.test"]
    assert (line["status"], line["dsn"], line["relay"]) == ("deferred", "4.4.3", "none"), line
    assert line["text"] == ("Host or domain name not found. Name service error for "
                            "name=servfail.test type=MX: Host not found, try again")
    assert ("servfail.test", "MX", "udp") in scripted_dns.queries


def test_scripted_mx_answer_is_followed(scripted_dns, config_dir, servers, mx_port):
    """Control for the SERVFAIL test: the same responder, answering, leads to delivery."""
    scripted_dns.records("served.test", "MX", "10 mx.served.test.")
    scripted_dns.records("mx.served.test", "A", "127.0.0.3")
    server = servers("127.0.0.3")
    run, marker = deliver(config_dir, scripted_dns, ["user@served.test"],
                          nexthop=f"served.test:{mx_port}")
    assert run.status == 0, run.log
    assert run["user@served.test"]["relay"] == f"mx.served.test[127.0.0.3]:{mx_port}"
    assert server.got(marker) == ["user@served.test"]


# --- relayhost and fallback relay misconfiguration: 4.3.5, not a bounce ---------------------

def test_hard_dns_error_for_relayhost_is_deferred_as_4_3_5(dnsmasq_server, config_dir, mx_port):
    run, _ = deliver(config_dir, dnsmasq_server, ["user@example.test"],
                     "-o", f"relayhost=nxdomain.test:{mx_port}")
    assert run.status == 75, run.log
    line = run["user@example.test"]
    assert (line["status"], line["dsn"], line["relay"]) == ("deferred", "4.3.5", "none"), line
    assert line["text"] == ("Host or domain name not found. Name service error for "
                            "name=nxdomain.test type=A: Host not found")


def test_hard_dns_error_for_the_fallback_relay_is_deferred_as_4_3_5(dnsmasq_server, config_dir,
                                                                     mx_port):
    run, _ = deliver(config_dir, dnsmasq_server, ["user@mx-order.test"],
                     "-o", f"smtp_fallback_relay=nxdomain.test:{mx_port}",
                     nexthop=f"mx-order.test:{mx_port}")     # no MX host is listening
    assert run.status == 75, run.log
    line = run["user@mx-order.test"]
    assert (line["status"], line["dsn"]) == ("deferred", "4.3.5"), line
    assert "name=nxdomain.test" in line["text"]


def test_lmtp_hard_dns_error_is_not_turned_into_4_3_5(dnsmasq_server, config_dir, mx_port):
    """Postfix applies the 4.3.5 rule to SMTP only (smtp_connect.c: "... && smtp_mode")."""
    run, _ = deliver(config_dir, dnsmasq_server, ["user@example.test"], "--lmtp",
                     "-o", f"lmtp_fallback_relay=inet:nxdomain.test:{mx_port}",
                     nexthop=f"inet:nxdomain.test:{mx_port}")
    assert run.status == 69, run.log
    line = run["user@example.test"]
    assert (line["status"], line["dsn"], line["relay"]) == ("bounced", "5.4.4", "none"), line
    assert "name=nxdomain.test" in line["text"]


def test_hard_reply_from_relayhost_still_bounces(dnsmasq_server, config_dir, servers, mx_port):
    """The 4.3.5 rule is for what looks like misconfiguration, not for a server's 5xx."""
    servers("127.0.0.2", rcpt_reply="550 5.7.1 relaying denied for you")
    run, _ = deliver(config_dir, dnsmasq_server, ["user@example.test"],
                     "-o", f"relayhost=[127.0.0.2]:{mx_port}")
    assert run.status == 69, run.log
    line = run["user@example.test"]
    assert (line["status"], line["dsn"]) == ("bounced", "5.7.1"), line
    assert line["relay"] == f"127.0.0.2[127.0.0.2]:{mx_port}"


@pytest.mark.parametrize("parameter", ["relayhost", "smtp_fallback_relay"])
def test_relay_misconfiguration_is_logged_as_a_warning(dnsmasq_server, config_dir, mx_port,
                                                       parameter):
    """Postfix (smtp_connect.c) warns "<parameter> configuration problem" with the 4.3.5."""
    nexthop = None if parameter == "relayhost" else f"mx-order.test:{mx_port}"
    run, _ = deliver(config_dir, dnsmasq_server, ["user@mx-order.test"],
                     "-o", f"{parameter}=nxdomain.test:{mx_port}", nexthop=nexthop)
    assert run["user@mx-order.test"]["dsn"] == "4.3.5", run.log
    assert re.search(rf"postclient/smtp\[\d+\]: warning: {parameter} configuration problem$",
                     run.log, re.M), run.log


# --- mail loops ------------------------------------------------------------------------------

def test_mx_pointing_at_this_host_bounces_as_a_mail_loop(dnsmasq_server, config_dir, servers,
                                                         mx_port):
    relay = servers("127.0.0.5")
    run, _ = deliver(config_dir, dnsmasq_server, ["user@loop.test"],
                     "-o", f"smtp_fallback_relay=[127.0.0.5]:{mx_port}")   # port 25: loop checks
    assert run.status == 69, run.log
    line = run["user@loop.test"]
    assert (line["status"], line["dsn"], line["relay"]) == ("bounced", "5.4.6", "none"), line
    assert line["text"] == "mail for loop.test loops back to myself"
    assert "connect to" not in run.log               # this host was never contacted
    assert relay.rcpts == []                         # nor the fallback relay


def test_loop_detection_is_for_port_25_only(dnsmasq_server, config_dir, servers, mx_port):
    """loop.test's MX is 127.0.0.1 (this host); on another port it is just a server."""
    server = servers("127.0.0.1")
    run, marker = deliver(config_dir, dnsmasq_server, ["user@loop.test"],
                          nexthop=f"loop.test:{mx_port}")
    assert run.status == 0, run.log
    assert run["user@loop.test"]["relay"] == f"self.loop.test[127.0.0.1]:{mx_port}"
    assert server.got(marker) == ["user@loop.test"]


def test_no_primary_relay_when_this_host_is_the_best_mx_found(dnsmasq_server, config_dir):
    run, _ = deliver(config_dir, dnsmasq_server, ["user@no-primary.test"])
    assert run.status == 75, run.log
    line = run["user@no-primary.test"]
    assert (line["status"], line["dsn"], line["relay"]) == ("deferred", "4.4.4", "none"), line
    assert line["text"] == "unable to find primary relay for no-primary.test"


def test_backup_mx_only_tries_better_mx_hosts(dnsmasq_server, config_dir, servers, mx_port):
    """backup-mx.test: MX 10 mx1 (127.0.0.2), 20 this host, 30 mx3 (127.0.0.4), on port 25."""
    mx1 = servers("127.0.0.2", port=25, rcpt_reply="450 4.2.0 mx1 is busy")
    mx3 = servers("127.0.0.4", port=25)
    relay = servers("127.0.0.5", port=mx_port)
    run, _ = deliver(config_dir, dnsmasq_server, ["user@backup-mx.test"],
                     "-o", f"smtp_fallback_relay=[127.0.0.5]:{mx_port}")
    assert run.status == 75, run.log
    line = run["user@backup-mx.test"]
    # mx1 is the final server: this host is a backup MX, so mx3 (worse) is never used.
    assert (line["status"], line["dsn"], line["relay"]) == (
        "deferred", "4.2.0", "mx1.backup-mx.test[127.0.0.2]:25"), line
    assert mx1.rcpts == ["user@backup-mx.test"] and mx3.rcpts == []
    assert relay.rcpts == []                         # nor a fallback relay: we are an MX host


def test_server_greeting_with_my_own_name_is_a_mail_loop(dnsmasq_server, config_dir, servers):
    """implicit.test (A 127.0.0.2) on port 25 answers EHLO with postclient's own myhostname."""
    server = servers("127.0.0.2", port=25, hostname="postclient.test")
    run, _ = deliver(config_dir, dnsmasq_server, ["user@implicit.test"])
    assert run.status == 69, run.log
    line = run["user@implicit.test"]
    assert (line["status"], line["dsn"]) == ("bounced", "5.4.6"), line
    assert line["text"] == "mail for implicit.test loops back to myself"
    assert server.rcpts == []
