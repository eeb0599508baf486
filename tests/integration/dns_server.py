"""DNS servers for tests: a real dnsmasq serving test zones, and a scripted responder.

Exports DnsZones, standard_zones(), Dnsmasq, ScriptedResponder, free_port()
and the pytest fixtures ``dnsmasq_server`` (session: dnsmasq serving
standard_zones()) and ``scripted_dns`` (function: an empty ScriptedResponder).
A test module gets the fixtures by loading this module as a plugin:

    pytest_plugins = ["tests.integration.dns_server"]

and point the client at it with ``dns_resolver_addresses = <server>.resolver_address``
("127.0.0.1:PORT").  Tests must also set ``inet_interfaces = 127.0.0.1`` so
that the MX hosts 127.0.0.2, 127.0.0.3 ... do not count as "this machine"
(with ``all``, the whole of 127.0.0.0/8 does).

Dnsmasq runs in the foreground (--keep-in-foreground, log to stderr) on
127.0.0.1 and a free high port, with --no-resolv --no-hosts and --local=/test/,
so every name under .test that the zones do not define is NXDOMAIN, a defined
name without records of the asked type is NODATA, and nothing is forwarded.
Zones are built from a DnsZones description (MX with --mx-host, addresses
with --host-record, aliases with --cname, null MX as "--mx-host=D,.,0").  The
fixture skips (a failure under CI=true) when dnsmasq is not installed.

The scripted responder (pure Python, dnspython message parsing, UDP and TCP
on one 127.0.0.1 port) answers what a test scripted, per (name, type):
records, CNAMEs (optionally chased within one reply, as a recursive server
does), an error rcode (SERVFAIL, REFUSED ...), silence (a timeout), TC=1
over UDP (the client must retry over TCP), or garbage.  Over UDP a reply
larger than 512 bytes is truncated (TC=1, no records), as for a client
without EDNS.  Records go out in the order scripted.  Unscripted names are
NXDOMAIN (NODATA for a name scripted for other types), or unanswered with
``default = "silent"``.  ``queries`` records every
(name, type, transport) asked.
"""

import dataclasses
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from tests.peers import need_program

READY_TIMEOUT = 10.0


def free_port():
    """A port free on 127.0.0.1 for both UDP and TCP (at the time of asking)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port on 127.0.0.1")


# --- a description of test zones ------------------------------------------------------

@dataclasses.dataclass
class DnsZones:
    """Records to serve; names live under .test.  Methods chain."""

    mx_records: list = dataclasses.field(default_factory=list)      # (domain, preference, host)
    host_records: list = dataclasses.field(default_factory=list)    # (name, address)
    cname_records: list = dataclasses.field(default_factory=list)   # (alias, target)
    null_mx_domains: list = dataclasses.field(default_factory=list)

    def mx(self, domain, preference, host, *addresses):
        """An MX record; with addresses, also the host's A/AAAA records."""
        self.mx_records.append((domain, preference, host))
        return self.host(host, *addresses) if addresses else self

    def host(self, name, *addresses):
        for address in addresses:
            self.host_records.append((name, address))
        return self

    def cname(self, alias, target):
        self.cname_records.append((alias, target))
        return self

    def null_mx(self, domain):
        self.null_mx_domains.append(domain)
        return self

    def dnsmasq_options(self):
        options = ["--local=/test/"]
        options += [f"--mx-host={domain},{host},{preference}"
                    for domain, preference, host in self.mx_records]
        options += [f"--mx-host={domain},.,0" for domain in self.null_mx_domains]
        options += [f"--host-record={name},{address}" for name, address in self.host_records]
        options += [f"--cname={alias},{target}" for alias, target in self.cname_records]
        return options


