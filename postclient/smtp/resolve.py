"""Finding the servers of a site: MX and address lookups, loop detection, ordering.

Exports resolve_site(), Resolution, ServerAddress and ResolverSettings; and,
for the callers that have always imported them from here, DnsClient,
parse_resolver_address(), dns_lookup() / dns_lookup_types() (Postfix's
dns_lookup, for other users of DNS) and the limits RR_LIMIT / CNAME_LIMIT
from dns.py (the DNS stub client), and LocalAddresses and
interface_addresses() from own_addresses.py (this machine's addresses).

Reads (ResolverSettings.from_config): smtp_host_lookup, smtp_randomize_addresses,
smtp_mx_address_limit, smtp_cname_overrides_servername,
smtp_defer_if_no_mx_address_found (each through registry.protocol_name, so
the lmtp_* mirror for LMTP), ignore_mx_lookup_error, disable_dns_lookups,
dns_resolver_addresses (used by dns.py), inet_interfaces, proxy_interfaces
(used by own_addresses.py), inet_protocols, myhostname.

Theory of operation (postfix-behaviour.md §2, Postfix smtp_addr.c); how DNS
is asked is in dns.py, what "this machine" is in own_addresses.py:

- An SMTP site that is not [bracketed] gets an MX lookup when DNS is enabled;
  everything else (LMTP, [host], [address], disable_dns_lookups) a host lookup.
- MX: NXDOMAIN or NODATA => host lookup of the domain itself (implicit MX):
  when the domain does not exist at all that lookup fails too, and the result
  is 5.4.4 "Host or domain name not found. Name service error for name=D
  type=A: Host not found".  Temporary failure => 4.4.3, malformed reply =>
  5.4.4, hard failure => 5.4.3; each becomes a host lookup with
  ignore_mx_lookup_error = yes.  Null MX ("0 .") => 5.1.0 "Domain D does not
  accept mail (nullMX)".
- MX hosts are sorted by preference; each host's addresses inherit it.  A
  failed lookup of one MX host is remembered ("why") but does not stop the
  others; a soft status is never overwritten by a hard one.  No address at
  all => warning "no MX host for D has a valid address record" and that
  status (softened with smtp_defer_if_no_mx_address_found).
- Loop detection (SMTP to port 25 only): when an address belongs to this
  machine (inet_interfaces, proxy_interfaces) it and every address of equal
  or worse preference are dropped, and ``local_is_mx`` is set; an empty list
  is 5.4.6 "mail for D loops back to myself" if we were the best MX, else
  4.4.4 "unable to find primary relay for D".  A host lookup that finds
  this machine is 5.4.6.
- smtp_randomize_addresses: shuffle, then stable sort by preference.
  smtp_mx_address_limit then caps the list (the caller need not count
  addresses again; it still counts sessions for smtp_mx_session_limit).
- DNS replies: at most RR_LIMIT (100) records are used per answer (dns.py)
  and per address list (here), with a warning; a CNAME chain longer than
  CNAME_LIMIT (10) is "Name server loop for N" (treated as not found, as
  Postfix does; see dns.py).
- Time: every lookup runs against an absolute ``deadline`` (time.monotonic);
  each DNS try gets min(per-try timeout, time left).  Running out of time is
  a temporary failure (4.4.3 for DNS).  Native lookups (getaddrinfo) run in
  a helper thread so that they too stop at the deadline.
"""

import dataclasses
import ipaddress
import logging
import random
import socket
import threading
import time

import dns.rdatatype

from ..config import registry
from .destination import endpoint_label, valid_hostaddr
from .dns import (CNAME_LIMIT, DNS_FAIL, DNS_INVAL, DNS_NOTFOUND, DNS_NULLMX, DNS_OK, RR_LIMIT,
                  DnsClient, _default_client, dns_lookup, dns_lookup_types,
                  parse_resolver_address)
from .own_addresses import LocalAddresses, _local_addresses, interface_addresses
from .request import Status

__all__ = ["resolve_site", "Resolution", "ServerAddress", "ResolverSettings",
           "DnsClient", "LocalAddresses", "interface_addresses", "parse_resolver_address",
           "dns_lookup", "dns_lookup_types", "RR_LIMIT", "CNAME_LIMIT"]

log = logging.getLogger("postclient.smtp")

_ADDRESS_TYPES = {socket.AF_INET: dns.rdatatype.A, socket.AF_INET6: dns.rdatatype.AAAA}
_EAI_RETRY = {getattr(socket, name) for name in ("EAI_AGAIN", "EAI_MEMORY", "EAI_SYSTEM")
              if hasattr(socket, name)}
_EAI_NOHOST = {getattr(socket, name) for name in ("EAI_AGAIN", "EAI_NODATA", "EAI_NONAME")
               if hasattr(socket, name)}


