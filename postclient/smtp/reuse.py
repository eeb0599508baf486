"""Connection caching, client side: Postfix's smtp_reuse.c and the cache policy of smtp_connect.c.

Exports RequestCache (one per delivery request: the engine's ``self.cache``),
CachedSession, endpoint_label(), destination_label(), encode_endpoint(),
decode_endpoint() and release_held().  Reads (smtp_* names, or their lmtp_* mirrors):
smtp_sasl_auth_enable, smtp_connection_cache_on_demand, smtp_connection_cache_destinations,
smtp_connection_cache_time_limit, smtp_connection_reuse_time_limit,
smtp_helo_name, smtp_bind_address, smtp_bind_address6; and queue_directory,
connection_cache_protocol_timeout.  The service is postclient.scache.

Policy (postfix-behaviour.md §4), decided once per request at the first
next-hop, if it has addresses (as smtp_cache_policy()):
  - the next-hop's bare name (host without [] or :port; the socket path for
    unix: LMTP) matches smtp_connection_cache_destinations: load and store;
  - else, with smtp_connection_cache_on_demand = yes, the queue manager's
    flags: ``request.use_cached_connection`` loads (take a cached connection
    before connecting) and ``request.store_connection`` stores (keep the
    connection after the transaction instead of QUIT).  The queue manager
    sets both while a destination has a backlog; it may send the last
    request of a backlog with "use" but not "store", so that the connection
    ends with QUIT instead of idling in the cache;
  - else nothing: sessions end with QUIT exactly as without a cache.
smtp_connection_cache_destinations entries are names (case-insensitive),
``!name`` (no caching; the first matching entry wins) and ``type:table``
lookup tables (a match is any value found for the name).
Fallback relays use the endpoint cache with the flags of the first
next-hop, never the destination label.

Labels.  A cached connection is only ever reused by a session that would
have sent exactly the same thing to the same server:
  endpoint     ``smtp:[192.0.2.1]:25`` / ``lmtp:unix:/path`` + identity
  destination  ``smtp:example.com:25`` / ``smtp:[mx.example.com]:25`` + identity
  identity     ``|service=NAME|helo=NAME``, plus ``|bind=ADDRESSES`` when
               smtp_bind_address or smtp_bind_address6 is set
where service is the master.cf service name (its -o overrides may change
anything).  TLS and SASL sessions are never cached: the core marks STARTTLS
sessions unreusable, and with smtp_sasl_auth_enable = yes nothing is cached
at all.  When they are, their identity (TLS policy, SASL login) must be
appended to both labels (security rule 14).

Lookup (smtp_reuse_session()): by destination first (first next-hop only;
unlike Postfix, "load" alone is enough, it needs no "store"), then by
endpoint for each best-preference address, then, while walking the
remaining addresses, by endpoint before connecting to each backup address.
An address served from the cache leaves the list, and the addresses already
served from the cache in this request are dropped from later sites.  A
cached connection is checked before use: its properties must decode, its
socket must be a connected stream socket to the address they name, it must
be younger than smtp_connection_reuse_time_limit, and it must answer RSET
with 2xx (driver.probe()); anything else closes it and the walk goes on
(a new connection).

Saving (smtp_save_session()): after the transaction, a session that is
still ``client.reusable`` (no QUIT, protocol error, garbage, I/O error,
STARTTLS, refused RSET) and younger than smtp_connection_reuse_time_limit is
passed to scache under its endpoint label - and, for the first good session
of a request at the first next-hop, under the destination label - with TTL
smtp_connection_cache_time_limit.  Otherwise, or when the cache refuses it,
it ends with QUIT.  The endpoint properties carry what a later process
needs to resume: the core's capabilities, the server's name, address, port
and family, and the time the connection was first opened.

In-process reuse (RequestCache(hold=True): the agent's serve loop; tests and
other callers save at once as above).  Instead of being saved, the request's
most recent session that would be saved stays open in this process (socket,
core, labels, open time; any earlier one of the same request is saved at
once), and the next request takes it before any scache lookup: if the held
session carries the request's destination label, or the endpoint label of
one of the first next-hop's addresses, it is used where find_dest/find_endp
would have found it - still younger than smtp_connection_reuse_time_limit
and probed with RSET first (security rule 14); the labels are the same, so
it is never used for a session that would look different to the server.
Otherwise (another destination, no caching for this request, the cache
disabled) it is saved to scache exactly as above, before the request's own
lookups; a request that never looks (no addresses) saves it at its end.
Back-to-back requests to one destination thus make no scache round trip.
Within one batched request (the service delivers several messages in turn,
docs/protocols.md), the session held by one message is taken by the next
without the RSET probe: it is the same agent going on with its own session,
which it left READY after a completed transaction moments ago, as in any
multi-message SMTP session, and it goes on with the same protocol core
(Client.can_continue: idle, untainted, nothing unread; otherwise it is
probed like any other kept session).  The probe is for sessions that sat idle between
requests or in scache (security rule 14), and each held session records the
batch that left it, so that only the next message of that batch skips it.
The MAIL command then does the probe's job: if a continued session breaks
before MAIL is accepted (lost connection, 421), the engine goes on with a
new connection to the same server exactly as after a failed probe, and
nothing is counted against the message or the destination.  Between the
messages of a batch the session is passed on in the batch itself
(engine.Batch.held), not through the process-wide slot and its idle worker;
keep_batch_session() publishes the last one when the batch ends.
A batch session may also be kept with the next message's transaction under
way (smtp_batch_pipelining: its MAIL, RCPT and DATA left behind the "."):
only that message's delivery goes on with it (no probe, no continue_ready()).
Such a session is never saved, probed or ended with QUIT: if no message
takes it up (the batch stopped, its record is replaced, it expired), it is
closed - the server has no content for that transaction, so nothing is
delivered.
A held session also goes to scache after HOLD_IDLE seconds without a
request (a daemon thread, under the lock a new request takes first), and
via release_held() when the service's process is about to exit.  A
threaded agent (smtp_agent_threads) keeps one such session per serving
thread: each thread's next request looks at the one its last request left.
"""

