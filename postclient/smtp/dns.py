"""The DNS stub client: questions to nameservers, and Postfix's dns_lookup() on them.

Exports DnsClient, parse_resolver_address(), dns_lookup() / dns_lookup_types()
(Postfix's dns_lookup and dns_lookup_v, for resolve.py and any other user of
DNS), their results DNS_OK, DNS_RETRY, DNS_INVAL, DNS_FAIL, DNS_NULLMX and
DNS_NOTFOUND (ranked as Postfix ranks them: higher wins when A and AAAA
lookups are combined), and the limits RR_LIMIT / CNAME_LIMIT.  For
resolve.py: _default_client(settings), the client resolution uses unless
given one.

Reads no Config itself: dns_resolver_addresses comes from the caller
(DnsClient.from_addresses(), or ResolverSettings.resolver_addresses for
_default_client()); without it, the nameservers and timeout of
/etc/resolv.conf.

Theory of operation (Postfix dns_lookup.c):

- DnsClient queries the nameservers of /etc/resolv.conf, or
  dns_resolver_addresses (``address[:port]``, ``[ipv6]:port``) when set, in
  order, two rounds, over UDP without EDNS, and retries over TCP when the
  reply is truncated.  Replies that do not answer the question asked (wrong
  id, wrong question, garbage) are ignored while waiting.  SERVFAIL,
  REFUSED, NOTIMP, timeouts and unreachable servers move on to the next
  server and end as "try again" (DNS_RETRY, 4.4.3 in resolve.py); NXDOMAIN
  is "Host not found"; other error codes are "Non-recoverable error"
  (DNS_FAIL, 5.4.3 in resolve.py), as with the C library resolver.  Names
  are looked up as given (absolute; no search list).
- Time: every query runs against an absolute ``deadline`` (time.monotonic);
  each try gets min(per-try timeout, time left), and running out of time
  is "try again".
- Replies: at most RR_LIMIT (100) records are used per answer (the lookup
  says ``truncated``; the caller warns); a CNAME chain longer than
  CNAME_LIMIT (10) is "Name server loop for N" (DNS_NOTFOUND, as Postfix
  does).  The chain is counted in CNAMEs, whether the server sent it whole
  or we asked for each target (Postfix counts queries, 10 at most).
"""

import dataclasses
import ipaddress
import socket
import time

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from .destination import valid_hostaddr, valid_hostname

__all__ = ["DnsClient", "parse_resolver_address", "dns_lookup", "dns_lookup_types",
           "DNS_OK", "DNS_RETRY", "DNS_INVAL", "DNS_FAIL", "DNS_NULLMX", "DNS_NOTFOUND",
           "RR_LIMIT", "CNAME_LIMIT"]

RR_LIMIT = 100
CNAME_LIMIT = 10
QUERY_LIMIT = CNAME_LIMIT + 1    # queries per lookup: one per CNAME, one for the data
DEFAULT_TRY_TIMEOUT = 2.0        # seconds per DNS try with dns_resolver_addresses
DEFAULT_ATTEMPTS = 2             # rounds over the nameserver list

# dns_lookup() results, ranked as Postfix ranks them (higher wins when A and
# AAAA lookups are combined).
DNS_OK, DNS_RETRY, DNS_INVAL, DNS_FAIL, DNS_NULLMX, DNS_NOTFOUND = 0, -2, -3, -4, -5, -7

# Resolver "h_errno" values and their texts (Postfix dns_strerror.c).
HOST_NOT_FOUND, TRY_AGAIN, NO_RECOVERY, NO_DATA = 1, 2, 3, 4
_HERRNO_TEXT = {HOST_NOT_FOUND: "Host not found", TRY_AGAIN: "Host not found, try again",
                NO_RECOVERY: "Non-recoverable error",
                NO_DATA: "Host found but no data record of requested type"}
_HERRNO_RESULT = {HOST_NOT_FOUND: DNS_NOTFOUND, NO_DATA: DNS_NOTFOUND,
                  NO_RECOVERY: DNS_FAIL, TRY_AGAIN: DNS_RETRY}
_NEXT_SERVER_RCODES = {dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.NOTIMP}


# --- the DNS stub ------------------------------------------------------------------