# --- results -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ServerAddress:
    """One server address to try, in order.

    name        server name for logs, SASL and TLS: the MX host (or the host
                looked up), or the CNAME target with
                smtp_cname_overrides_servername = yes
    address     printable address ("192.0.2.1", "2001:db8::1"), or the socket
                path for UNIX-domain LMTP
    port        TCP port; None for UNIX-domain
    preference  MX preference (0 for host lookups)
    family      socket.AF_INET, AF_INET6 or AF_UNIX
    query_name  the name whose address records gave this address
    """

    name: str
    address: str
    port: int
    preference: int
    family: int
    query_name: str = ""

    @property
    def endpoint(self):
        """``name[address]:port`` as logged (relay=...)."""
        return endpoint_label(self.name, self.address, self.port)

    @property
    def sockaddr(self):
        """What socket.connect() wants for this address."""
        if self.family == socket.AF_UNIX:
            return self.address
        if self.family == socket.AF_INET6:
            return (self.address, self.port, 0, 0)
        return (self.address, self.port)


@dataclasses.dataclass
class Resolution:
    """What resolve_site() found for one site.

    addresses     ServerAddress list in the order to try (may be empty)
    status        request.Status of the last lookup problem ("why"); always
                  set when ``addresses`` is empty, and possibly set (one MX
                  host not found, say) when it is not
    local_is_mx   this machine is one of the MX hosts: the site is final
                  (no fallback relay), as with Postfix's found_myself
    mx_lookup     addresses came from MX records (not a host lookup or an
                  implicit MX)
    warnings      texts that were also logged as warnings
    """

    site: object
    addresses: list
    status: Status = None
    local_is_mx: bool = False
    mx_lookup: bool = False
    warnings: list = dataclasses.field(default_factory=list)

    @property
    def loops_back(self):
        """No address left because mail would loop (x.4.6): best_mx_transport territory."""
        return not self.addresses and self.status is not None and \
            self.status.dsn[1:] == ".4.6"

    @property
    def final(self):
        """Do not go on to later sites (fallback relays) after this one."""
        return self.local_is_mx or self.loops_back

    @property
    def best_preference(self):
        """Preference of the first address (Postfix's domain_best_pref), or None."""
        return self.addresses[0].preference if self.addresses else None


class _Why:
    """Postfix's DSN_BUF for lookups: a soft status is never made hard again."""

    def __init__(self):
        self.dsn = None
        self.text = None

    def reset(self):
        self.dsn = self.text = None

    @property
    def soft(self):
        return self.dsn is not None and self.dsn.startswith("4")

    @property
    def hard(self):
        return self.dsn is not None and self.dsn.startswith("5")

    def set(self, dsn, text):
        self.dsn, self.text = dsn, text

    def keep_soft(self, soft_dsn, hard_dsn, text):
        self.set(soft_dsn if self.soft else hard_dsn, text)

    def status(self):
        return None if self.dsn is None else Status(self.dsn, self.text)


# --- settings ------------------------------------------------------------------------

@dataclasses.dataclass
class ResolverSettings:
    """The parameters resolution depends on, typed (see from_config())."""

    families: tuple = (socket.AF_INET,)
    host_lookup: tuple = ("dns",)
    dns_enabled: bool = True
    randomize: bool = True
    mx_address_limit: int = 5
    cname_overrides_servername: bool = False
    defer_if_no_mx_address_found: bool = False
    ignore_mx_lookup_error: bool = False
    resolver_addresses: tuple = ()
    inet_interfaces: tuple = ("all",)
    proxy_interfaces: tuple = ()
    myhostname: str = "localhost"

    @classmethod
    def from_config(cls, config, protocol="smtp"):
        """Settings from a Config; ConfigError when a value is malformed."""
        def get(name):
            return config.get(registry.protocol_name(name, protocol))
        protocols = {item.lower() for item in config.get("inet_protocols")}
        families = []
        if protocols & {"ipv4", "all"}:
            families.append(socket.AF_INET)
        if protocols & {"ipv6", "all"}:
            families.append(socket.AF_INET6)
        dns_enabled = not config.get("disable_dns_lookups")
        host_lookup = tuple(item.lower() for item in get("smtp_host_lookup")) or ("dns",)
        if not dns_enabled:
            host_lookup = ("native",)
        return cls(families=tuple(families), host_lookup=host_lookup, dns_enabled=dns_enabled,
                   randomize=get("smtp_randomize_addresses"),
                   mx_address_limit=get("smtp_mx_address_limit"),
                   cname_overrides_servername=get("smtp_cname_overrides_servername"),
                   defer_if_no_mx_address_found=get("smtp_defer_if_no_mx_address_found"),
                   ignore_mx_lookup_error=config.get("ignore_mx_lookup_error"),
                   resolver_addresses=tuple(config.get("dns_resolver_addresses")),
                   inet_interfaces=tuple(config.get("inet_interfaces")),
                   proxy_interfaces=tuple(config.get("proxy_interfaces")),
                   myhostname=config.get("myhostname"))

    @property
    def use_dns_for_hosts(self):
        return self.dns_enabled and "dns" in self.host_lookup

    @property
    def use_native_for_hosts(self):
        return not self.dns_enabled or "native" in self.host_lookup