import dataclasses
import ipaddress
import json
import logging
import socket
import threading
import time
from typing import Any

from .. import maps
from ..config.registry import protocol_name
from ..pid import current as current_pid
from ..scache.client import shared_client
from . import driver
from .protocol import Client, State
from .resolve import ServerAddress

log = logging.getLogger("postclient.smtp")

PROPERTIES_VERSION = 1


@dataclasses.dataclass
class CachedSession:
    """A connection taken from the cache, probed, ready for run_session()."""

    address: Any          # ServerAddress
    sock: Any             # socket.socket
    client: Any           # protocol.Client, resumed; its Ready event is still queued
    opened: Any           # float (or int, from scache): when the connection was first opened
    best_mx: Any          # bool
    continued: Any = False    # bool; the next message of a batch: not probed (see the docstring)


# --- labels and properties -------------------------------------------------------------

def endpoint_label(protocol, address, identity):
    """``smtp:[192.0.2.1]:25|...``; ``lmtp:unix:/path|...`` for a UNIX-domain server."""
    if address.family == socket.AF_UNIX:
        return f"{protocol}:unix:{address.address}{identity}"
    return f"{protocol}:[{address.address}]:{address.port}{identity}"


def destination_label(protocol, site, identity):
    """``smtp:example.com:25|...``; ``[host]`` when the next-hop skips MX lookups."""
    if site.is_unix:
        return f"{protocol}:unix:{site.unix_path}{identity}"
    host = f"[{site.host}]" if site.bracketed else site.host
    return f"{protocol}:{host}:{site.port}{identity}"


def encode_endpoint(address, capabilities, opened):
    return json.dumps({"version": PROPERTIES_VERSION, "name": address.name,
                       "address": address.address, "port": address.port,
                       "family": int(address.family), "opened": opened,
                       "capabilities": capabilities.to_dict()}, separators=(",", ":"))