def parse_resolver_address(text):
    """``address``, ``address:port``, ``[ipv6]``, ``[ipv6]:port`` or bare IPv6 -> (addr, port)."""
    item = text.strip()
    port = "53"
    if item.startswith("["):
        host, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f'bad DNS server address "{text}" (expected [address]:port)')
        port = rest[1:] or port
    elif item.count(":") == 1:
        host, _, port = item.partition(":")
    else:
        host = item
    if not valid_hostaddr(host):
        raise ValueError(f'bad DNS server address "{text}" (expected an IP address)')
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'bad DNS server port in "{text}" (expected 1..65535)')
    return str(ipaddress.ip_address(host)), int(port)


@dataclasses.dataclass
class _Reply:
    herrno: int                 # 0 when ``response`` is a NOERROR reply with answers
    response: object = None


class DnsClient:
    """Queries a list of (address, port) nameservers, like the C library's stub resolver."""

    def __init__(self, nameservers, try_timeout=DEFAULT_TRY_TIMEOUT, attempts=DEFAULT_ATTEMPTS):
        if not nameservers:
            raise ValueError("no DNS servers")
        self.nameservers = list(nameservers)
        self.try_timeout = try_timeout
        self.attempts = max(1, attempts)

    @classmethod
    def from_addresses(cls, addresses, **options):
        """From dns_resolver_addresses entries; ValueError for a malformed one."""
        return cls([parse_resolver_address(item) for item in addresses], **options)

    @classmethod
    def system(cls):
        """The nameservers of /etc/resolv.conf (127.0.0.1 when there are none)."""
        try:
            system = dns.resolver.Resolver(configure=True)
            servers = [(str(server), system.port) for server in system.nameservers
                       if valid_hostaddr(str(server))]
            timeout = float(system.timeout) or DEFAULT_TRY_TIMEOUT
        except (dns.exception.DNSException, OSError, ValueError):
            servers, timeout = [], DEFAULT_TRY_TIMEOUT
        return cls(servers or [("127.0.0.1", 53)], try_timeout=timeout)

    def query(self, name, rdtype, deadline):
        """One question, answered or not before ``deadline``: a _Reply."""
        message = dns.message.make_query(name, rdtype)
        for _ in range(self.attempts):
            for address, port in self.nameservers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return _Reply(TRY_AGAIN)
                response = self._exchange(message, address, port,
                                          min(self.try_timeout, remaining), deadline)
                if response is None:
                    continue
                rcode = response.rcode()
                if rcode in _NEXT_SERVER_RCODES:
                    continue
                if rcode == dns.rcode.NXDOMAIN:
                    return _Reply(HOST_NOT_FOUND, response)
                if rcode != dns.rcode.NOERROR:
                    return _Reply(NO_RECOVERY, response)
                return _Reply(0 if response.answer else NO_DATA, response)
        return _Reply(TRY_AGAIN)

    def _exchange(self, message, address, port, timeout, deadline):
        """UDP, then TCP when truncated; None when this server gave no usable reply."""
        try:
            response = _udp_exchange(message, address, port, timeout)
            if response is _TRUNCATED or (response is not None and
                                          response.flags & dns.flags.TC):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                response = dns.query.tcp(message, address, port=port,
                                         timeout=min(self.try_timeout, remaining))
        except (dns.exception.DNSException, OSError, EOFError, ValueError):
            return None
        return response


_TRUNCATED = object()


def _udp_exchange(message, address, port, timeout):
    """One question over a connected UDP socket (so that an ICMP "port unreachable"
    ends the wait at once, as with the C library).  Replies that are not the
    answer to this question are ignored, as the C library does; returns the
    reply, _TRUNCATED for an unparsable reply with TC=1, or None at timeout.
    """
    wire = message.to_wire()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    expires = time.monotonic() + timeout
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((address, port))
        sock.send(wire)
        while True:
            remaining = expires - time.monotonic()
            if remaining <= 0:
                return None
            sock.settimeout(remaining)
            try:
                data = sock.recv(65535)
            except socket.timeout:
                return None
            try:
                response = dns.message.from_wire(data)
            except Exception:       # an untrusted datagram that does not parse: not our answer
                if len(data) >= 12 and data[:2] == wire[:2] and data[2] & 0x82 == 0x82:
                    return _TRUNCATED
                continue
            if message.is_response(response):
                return response


_system_client = None


def _default_client(settings):
    global _system_client
    if settings.resolver_addresses:
        return DnsClient.from_addresses(settings.resolver_addresses)
    if _system_client is None:
        _system_client = DnsClient.system()
    return _system_client


# --- dns_lookup: one name, one or more types ------------------------------------------

