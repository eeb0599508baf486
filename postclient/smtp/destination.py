"""Next-hop destinations: from the text of a delivery request to a list of sites.

Exports Site, DestinationError, iter_sites(), parse_sites(), parse_site(),
parse_port(), split_destinations(), Endpoint, endpoint_label(),
valid_hostname(), valid_hostaddr(), DEFAULT_SMTP_PORT, DEFAULT_LMTP_PORT,
CONFIG_ERROR_DSN and KNOWN_TCP_PORTS.

Reads (only when a Config is passed): smtp_fallback_relay / lmtp_fallback_relay
(through registry.protocol_name) and lmtp_tcp_port.

A next-hop is one or more destinations separated by commas and/or whitespace;
the fallback relays follow them, and the last site is the *final next-hop*
(postfix-behaviour.md §1.1).  Accepted forms, as in Postfix's host_port():

  SMTP   domain  domain:port  [host]  [host]:port  [address]  [address]:port
         [ipv6:address]  [ipv6:address]:port          (default port 25)
  LMTP   unix:/path (the whole next-hop; never a fallback relay)
         inet:host[:port]  host[:port]  [host]:port    (default lmtp_tcp_port, 24)

A port is a number (1..65535) or a service name (smtp, submission, lmtp,
smtps/submissions, else /etc/services).  ``[...]`` means "no MX lookup".

A malformed destination raises DestinationError with DSN status 4.3.5: Postfix
stops with a fatal error on these (smtp_connect.c), so the mail stays queued
until the configuration is fixed; nothing here ever bounces.  Permanent (5.x)
outcomes for names that parse but do not exist come from resolve.py.  Parsing
is lazy in iter_sites(): a bad fallback relay only fails once the sites before
it have been tried, as in Postfix.
"""

import dataclasses
import functools
import ipaddress
import logging
import re
import socket

from ..config import registry
from .request import Status

log = logging.getLogger("postclient.smtp")

DEFAULT_SMTP_PORT = 25
DEFAULT_LMTP_PORT = 24
CONFIG_ERROR_DSN = "4.3.5"
# Postfix's known_tcp_ports: names that work even without /etc/services.
KNOWN_TCP_PORTS = {"lmtp": 24, "smtp": 25, "smtps": 465, "submissions": 465, "submission": 587}
SEPARATORS = re.compile(r"[,\s]+")
_DIGITS = re.compile(r"[0-9]+")
_UNIX_PATH_MAX = 107            # sizeof(sockaddr_un.sun_path) - 1 on Linux
_HOSTNAME_MAX = 255
_LABEL_MAX = 63


class DestinationError(Exception):
    """A next-hop or fallback relay that cannot be parsed.

    ``status`` is a request.Status (dsn "4.3.5", text) to give the recipients,
    ``destination`` the offending text, ``is_fallback`` whether it came from
    the fallback relay list.
    """

    def __init__(self, text, destination, is_fallback=False, dsn=CONFIG_ERROR_DSN):
        self.status = Status(dsn, text)
        self.dsn = dsn
        self.text = text
        self.destination = destination
        self.is_fallback = is_fallback
        super().__init__(text)


@dataclasses.dataclass(frozen=True)
class Site:
    """One parsed next-hop (or fallback relay).

    host        domain or host name, or numeric address (no brackets, no
                "ipv6:" prefix); None for a UNIX-domain LMTP destination
    port        TCP port (int); None for UNIX-domain
    service     the service as written, or the default ("smtp", lmtp_tcp_port)
    bracketed   True for [host] forms: no MX lookup
    unix_path   path of a UNIX-domain LMTP socket, else None
    is_fallback True for sites from smtp_fallback_relay
    index       position in the site list (0 = the first next-hop)
    is_last     True for the last site: the final next-hop
    text        the destination as written (e.g. "[mx.example.com]:587")
    protocol    "smtp" or "lmtp"
    """

    text: str
    protocol: str
    host: str = None
    port: int = None
    service: str = ""
    bracketed: bool = False
    unix_path: str = None
    is_fallback: bool = False
    index: int = 0
    is_last: bool = True

    @property
    def is_unix(self):
        return self.unix_path is not None

    @property
    def is_numeric(self):
        """The host is an IP address literal."""
        return self.host is not None and valid_hostaddr(self.host)

    @property
    def loop_detection(self):
        """Mail-loop checks apply: SMTP to port 25 only (smtp_connect.c)."""
        return self.protocol == "smtp" and self.port == DEFAULT_SMTP_PORT

    @property
    def domain(self):
        """The name used for TLS policy and the connection cache: host without brackets/port."""
        return self.unix_path if self.is_unix else self.host


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """A server as logged: ``host[address]:port`` (``host[path]`` for UNIX-domain)."""

    host: str
    address: str
    port: int = None

    def __str__(self):
        return endpoint_label(self.host, self.address, self.port)