def standard_zones():
    """The zones every DNS-using test can rely on (documented in docs/resolution.md).

    mx-order.test        MX 10 mx1 (127.0.0.2), 20 mx2 (127.0.0.3), 30 mx3 (127.0.0.4)
    equal-pref.test      MX 10 a (127.0.0.2), 10 b (127.0.0.3), 10 c (127.0.0.4)
    many-mx.test         MX 10..70 mx1..mx7 (127.0.0.2 .. 127.0.0.8)
    dead-primary.test    MX 10 primary (127.0.0.2), 20 backup (127.0.0.3): serve only on .3
    implicit.test        no MX, A 127.0.0.2 (implicit MX)
    nullmx.test          MX 0 .
    nxdomain.test        does not exist (nor does any other undefined .test name)
    relay.test           A 127.0.0.5 (a fallback relay host)
    dual.test            MX 10 mx.dual.test, A 127.0.0.2 and AAAA ::1
    loop.test            MX 10 self.loop.test (127.0.0.1)
    backup-mx.test       MX 10 mx1 (127.0.0.2), 20 self (127.0.0.1), 30 mx3 (127.0.0.4)
    no-primary.test      MX 10 gone.no-primary.test (no address), 20 self (127.0.0.1)
    noaddr.test          MX 10 gone.noaddr.test (no address)
    cname-mx.test        MX 10 alias.cname-mx.test, CNAME -> real.cname-mx.test (127.0.0.2)
    """
    zones = DnsZones()
    zones.mx("mx-order.test", 10, "mx1.mx-order.test", "127.0.0.2")
    zones.mx("mx-order.test", 20, "mx2.mx-order.test", "127.0.0.3")
    zones.mx("mx-order.test", 30, "mx3.mx-order.test", "127.0.0.4")
    for letter, address in zip("abc", ("127.0.0.2", "127.0.0.3", "127.0.0.4")):
        zones.mx("equal-pref.test", 10, f"{letter}.equal-pref.test", address)
    for number in range(1, 8):
        zones.mx("many-mx.test", number * 10, f"mx{number}.many-mx.test", f"127.0.0.{number + 1}")
    zones.mx("dead-primary.test", 10, "primary.dead-primary.test", "127.0.0.2")
    zones.mx("dead-primary.test", 20, "backup.dead-primary.test", "127.0.0.3")
    zones.host("implicit.test", "127.0.0.2")
    zones.null_mx("nullmx.test")
    zones.host("relay.test", "127.0.0.5")
    zones.mx("dual.test", 10, "mx.dual.test", "127.0.0.2", "::1")
    zones.mx("loop.test", 10, "self.loop.test", "127.0.0.1")
    zones.mx("backup-mx.test", 10, "mx1.backup-mx.test", "127.0.0.2")
    zones.mx("backup-mx.test", 20, "self.backup-mx.test", "127.0.0.1")
    zones.mx("backup-mx.test", 30, "mx3.backup-mx.test", "127.0.0.4")
    zones.mx("no-primary.test", 10, "gone.no-primary.test")
    zones.mx("no-primary.test", 20, "self.no-primary.test", "127.0.0.1")
    zones.mx("noaddr.test", 10, "gone.noaddr.test")
    zones.mx("cname-mx.test", 10, "alias.cname-mx.test")
    zones.host("real.cname-mx.test", "127.0.0.2")
    zones.cname("alias.cname-mx.test", "real.cname-mx.test")
    return zones


def _answers(port, name="relay.test", timeout=0.2):
    query = dns.message.make_query(name, "A")
    try:
        dns.query.udp(query, "127.0.0.1", port=port, timeout=timeout)
    except (dns.exception.DNSException, OSError):
        return False
    return True


# --- dnsmasq -------------------------------------------------------------------------