# --- native lookups ----------------------------------------------------------------

def _getaddrinfo(host, deadline):
    """getaddrinfo() that gives up at ``deadline`` (EAI_AGAIN)."""
    remaining = deadline - time.monotonic()
    timeout_error = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    if remaining <= 0:
        raise timeout_error
    outcome = {}

    def work():
        try:
            outcome["result"] = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError) as error:
            outcome["error"] = error

    worker = threading.Thread(target=work, name="getaddrinfo", daemon=True)
    worker.start()
    worker.join(remaining)
    if worker.is_alive():
        raise timeout_error
    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, socket.gaierror):
            raise error
        raise socket.gaierror(getattr(socket, "EAI_FAIL", -4), str(error) or "lookup failure")
    return outcome["result"]


# --- resolution proper ---------------------------------------------------------------

class _Resolver:
    """The state of one resolve_site() call."""

    def __init__(self, site, settings, deadline, client, local, rng):
        self.site = site
        self.settings = settings
        self.deadline = deadline
        self.client = client
        self.local = local
        self.rng = rng
        self.why = _Why()
        self.warnings = []
        self.local_is_mx = False
        self.mx_lookup = False

    def warn(self, text):
        log.warning("%s", text)
        self.warnings.append(text)

    def dns(self):
        if self.client is None:
            self.client = _default_client(self.settings)
        return self.client

    # Postfix smtp_addr_one()
    def addresses_of(self, host, preference):
        settings, port = self.settings, self.site.port
        if valid_hostaddr(host):
            ip = ipaddress.ip_address(host)
            family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            if family in settings.families:
                return [ServerAddress(host, str(ip), port, preference, family, host)]
        if settings.use_dns_for_hosts:
            types = [_ADDRESS_TYPES[family] for family in settings.families]
            lookup = dns_lookup_types(self.dns(), host, types, self.deadline)
            if lookup.result == DNS_OK:
                if lookup.truncated:
                    self.warn(f"DNS resource record limit ({RR_LIMIT}) exceeded while looking "
                              f"up host addresses for {host}")
                found = []
                for address, owner in lookup.records:
                    ip = ipaddress.ip_address(address)
                    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
                    name = owner if settings.cname_overrides_servername else host
                    found.append(ServerAddress(name, str(ip), port, preference, family, host))
                return found
            if lookup.result == DNS_FAIL:
                self.why.keep_soft("4.4.3", "5.4.3", lookup.text)
                return []
            if lookup.result in (DNS_INVAL, DNS_NOTFOUND):
                self.why.keep_soft("4.4.4", "5.4.4", lookup.text)
                if lookup.result == DNS_INVAL:
                    return []
            else:
                self.why.set("4.4.3", lookup.text)
                return []
        if settings.use_native_for_hosts:
            return self.native_addresses_of(host, preference)
        return []

    def native_addresses_of(self, host, preference):
        try:
            infos = _getaddrinfo(host, self.deadline)
        except socket.gaierror as error:
            code = error.errno
            nohost = code in _EAI_NOHOST
            if self.why.soft or code in _EAI_RETRY:
                dsn = "4.4.4" if nohost else "4.3.0"
            else:
                dsn = "5.4.4" if nohost else "5.3.0"
            self.why.set(dsn, f"unable to look up host {host}: {error.strerror or error}")
            return []
        found, seen = [], set()
        for family, _, _, _, sockaddr in infos:
            if family not in self.settings.families or sockaddr[0] in seen:
                continue
            seen.add(sockaddr[0])
            address = str(ipaddress.ip_address(sockaddr[0].split("%", 1)[0]))
            found.append(ServerAddress(host, address, self.site.port, preference, family, host))
            if len(found) >= RR_LIMIT:
                break
        if not found:
            self.why.keep_soft("4.4.4", "5.4.4", f"{host}: host not found")
        return found

    def is_local(self, address):
        return address.family != socket.AF_UNIX and address.address in self.local

    def order(self, addresses):
        if len(addresses) > 1:
            if self.settings.randomize:
                addresses = list(addresses)
                self.rng.shuffle(addresses)
            addresses = sorted(addresses, key=lambda server: server.preference)
        return addresses

    # Postfix smtp_host_addr()
    def host_addr(self, host):
        self.why.reset()
        addresses = _unique(self.addresses_of(host, 0))
        if addresses and self.site.loop_detection and any(map(self.is_local, addresses)):
            self.why.set("5.4.6", f"mail for {host} loops back to myself")
            return []
        return self.order(addresses)

    # Postfix smtp_domain_addr()
    def domain_addr(self, domain):
        self.why.reset()
        settings = self.settings
        lookup = dns_lookup(self.dns(), domain, dns.rdatatype.MX, self.deadline)
        if lookup.result == DNS_NOTFOUND:
            return self.host_addr(domain)
        if lookup.result != DNS_OK:
            dsn = {DNS_INVAL: "5.4.4", DNS_NULLMX: "5.1.0", DNS_FAIL: "5.4.3"}.get(
                lookup.result, "4.4.3")
            self.why.set(dsn, lookup.text)
            if settings.ignore_mx_lookup_error and lookup.result != DNS_NULLMX:
                return self.host_addr(domain)
            return []
        self.mx_lookup = True
        if lookup.truncated:
            self.warn(f"DNS resource record limit ({RR_LIMIT}) exceeded while looking up "
                      f"MX records for domain {domain}")
        exchangers = sorted((data for data, _ in lookup.records), key=lambda mx: mx[0])
        best_preference = exchangers[0][0]
        addresses, truncated = [], False
        for preference, host in exchangers:
            found = self.addresses_of(host, preference)
            room = RR_LIMIT - len(addresses)
            truncated = truncated or len(found) > room
            addresses.extend(found[:room])
            if truncated:
                break
        addresses = _unique(addresses)
        if not addresses:
            if self.why.dsn is None:
                self.why.set("5.4.4", f"no MX host for {domain} has a valid address record")
            if settings.defer_if_no_mx_address_found and self.why.hard:
                self.why.set("4" + self.why.dsn[1:], self.why.text)
            self.warn(f"no MX host for {domain} has a valid address record")
            return []
        if truncated:
            self.warn(f"DNS resource record limit ({RR_LIMIT}) exceeded while looking up "
                      f"MX host addresses for domain {domain}")
        best_found = addresses[0].preference
        if self.site.loop_detection:
            myself = next((server for server in addresses if self.is_local(server)), None)
            if myself is not None:
                self.local_is_mx = True
                addresses = [server for server in addresses
                             if server.preference < myself.preference]
                if not addresses:
                    if best_preference != best_found:
                        self.why.set("4.4.4", f"unable to find primary relay for {domain}")
                    else:
                        self.why.set("5.4.6", f"mail for {domain} loops back to myself")
                    return []
        return self.order(addresses)