def endpoint_label(host, address, port=None):
    """``mx.example.com[192.0.2.1]:25``; without ``:port`` when port is None or 0."""
    label = f"{host}[{address}]"
    return f"{label}:{port}" if port else label


# --- name syntax (Postfix valid_hostname.c / valid_hostaddr) --------------------

def valid_hostname(name):
    """Postfix's syntax check: LDH/underscore labels of 1..63, total <= 255, not all-numeric."""
    if not name or len(name) > _HOSTNAME_MAX:
        return False
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return False
        if not name or len(name) > _HOSTNAME_MAX:
            return False
    non_numeric = False
    for label in name.split("."):
        if not label or len(label) > _LABEL_MAX:
            return False
        if label[0] == "-" or label[-1] == "-":
            return False
        for char in label:
            if not (char.isalnum() or char in "-_"):
                return False
            if not char.isdigit():
                non_numeric = True
    return non_numeric


def valid_hostaddr(text):
    """True for an IPv4 dotted quad or an IPv6 address (no zone index)."""
    if not text or "%" in text or not text.isascii():
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _valid_ipv6(text):
    return valid_hostaddr(text) and ":" in text


# --- ports ---------------------------------------------------------------------

def parse_port(service, destination="", is_fallback=False):
    """The TCP port of ``service`` (number or name); DestinationError if unusable."""
    service = service.strip()
    where = f'{_where(is_fallback)} "{destination}"'
    if _DIGITS.fullmatch(service):
        port = int(service)
        if port == 0 or port >= 65536:
            raise DestinationError(f"bad network port: {service} in {where}",
                                   destination, is_fallback)
        return port
    if service and service[0] in "0123456789":
        raise DestinationError(f"garbage after numerical service in {where}",
                               destination, is_fallback)
    known = KNOWN_TCP_PORTS.get(service.lower())
    if known is not None:
        return known
    try:
        return socket.getservbyname(service, "tcp")
    except (OSError, ValueError):
        raise DestinationError(f"unknown service: {service}/tcp in {where}", destination,
                               is_fallback) from None


def _where(is_fallback):
    return "fallback relay" if is_fallback else "next-hop destination"


# --- one destination -------------------------------------------------------------

def _host_port(text):
    """Postfix host_port(): (host, service or None, bracketed) or an error string."""
    if text.startswith("["):
        inside = text[1:]
        ipv6 = inside[:5].lower() == "ipv6:"
        if ipv6:
            inside = inside[5:]
        host, bracket, rest = inside.partition("]")
        if not bracket:
            return 'missing "]"'
        if rest and not rest.startswith(":"):
            return 'garbage after "]"'
        if ipv6 and not _valid_ipv6(host):
            return "malformed IPv6 address"
        return host, rest[1:] or None, True
    host, colon, service = text.rpartition(":")
    if not colon:
        host, service = text, ""
    return host, service or None, False