class Dnsmasq:
    """A dnsmasq process serving ``zones`` on 127.0.0.1:port until stop()."""

    def __init__(self, zones, program="/usr/sbin/dnsmasq"):
        self.zones = zones
        self.program = program
        self.address = "127.0.0.1"
        self.port = None
        self.process = None
        self.directory = None
        self.log_path = None

    @property
    def resolver_address(self):
        """The value for dns_resolver_addresses."""
        return f"{self.address}:{self.port}"

    def command(self, port):
        return [self.program, "--keep-in-foreground", "--log-facility=-", "--log-queries",
                "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
                f"--pid-file={os.path.join(self.directory, 'dnsmasq.pid')}",
                f"--port={port}", f"--listen-address={self.address}", "--bind-interfaces",
                *self.zones.dnsmasq_options()]

    def start(self):
        self.directory = tempfile.mkdtemp(prefix="postclient-dnsmasq-")
        os.chmod(self.directory, 0o755)
        self.log_path = os.path.join(self.directory, "dnsmasq.log")
        for _ in range(3):                      # the free port may be taken meanwhile
            port = free_port()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(self.command(port), stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + READY_TIMEOUT
            while time.monotonic() < deadline and self.process.poll() is None:
                if _answers(port):
                    self.port = port
                    return self
                time.sleep(0.05)
            self._terminate()
        log = self.log()
        self.stop()
        raise RuntimeError(f"dnsmasq did not start; its log:\n{log}")

    def log(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return log.read()
        except (OSError, TypeError):
            return ""

    def _terminate(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def stop(self):
        """End dnsmasq and remove its directory (log included)."""
        self._terminate()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


# --- the scripted responder --------------------------------------------------------------

def _key(name):
    return name.lower().rstrip(".")


class ScriptedResponder:
    """A tiny DNS server that answers as scripted (see the module docstring)."""

    def __init__(self, chase_cnames=True, default="nxdomain"):
        self.chase_cnames = chase_cnames
        self.default = default          # for unscripted names: "nxdomain" or "silent"
        self.rules = {}                 # (name, rdtype or None) -> (action, argument)
        self.queries = []               # (name, type text, "udp"/"tcp")
        self.address = "127.0.0.1"
        self.port = None
        self._stopping = threading.Event()
        self._threads = []
        self._udp = self._tcp = None

    @property
    def resolver_address(self):
        return f"{self.address}:{self.port}"

    # scripting
    def records(self, name, rdtype, *rdatas):
        """Answer (name, rdtype) with these records (rdata text, e.g. "10 mx.x.test.")."""
        self.rules[(_key(name), rdtype.upper())] = ("records", rdatas)
        return self

    def cname(self, alias, target):
        """``alias`` is a CNAME for ``target`` (for every type)."""
        self.rules[(_key(alias), None)] = ("cname", target)
        return self

    def rcode(self, name, rcode, rdtype=None):
        self.rules[(_key(name), rdtype and rdtype.upper())] = ("rcode", rcode)
        return self

    def silent(self, name, rdtype=None):
        """Never answer: the client times out."""
        self.rules[(_key(name), rdtype and rdtype.upper())] = ("silent", None)
        return self

    def truncate(self, name, rdtype=None):
        """Over UDP answer TC=1 with no records; over TCP answer as otherwise scripted."""
        self.rules[(_key(name), rdtype and rdtype.upper(), "udp")] = ("truncate", None)
        return self

    def garbage(self, name, rdtype=None):
        self.rules[(_key(name), rdtype and rdtype.upper())] = ("garbage", None)
        return self

    # answering
    def _rule(self, name, rdtype, transport=None):
        for key in ((name, rdtype, transport), (name, None, transport)) if transport else \
                ((name, rdtype), (name, None)):
            if key in self.rules:
                return self.rules[key]
        return None

    def respond(self, wire, transport):
        """The reply bytes for one query (None: stay silent)."""
        try:
            query = dns.message.from_wire(wire)
            question = query.question[0]
        except (dns.exception.DNSException, IndexError, ValueError):
            return None
        name = _key(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype, transport))
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA | dns.flags.AA
        if transport == "udp" and self._rule(name, rdtype, "udp"):
            response.flags |= dns.flags.TC
            return response.to_wire()
        rule = self._rule(name, rdtype)
        if rule is None:
            if self.default == "silent":
                return None
            if not any(key[0] == name for key in self.rules):
                response.set_rcode(dns.rcode.NXDOMAIN)
            return response.to_wire()           # NXDOMAIN, or NODATA for a known name
        action, argument = rule
        if action == "silent":
            return None
        if action == "garbage":
            return wire[:2] + b"\x84\x00garbage"
        if action == "rcode":
            response.set_rcode(dns.rcode.from_text(argument))
            return response.to_wire()
        self._fill(response, name, rdtype, question.name)
        try:
            return response.to_wire(max_size=512 if transport == "udp" else 65535,
                                    want_shuffle=False)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.TC | dns.flags.RA | dns.flags.AA
            return truncated.to_wire()

    def _fill(self, response, name, rdtype, owner):
        for _ in range(40):                     # bounded: CNAME loops end here
            rule = self._rule(name, rdtype)
            if rule is None:
                return
            action, argument = rule
            if action == "records":
                response.answer.append(dns.rrset.from_text(owner, 60, "IN", rdtype, *argument))
                return
            if action != "cname":
                return
            target = dns.name.from_text(argument)
            response.answer.append(dns.rrset.from_text(owner, 60, "IN", "CNAME",
                                                       target.to_text()))
            if not self.chase_cnames:
                return
            owner, name = target, _key(argument)

    # serving
    def start(self):
        port = free_port()
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind((self.address, port))
        self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._tcp.bind((self.address, port))
        self._tcp.listen(16)
        self._udp.settimeout(0.1)
        self._tcp.settimeout(0.1)
        self.port = port
        for target in (self._serve_udp, self._serve_tcp):
            thread = threading.Thread(target=target, daemon=True, name="scripted-dns")
            thread.start()
            self._threads.append(thread)
        return self

    def _serve_udp(self):
        while not self._stopping.is_set():
            try:
                wire, peer = self._udp.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self.respond(wire, "udp")
            if reply is not None:
                try:
                    self._udp.sendto(reply, peer)
                except OSError:
                    pass

    def _serve_tcp(self):
        while not self._stopping.is_set():
            try:
                connection, _ = self._tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with connection:
                connection.settimeout(2)
                try:
                    self._serve_tcp_connection(connection)
                except OSError:
                    pass

    def _serve_tcp_connection(self, connection):
        while not self._stopping.is_set():
            header = _read_exactly(connection, 2)
            if header is None:
                return
            wire = _read_exactly(connection, int.from_bytes(header, "big"))
            if wire is None:
                return
            reply = self.respond(wire, "tcp")
            if reply is None:
                return
            connection.sendall(len(reply).to_bytes(2, "big") + reply)

    def stop(self):
        self._stopping.set()
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()
        for thread in self._threads:
            thread.join(2)


def _read_exactly(connection, count):
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data


# --- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def dnsmasq_server():
    """dnsmasq serving standard_zones() for the whole session."""
    program = need_program("dnsmasq")
    server = Dnsmasq(standard_zones(), program=program).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def scripted_dns():
    responder = ScriptedResponder().start()
    try:
        yield responder
    finally:
        responder.stop()