def decode_endpoint(text):
    """(ServerAddress with preference 0, capabilities dict, opened) or None when malformed."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != PROPERTIES_VERSION:
            return None
        name, address, port = data["name"], data["address"], data["port"]
        family, opened, capabilities = data["family"], data["opened"], data["capabilities"]
    except (ValueError, KeyError, TypeError):
        return None
    if not (isinstance(name, str) and isinstance(address, str) and isinstance(capabilities, dict)
            and family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
            and isinstance(opened, (int, float)) and not isinstance(opened, bool)
            and (port is None or (isinstance(port, int) and 0 < port < 65536))):
        return None
    if (family == socket.AF_UNIX) != (port is None):
        return None
    return ServerAddress(name, address, port, 0, socket.AddressFamily(family)), capabilities, opened


def _encode_destination(best_mx):
    return json.dumps({"version": PROPERTIES_VERSION, "best_mx": bool(best_mx)},
                      separators=(",", ":"))


def _decode_destination(text):
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("version") != PROPERTIES_VERSION:
        return None
    return bool(data.get("best_mx"))


def _same_peer(sock, address):
    """The descriptor is a connected stream socket to ``address`` (a cache is not trusted)."""
    try:
        if sock.type != socket.SOCK_STREAM or sock.family != address.family:
            return False
        peer = sock.getpeername()
    except OSError:
        return False
    if address.family == socket.AF_UNIX:
        return not peer or peer == address.address
    try:
        return (ipaddress.ip_address(peer[0]) == ipaddress.ip_address(address.address)
                and peer[1] == address.port)
    except ValueError:
        return False


_tables: dict = {}     # smtp_connection_cache_destinations tables, opened once per process


def _identity(config, protocol):
    """The label suffix: the service, the HELO name and the source addresses."""
    known = config.derived.setdefault("reuse identities", {})     # a Config never changes
    identity = known.get(protocol)
    if identity is None:
        def get(name):
            return config.get(protocol_name(name, protocol))
        identity = f"|service={config.process_name}|helo={get('smtp_helo_name')}"
        bind = ",".join(b for b in (get("smtp_bind_address"), get("smtp_bind_address6")) if b)
        identity = known[protocol] = identity + (f"|bind={bind}" if bind else "")
    return identity


def _matches(patterns, name):
    """Postfix string_list_match() for smtp_connection_cache_destinations (see the docstring)."""
    folded = name.lower()
    for pattern in patterns:
        negate = pattern.startswith("!")
        item = pattern[1:] if negate else pattern
        kind = item.split(":", 1)[0]
        if ":" in item and kind in maps.TABLE_TYPES:
            try:
                table = _tables.get(item)
                if table is None:
                    table = _tables[item] = maps.open_table(item)
                found = table.lookup(folded) is not None
            except Exception as error:      # a broken table disables caching, not delivery
                log.warning("smtp_connection_cache_destinations: %s: %s", item, error)
                found = False
        else:
            found = item.lower() == folded
        if found:
            return not negate
    return False


# --- one request --------------------------------------------------------------------------

class RequestCache:
    """The connection-cache side of one delivery request (the engine's hooks call this)."""

    def __init__(self, config, request, protocol, hold=False, batch=None):
        self.config = config
        self.batch = batch          # the batched request this message belongs to, or None
        self.request = request
        self.protocol = protocol
        self.hold = hold            # keep the last idle session in this process (see finish())
        self.claimed = None         # the previous request's (or message's) idle session
        if hold:
            if batch is not None and batch.held is not None:
                self.claimed, batch.held = batch.held, None
            else:
                self.claimed = _claim()
        self.pending = None         # this request's most recent idle session, to hold
        self.load = False
        self.store = False
        self.decided = False
        self.dest_label = None      # for lookups: the first next-hop's label, while load
        self.nexthop_label = None   # for saving: until the first good session (Postfix's nexthop state)
        self.used = set()           # addresses served from the cache in this request
        self.continued_from = None  # the batch's _Held whose session this message goes on with
        self._scache = None

    def get(self, name):
        return self.config.get(protocol_name(name, self.protocol))

    @property
    def active(self) -> bool:
        return self.load or self.store

    # --- policy ---------------------------------------------------------------------------
    def begin_site(self, site, resolution):
        """The addresses to walk for this site (a copy); decides the policy at the first next-hop."""
        addresses = list(resolution.addresses)
        if not self.decided and site.index == 0 and addresses:
            self.decided = True
            self._decide(site)
            if self.claimed is not None and not self._held_matches(self.claimed, addresses):
                self._release_claimed()     # another destination: scache may find it for others
        if self.load and self.used:
            addresses = [a for a in addresses if a.address not in self.used]
        return addresses

    def _decide(self, site):
        """The policy for this request; the messages of a batch share one decision
        for each combination of flags (the first and the last may differ)."""
        key = (site, bool(self.request.use_cached_connection), bool(self.request.store_connection))
        known = self.batch.cache_policies if self.batch is not None else {}
        policy = known.get(key)
        if policy is None or (policy[2] is not None and policy[2].disabled):
            policy = known[key] = self._policy(site)
        self.load, self.store, self._scache, self.dest_label, self.nexthop_label = policy

    def _policy(self, site):
        """(load, store, scache client, destination label to look up, to save under)."""
        if self.get("smtp_sasl_auth_enable"):
            # until the SASL identity is part of the labels (security rule 14)
            return False, False, None, None, None
        load = store = False
        if _matches(self.get("smtp_connection_cache_destinations"), site.domain or ""):
            load = store = True
        elif self.get("smtp_connection_cache_on_demand"):
            load = bool(self.request.use_cached_connection)
            store = bool(self.request.store_connection)
        if not (load or store):
            return False, False, None, None, None
        scache = shared_client(self.config.get("queue_directory"),
                               self.config.get("connection_cache_protocol_timeout"))
        if scache.disabled:
            return False, False, scache, None, None
        label = destination_label(self.protocol, site, self._identity())
        return load, store, scache, label if load else None, label if store else None

    def _identity(self):
        """What else a server would see differently: the service, the HELO name, the source."""
        return _identity(self.config, self.protocol)

    # --- lookups ----------------------------------------------------------------------------
    def reuse_sessions(self, site, resolution, addresses, settings_for):
        """Cached sessions to use before connecting (by destination, then best-preference
        endpoints); each one's address is removed from ``addresses`` before it is yielded."""
        if not self.load or not addresses:
            return
        if self.claimed is not None:
            cached = self._from_held(site, resolution, addresses, settings_for)
            if cached is not None:
                _remove(addresses, cached.address.address)
                yield cached
        if site.index == 0 and self.dest_label is not None:
            cached = self._from_destination(resolution, settings_for)
            if cached is not None:
                _remove(addresses, cached.address.address)
                yield cached
        best = resolution.best_preference
        for address in list(addresses):
            if address.preference != best:
                break
            if self._scache.disabled:
                return
            cached = self._from_endpoint(address, True, settings_for)
            if cached is not None:
                _remove(addresses, address.address)
                yield cached

    def reuse_address(self, address, resolution, settings_for):
        """A cached session for a backup (not best-preference) address, or None."""
        if not self.load or address.preference == resolution.best_preference:
            return None
        held = self.claimed
        if held is not None and held.endp_label == self._endpoint_label(address):
            self.claimed = None
            return self._activate_held(held, address, False, settings_for)
        return self._from_endpoint(address, False, settings_for)

    # --- in-process reuse: the previous request's idle session -------------------------------
    def _endpoint_label(self, address):
        return endpoint_label(self.protocol, address, self._identity())

    def _held_matches(self, held, addresses):
        """Would a scache lookup of this request find ``held`` (same labels)?"""
        if not self.load or held.protocol != self.protocol or held.identity != self._identity():
            return False
        if held.dest_label is not None and held.dest_label == self.dest_label:
            return True
        return any(held.endp_label == self._endpoint_label(a) for a in addresses)

    def _from_held(self, site, resolution, addresses, settings_for):
        """The held session, when it is what find_dest/find_endp would give here."""
        held = self.claimed
        if site.index == 0 and held.dest_label is not None and held.dest_label == self.dest_label:
            self.claimed = None
            address = held.address
            if address.preference or address.query_name:
                address = dataclasses.replace(address, preference=0, query_name="")
            return self._activate_held(held, address, held.best_mx, settings_for)
        best = resolution.best_preference
        for address in addresses:
            if address.preference != best:
                break
            if held.endp_label == self._endpoint_label(address):
                self.claimed = None
                return self._activate_held(held, address, True, settings_for)
        return None

    def _activate_held(self, held, address, best_mx, settings_for):
        """As _activate() for a session this process kept: age limit, then the RSET probe."""
        if self._expired(held.opened):
            held.quit()
            return None
        same_batch = self.batch is not None and held.batch is self.batch
        in_flight = held.client.next_envelope is not None
        if in_flight and not same_batch:
            held.close()        # cannot happen: a started transaction stays in its batch
            return None
        continued = in_flight or (same_batch and held.client.can_continue)
        if continued:
            # the same batch goes on with the same core (same site, server and
            # settings): MAIL is the probe; with a transaction under way, the
            # previous message already sent this one's MAIL (engine checks it)
            client = held.client
            if not in_flight:
                client.continue_ready()
            self.continued_from = held
        else:
            try:
                client = Client.resume(settings_for(address, best_mx), held.client.capabilities)
            except (TypeError, ValueError, AttributeError):
                held.close()
                return None
            if not driver.probe(driver.Connection(held.sock), client):
                held.close()
                return None
        self.used.add(address.address)
        return CachedSession(address, held.sock, client, held.opened, best_mx, continued)

    def _release_claimed(self):
        held, self.claimed = self.claimed, None
        if held is not None:
            held.hand_over()

    def finish(self):
        """End of the request: an unused claimed session goes to scache; the most recent
        idle session of this request stays in the process for the next one."""
        self._release_claimed()
        pending, self.pending = self.pending, None
        if pending is not None:
            if self.batch is not None:
                self.batch.held = pending   # for the batch's next message (keep_batch_session())
            else:
                _publish(pending)

    def _from_destination(self, resolution, settings_for):
        found = self._scache.find_dest(self.dest_label) if not self._scache.disabled else None
        if found is None:
            return None
        fd, dest_properties, endp_properties = found
        best_mx = _decode_destination(dest_properties)
        return self._activate(fd, endp_properties, best_mx, settings_for, self.dest_label)

    def _from_endpoint(self, address, best_mx, settings_for):
        label = endpoint_label(self.protocol, address, self._identity())
        found = self._scache.find_endp(label) if not self._scache.disabled else None
        if found is None:
            return None
        fd, properties = found
        return self._activate(fd, properties, best_mx, settings_for, label, address)

    def _activate(self, fd, properties, best_mx, settings_for, label, expected=None):
        """smtp_reuse_common(): check the connection and probe it with RSET.

        ``expected`` is the address an endpoint lookup was for: the session then
        goes by the name and preference this walk knows that server by.
        """
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            _close(fd)
            return None
        decoded = decode_endpoint(properties)
        if decoded is not None and expected is not None:
            if (decoded[0].address, decoded[0].port) != (expected.address, expected.port):
                decoded = None
            else:
                decoded = (expected,) + decoded[1:]
        if decoded is None or best_mx is None:
            log.warning("bad cached session attribute for %s", label)
            sock.close()
            return None
        address, capabilities, opened = decoded
        if not _same_peer(sock, address):
            log.warning("cached connection for %s is not connected to %s", label, address.endpoint)
            sock.close()
            return None
        if self._expired(opened):
            sock.close()
            return None
        sock.setblocking(True)
        try:
            client = Client.resume(settings_for(address, best_mx), capabilities)
        except (TypeError, ValueError, AttributeError):
            log.warning("bad cached session attribute for %s", label)
            sock.close()
            return None
        if not driver.probe(driver.Connection(sock), client):
            sock.close()
            return None
        self.used.add(address.address)
        return CachedSession(address, sock, client, opened, best_mx)

    # --- saving -------------------------------------------------------------------------------
    def keep_open(self):
        """Should sessions stay open after their transaction (no QUIT after ".")?"""
        return self.store

    def session_done(self, connection, client, address, opened, best_mx, site):
        """After run_session(): cache the session, or end it with QUIT if it is still open.

        Returns True when the session is kept for in-process reuse (``hold``): the
        caller must then leave its socket open.
        """
        if not self.active:
            return False
        good = client.reusable
        # the batch's next message is under way on this session (driver.run_session())
        in_flight = client.next_envelope is not None and self.batch is not None
        saved = kept = False
        if (good or in_flight) and self.store and not self._expired(opened):
            if (self.hold and (client.state == State.READY or in_flight)
                    and self._scache is not None and not self._scache.disabled):
                if self.pending is not None:
                    self.pending.hand_over()     # only the most recent session stays here
                self.pending = self._held(connection, client, address, opened, best_mx, site)
                kept = True
            elif good:
                saved = self._save(connection, client, address, opened, best_mx, site)
        if not saved and not kept and client.state == State.READY:
            driver.quit_session(connection, client)
        if good:
            self.nexthop_label = None   # only the first good session is bound to the next-hop
        return kept

    def _held(self, connection, client, address, opened, best_mx, site):
        held = self.continued_from
        if held is not None and held.sock is connection.sock and held.client is client:
            # the batch's session, kept again: the same server, labels and limits
            self.continued_from = None
            held.dest_label = self.nexthop_label if site.index == 0 else None
            return held
        ttl = self.get("smtp_connection_cache_time_limit")
        return _Held(protocol=self.protocol, identity=self._identity(), address=address,
                     sock=connection.sock, client=client, opened=opened,
                     best_mx=best_mx, endp_label=self._endpoint_label(address),
                     dest_label=self.nexthop_label if site.index == 0 else None, ttl=ttl,
                     reuse_limit=self.get("smtp_connection_reuse_time_limit"),
                     scache=self._scache, batch=self.batch)

    def _save(self, connection, client, address, opened, best_mx, site):
        if self._scache is None or self._scache.disabled:
            return False
        try:
            fd = connection.sock.fileno()
        except OSError:
            return False
        if fd < 0:
            return False
        ttl = self.get("smtp_connection_cache_time_limit")
        label = endpoint_label(self.protocol, address, self._identity())
        if not self._scache.save_endp(ttl, label, encode_endpoint(address, client.capabilities,
                                                                  opened), fd):
            return False
        if self.nexthop_label is not None and site.index == 0:
            self._scache.save_dest(ttl, self.nexthop_label, _encode_destination(best_mx), label)
        return True

    def _expired(self, opened):
        return time.time() >= opened + self.get("smtp_connection_reuse_time_limit")


# --- in-process reuse: one idle session kept between requests -----------------------------

HOLD_IDLE: Any = 0.25   # seconds (float or int) without a request before a kept session goes to scache


@dataclasses.dataclass
class _Held:
    """An idle session (READY, no QUIT sent) kept by this process after its request
    (or, between two messages of a batch, with the next one's transaction under way)."""

    protocol: str
    identity: str
    address: Any          # ServerAddress
    sock: Any             # socket.socket
    client: Any           # protocol.Client, READY; its capabilities are what a resumed core gets
    opened: Any           # float, or int
    best_mx: Any          # bool
    endp_label: str
    dest_label: Any       # str: the next-hop label it is also saved under, or None
    ttl: Any              # int (seconds)
    reuse_limit: Any      # int (seconds)
    scache: Any           # ScacheClient
    batch: Any = None     # the batched request whose message left it (see the docstring)
    since: Any = 0.0      # float: time.monotonic() when it became idle in this process
    pid: Any = dataclasses.field(default_factory=current_pid)   # int

    def hand_over(self):
        """What session_done() did at once before: save_endp (+ save_dest), else QUIT
        (which closes a session that carries a started transaction: never saved)."""
        saved = False
        if (self.client.next_envelope is None and time.time() < self.opened + self.reuse_limit
                and not self.scache.disabled):
            try:
                fd = self.sock.fileno()
            except OSError:
                fd = -1
            if fd >= 0 and self.scache.save_endp(
                    self.ttl, self.endp_label,
                    encode_endpoint(self.address, self.client.capabilities, self.opened), fd):
                saved = True
                if self.dest_label is not None:
                    self.scache.save_dest(self.ttl, self.dest_label,
                                          _encode_destination(self.best_mx), self.endp_label)
        if saved:
            self.close()
        else:
            self.quit()

    def quit(self):
        if self.client.next_envelope is not None:
            # a transaction was started for a message that did not go on with
            # it: no content was sent, so closing delivers nothing
            self.close()
            return
        connection = driver.Connection(self.sock)
        try:
            driver.quit_session(connection, self.client)
        except Exception as error:       # a QUIT that fails must not fail the next request
            log.info("closing cached connection to %s: %s", self.address.endpoint, error)
        connection.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# Kept sessions, while no request has them: one per serving thread of this
# process (a threaded agent runs several requests at once, skeleton.py), so
# that each thread's next request finds the session its last one left.
_held: dict = {}                    # threading.get_ident() -> _Held
_held_cond = threading.Condition()  # guards _held; the idle worker's hand-overs run under it
_worker: Any = None                 # threading.Thread, once started


def _claim():
    """Take this thread's kept session for a request (waits while the idle
    worker is handing one over)."""
    with _held_cond:
        held = _held.pop(threading.get_ident(), None)
    if held is not None and held.pid != current_pid():
        return None                 # a parent's: not ours to use or close
    return held


def _publish(held):
    """Keep ``held`` for this thread's next request; the idle worker hands it
    over after HOLD_IDLE."""
    global _worker
    thread = threading.get_ident()
    with _held_cond:
        previous = _held.get(thread)
        _held[thread] = held
        held.since = time.monotonic()
        if previous is not None and previous.pid == current_pid():
            previous.hand_over()
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_idle_worker, name="smtp-hold", daemon=True)
            _worker.start()
        _held_cond.notify_all()