@dataclasses.dataclass
class _Lookup:
    result: int
    text: str = ""
    records: list = dataclasses.field(default_factory=list)   # (data, owner name)
    truncated: bool = False


def _name_text(name):
    return name.to_text(omit_final_dot=True)


def _rrset(section, name, rdtype):
    for rrset in section:
        if rrset.name == name and rrset.rdtype == rdtype and \
                rrset.rdclass == dns.rdataclass.IN:
            return rrset
    return None


def _valid_rr_name(text):
    return valid_hostname(text) or valid_hostaddr(text)


def _extract(response, qname, rdtype, hops):
    """Postfix dns_get_answer(): follow CNAMEs inside one reply.

    Returns (result, records, next_name, hops, text) where result DNS_OK has
    records, None means "ask again for next_name".
    """
    owner = qname
    while True:
        rrset = _rrset(response.answer, owner, rdtype)
        if rrset is not None:
            break
        alias = _rrset(response.answer, owner, dns.rdatatype.CNAME)
        if alias is None:
            break
        hops += 1
        if hops > CNAME_LIMIT:
            return DNS_NOTFOUND, [], owner, hops, f"Name server loop for {_name_text(owner)}"
        target = alias[0].target
        if not _valid_rr_name(_name_text(target)):
            return DNS_INVAL, [], owner, hops, None
        owner = target
    if rrset is None:
        if owner != qname:
            return None, [], owner, hops, None
        return DNS_NOTFOUND, [], owner, hops, None
    records, invalid = [], False
    for rdata in rrset:
        if rdtype == dns.rdatatype.MX:
            exchange = _name_text(rdata.exchange)
            if rdata.exchange == dns.name.root or not exchange:
                return DNS_NULLMX, [], owner, hops, None
            if not _valid_rr_name(exchange):
                invalid = True
                continue
            records.append(((rdata.preference, exchange), _name_text(owner)))
        else:
            records.append((rdata.address, _name_text(owner)))
    if not records:
        return (DNS_INVAL if invalid else DNS_NOTFOUND), [], owner, hops, None
    return DNS_OK, records, owner, hops, None


def dns_lookup(client, name, rdtype, deadline):
    """Postfix dns_lookup(): records of one type for ``name``, following CNAMEs."""
    type_text = dns.rdatatype.to_text(rdtype)
    if valid_hostaddr(name) or not valid_hostname(name):
        return _Lookup(DNS_NOTFOUND, f"Name service error for {name}: invalid host or domain name")
    try:
        qname = dns.name.from_text(name)
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return _Lookup(DNS_NOTFOUND, f"Name service error for {name}: invalid host or domain name")
    hops = 0
    for _ in range(QUERY_LIMIT):
        asked = _name_text(qname)
        reply = client.query(qname, rdtype, deadline)
        if reply.herrno:
            return _Lookup(_HERRNO_RESULT[reply.herrno],
                           f"Host or domain name not found. Name service error for "
                           f"name={asked} type={type_text}: {_HERRNO_TEXT[reply.herrno]}")
        result, records, next_name, hops, text = _extract(reply.response, qname, rdtype, hops)
        if result == DNS_OK:
            return _Lookup(DNS_OK, "", records[:RR_LIMIT], len(records) > RR_LIMIT)
        if result == DNS_NULLMX:
            return _Lookup(DNS_NULLMX, f"Domain {name} does not accept mail (nullMX)")
        if result is None:
            qname = next_name
            continue
        return _Lookup(result, text or f"Name service error for name={asked} type={type_text}: "
                                       f"Malformed or unexpected name server reply")
    return _Lookup(DNS_NOTFOUND, f"Name server loop for {_name_text(qname)}")


def dns_lookup_types(client, name, rdtypes, deadline):
    """Postfix dns_lookup_v(): several types, records joined, the best result wins."""
    best = None
    records, truncated = [], False
    lookup = _Lookup(DNS_NOTFOUND)
    for index, rdtype in enumerate(rdtypes):
        lookup = dns_lookup(client, name, rdtype, deadline)
        room = RR_LIMIT - len(records)
        truncated = truncated or lookup.truncated or len(lookup.records) > room
        records.extend(lookup.records[:room])
        if index == len(rdtypes) - 1:
            break
        if best is None or lookup.result >= best.result:
            best = lookup
    final = best if best is not None and lookup.result < best.result else lookup
    return _Lookup(final.result, final.text, records, truncated)