def _unique(addresses):
    """Drop repeated addresses, keeping the first (most preferred) one."""
    seen, unique = set(), []
    for server in addresses:
        if server.address not in seen:
            seen.add(server.address)
            unique.append(server)
    return unique


_rng = random.Random()


def resolve_site(site, settings, *, deadline, client=None, local=None, rng=None):
    """The server addresses of ``site`` (a destination.Site) in the order to try.

    ``deadline`` is an absolute time.monotonic() value; ``client`` a
    DnsClient (default: dns_resolver_addresses, else /etc/resolv.conf);
    ``local`` a LocalAddresses (default: from inet_interfaces and
    proxy_interfaces, cached per process); ``rng`` a random.Random for the
    shuffle.  Never raises for lookup problems: they are in the Resolution's
    status (configuration problems such as a bad dns_resolver_addresses
    entry or an unresolvable inet_interfaces name are 4.3.5).
    """
    resolution = Resolution(site=site, addresses=[])
    if site.is_unix:
        resolution.addresses = [ServerAddress(settings.myhostname, site.unix_path, None, 0,
                                              socket.AF_UNIX, site.unix_path)]
        return resolution
    if not settings.families:
        resolution.status = Status("4.4.4", "all network protocols are disabled")
        return resolution
    try:
        if local is None and site.loop_detection:
            local = _local_addresses(settings)
        if client is None and settings.dns_enabled and \
                (settings.use_dns_for_hosts or (site.protocol == "smtp" and not site.bracketed)):
            client = _default_client(settings)
    except ValueError as error:
        resolution.status = Status("4.3.5", f"configuration error: {error}")
        return resolution
    state = _Resolver(site, settings, deadline, client, local or LocalAddresses(), rng or _rng)
    if site.protocol == "smtp" and not site.bracketed and settings.dns_enabled:
        addresses = state.domain_addr(site.host)
    else:
        addresses = state.host_addr(site.host)
    if settings.mx_address_limit > 0:
        addresses = addresses[:settings.mx_address_limit]
    resolution.addresses = addresses
    resolution.status = state.why.status()
    resolution.local_is_mx = state.local_is_mx
    resolution.mx_lookup = state.mx_lookup
    resolution.warnings = state.warnings
    if not addresses and resolution.status is None:
        resolution.status = Status("4.4.3", f"no address found for {site.host}")
    return resolution