def keep_batch_session(batch):
    """The end of a batch: its last idle session is kept for the next request
    (closed instead when it carries a transaction no message went on with)."""
    held, batch.held = batch.held, None
    if held is not None:
        if held.client.next_envelope is not None:
            held.close()
        else:
            _publish(held)


def release_held():
    """Hand every kept session of this process to scache now (it is about to exit)."""
    with _held_cond:
        kept = list(_held.values())
        _held.clear()
    for held in kept:
        if held.pid == current_pid():
            held.hand_over()


def _idle_worker():
    with _held_cond:
        while True:
            now = time.monotonic()
            due = [thread for thread, held in _held.items() if _hand_over_at(held) <= now]
            for thread in due:
                held = _held.pop(thread)
                try:
                    held.hand_over()    # under the lock: a new request waits in _claim()
                except Exception as error:
                    log.warning("handing an idle connection to the cache: %s", error)
                    held.close()
            if _held:
                _held_cond.wait(min(_hand_over_at(held) for held in _held.values()) - now)
            else:
                _held_cond.wait()


def _hand_over_at(held):
    """When a kept session goes to scache if no request takes it (time.monotonic())."""
    return held.since + min(HOLD_IDLE, held.ttl)


def _remove(addresses, printable):
    for index, address in enumerate(addresses):
        if address.address == printable:
            del addresses[index]
            return


def _close(fd):
    try:
        socket.close(fd)
    except OSError:
        pass


__all__ = ["RequestCache", "CachedSession", "endpoint_label", "destination_label",
           "encode_endpoint", "decode_endpoint", "release_held", "keep_batch_session"]