@functools.lru_cache(maxsize=1024)
def parse_site(text, protocol="smtp", *, default_service=None, is_fallback=False,
               index=0, is_last=True):
    """Parse one TCP destination (``inet:`` already allowed for LMTP) into a Site.

    Cached: a pure function of its arguments, and a Site is immutable (an
    agent parses the same few next-hops for every request)."""
    original = text
    if protocol == "lmtp" and text.startswith("inet:"):
        text = text[len("inet:"):]
    if default_service is None:
        default_service = "smtp" if protocol == "smtp" else str(DEFAULT_LMTP_PORT)
    where = _where(is_fallback)
    if text.startswith("unix:"):
        problem = ("UNIX-domain destinations are for LMTP only" if protocol == "smtp"
                   else "a unix: destination must be the only next-hop")
        raise DestinationError(f'{problem}: "{original}"', original, is_fallback)
    parsed = _host_port(text)
    if isinstance(parsed, str):
        raise DestinationError(f'{parsed} in {where} "{original}"', original, is_fallback)
    host, service, bracketed = parsed
    if not host:
        raise DestinationError(f'missing host information in {where} "{original}"',
                               original, is_fallback)
    if not (valid_hostname(host) or valid_hostaddr(host)):
        raise DestinationError(
            f'valid hostname or network address required in {where} "{original}"',
            original, is_fallback)
    service = service or default_service
    port = parse_port(service, original, is_fallback)
    return Site(text=original, protocol=protocol, host=host, port=port, service=service,
                bracketed=bracketed, is_fallback=is_fallback, index=index, is_last=is_last)


def _unix_site(nexthop):
    path = nexthop[len("unix:"):].strip()
    if not path:
        raise DestinationError(f'missing pathname in next-hop destination "{nexthop}"', nexthop)
    if len(path.encode("utf-8", "surrogateescape")) > _UNIX_PATH_MAX or "\0" in path:
        # Postfix's DSN text is "Server configuration error"; say which path.
        raise DestinationError(f"Server configuration error: unix-domain name too long or "
                               f"invalid: {path}", nexthop)
    return Site(text=nexthop, protocol="lmtp", unix_path=path, service="unix")


# --- the site list -----------------------------------------------------------------

def _settings(config, protocol, fallback_relay, default_service):
    if fallback_relay is None:
        fallback_relay = ()
        if config is not None:
            fallback_relay = config.get(registry.protocol_name("smtp_fallback_relay", protocol))
    if default_service is None:
        default_service = "smtp"
        if protocol == "lmtp":
            default_service = str(DEFAULT_LMTP_PORT)
            if config is not None:
                default_service = str(config.get("lmtp_tcp_port")).strip() or default_service
    if isinstance(fallback_relay, str):
        fallback_relay = split_destinations(fallback_relay)
    return [item for item in fallback_relay if item], default_service


def split_destinations(text):
    """The destinations in a comma/whitespace separated list."""
    return [item for item in SEPARATORS.split(text or "") if item]


def iter_sites(nexthop, protocol="smtp", config=None, *, fallback_relay=None,
               default_service=None):
    """Yield the Sites of ``nexthop`` then of the fallback relays, parsing lazily.

    ``fallback_relay`` (list or text) and ``default_service`` override what
    ``config`` says; without either, there is no fallback and the port is
    the protocol's default.  Raises DestinationError when it reaches a
    malformed entry (or at once for an empty next-hop).  An LMTP ``unix:``
    next-hop is a single, final site: the fallback relays are ignored.
    """
    nexthop = (nexthop or "").strip()
    if protocol == "lmtp" and nexthop.startswith("unix:"):
        fallbacks, _ = _settings(config, protocol, fallback_relay, "unix")
        if fallbacks:
            log.warning('ignoring "%s = %s" setting for non-TCP connections',
                        registry.protocol_name("smtp_fallback_relay", protocol),
                        ", ".join(fallbacks))
        yield _unix_site(nexthop)
        return
    primary = split_destinations(nexthop)
    if not primary:
        raise DestinationError(f'empty next-hop destination "{nexthop}"', nexthop)
    fallbacks, default_service = _settings(config, protocol, fallback_relay, default_service)
    entries = [(text, False) for text in primary] + [(text, True) for text in fallbacks]
    for index, (text, is_fallback) in enumerate(entries):
        yield parse_site(text, protocol, default_service=default_service,
                         is_fallback=is_fallback, index=index,
                         is_last=index == len(entries) - 1)


def parse_sites(nexthop, protocol="smtp", config=None, *, fallback_relay=None,
                default_service=None):
    """All Sites at once (DestinationError at the first malformed one)."""
    return list(iter_sites(nexthop, protocol, config, fallback_relay=fallback_relay,
                           default_service=default_service))
