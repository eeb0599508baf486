"""Deliver one request: walk the sites and their servers until every recipient is done.

Exports deliver(config, request, protocol, on_result=None) -> Outcome, and
Outcome.  Reads (smtp_* or the lmtp_* mirrors): smtp_connect_timeout,
smtp_bind_address, smtp_bind_address6, tcp_windowsize, smtp_mx_session_limit,
smtp_pix_workaround_maps, smtp_discard_ehlo_keyword_address_maps, relayhost,
best_mx_transport, soft_bounce, delay_logging_resolution_limit,
smtp_batch_pipelining, and what
destination.py, resolve.py, protocol.py, content.py, driver.py and reuse.py
read.

postfix-behaviour.md §1.1: the sites are the next-hops, then the fallback
relays; each site is resolved to an ordered list of server addresses; each
address is connected to in turn while recipients remain.  A failed connect
or handshake moves on without counting as a session; smtp_mx_session_limit
counts completed handshakes.  The last address of the last site (or of a
site that must be final: this host is one of its MX hosts) is the final
server, where soft failures defer instead of waiting for the next server.
What failures mean for each recipient is decided in trouble.py.

Connection caching lives in reuse.py; the engine only calls it at the
places marked "connection cache": cached sessions before new connections,
"save (or keep) instead of QUIT" after each session, and finish() at the
end of the request.  Without caching (RequestCache.active false) every hook
is a no-op.  With ``hold_idle`` (the agent's serve loop) the last idle
session stays in the process for the next request (reuse.py); with
``batch`` (the messages of one batched delivery request), the next message
of the batch continues that session without a probe - and, with
smtp_batch_pipelining, its transaction starts behind the previous message's
"." (batch.prepare_next gives its prepared delivery; first_envelope()).

A Config never changes within a process, so what it gives every request
alike (resolver settings, the core's base Settings, SessionOptions, the
opened content-filter, pix and discard tables) is made once per Config.

``on_result(result)`` is called the moment a recipient's fate is known, so
the queue can mark it done before the next reply is acted on (security
rule 2).  Every result is also logged in Postfix's format.
"""

import copy
import dataclasses
import logging
import os
import time
from typing import Any

from .. import maps
from ..config.registry import protocol_name
from ..log import line as log_line
from . import commands, destination, driver, resolve, reuse
from .content import ContentFilter
from .events import SessionFailed, TransactionDone
from .protocol import Client, Settings
from .request import Status
from .trouble import Trouble

log = logging.getLogger("postclient.smtp")

DNS_DEADLINE = 60           # seconds for the lookups of one site


@dataclasses.dataclass
class Outcome:
    results: Any  # list; RecipientResult, in request order
    destination_down: Status | None = None   # suspend the destination (queue manager)
    best_mx_transport: Any = ""  # str; hand the request to this transport (mail loop)


# What a Config gives every request alike, made at the first request that needs it
# and kept with the Config (Config.derived): a child re-reads main.cf at start and
# its Config never changes, so tables are opened once per process, as Postfix's
# smtp(8) does.
def _memo(config, key, make):
    memo = config.derived
    try:
        return memo[key]
    except KeyError:
        value = memo[key] = make()
        return value


def _status(failure):
    return Status(failure.dsn, failure.text, failure.diagnostic or "")


class _Delivery:
    """State of one request across all its sites and servers."""

    def __init__(self, config, request, protocol, on_result, hold_idle=False, batch=None):
        self.config = config
        self.request = request
        self.protocol = protocol
        self.on_result = on_result
        self.started = time.time()
        self.trouble = Trouble(request.recipients, config.get("soft_bounce"))
        self.filter = _memo(config, ("filter", protocol), lambda: ContentFilter(config, protocol))
        if self.filter.content_active:          # it logs the queue ID: a copy of our own
            self.filter = copy.copy(self.filter)
            self.filter.queue_id = request.queue_id
        self.sender = self.filter.rewrite_address(request.sender)
        self.addresses = [self.filter.rewrite_address(r.address) for r in request.recipients]
        if request.open_content is not None and not self.filter.content_active:
            self.content = None          # streamed from the queue file, once per session
            self.content_size = request.content_size
        else:
            content = request.content
            if request.open_content is not None:
                with request.open_content() as handle:
                    content = handle.read()
            self.content = self.filter.filter(content)
            self.content_size = len(self.content)
        self.pix_maps = _memo(config, ("pix", protocol), lambda: maps.open_tables(
            config.expand(self.param("smtp_pix_workaround_maps"))))
        self.discard_maps = _memo(config, ("discard", protocol), lambda: maps.open_tables(
            config.expand(self.param("smtp_discard_ehlo_keyword_address_maps"))))
        self.ready_at = {}            # recipient index -> when its session was ready for MAIL
        self._envelopes = {}          # recipient indexes -> commands.Envelope
        self._checked = False         # _refuse_unsafe_values() ran
        self.logged = set()
        self.batch = batch
        self.hold_idle = hold_idle
        self.cache = None             # reuse.RequestCache, made when the delivery runs

    def param(self, name):
        return protocol_name(name, self.protocol)

    def get(self, name):
        return self.config.get(self.param(name))

    # --- the walk (§1.1) ------------------------------------------------------------
    def run(self):
        # made now, not when prepared: it takes the session the batch's previous message left
        self.started = time.time()
        self.cache = reuse.RequestCache(self.config, self.request, self.protocol,
                                        hold=self.hold_idle, batch=self.batch)
        try:
            return self._run()
        finally:
            self.cache.finish()     # connection cache: keep or hand over the idle session

    def first_envelope(self):
        """The envelope this delivery's first session will send, or None when no
        recipient is left for it (for the batch's previous message, which
        pipelines it behind its own "."; see driver.run_session())."""
        self._refuse_unsafe_values()
        pending = self.trouble.pending()
        return self._envelope(pending) if pending else None

    def _run(self):
        self._refuse_unsafe_values()
        settings = _memo(self.config, ("resolver", self.protocol),
                         lambda: resolve.ResolverSettings.from_config(self.config, self.protocol))
        if self.batch is not None:
            sites = self.batch.sites(self.request.nexthop, self.protocol, self.config)
        else:
            sites = destination.iter_sites(self.request.nexthop, self.protocol, self.config)
        last_site = None
        handoff = ""
        while not self.trouble.finished:
            try:
                site = next(sites, None)
            except destination.DestinationError as error:
                self.trouble.site_failed(error.status)
                last_site = None
                continue
            if site is None:
                break
            if site.is_unix and not os.path.isabs(site.unix_path):
                # Postfix: a relative LMTP socket path is relative to queue_directory.
                site = dataclasses.replace(site, unix_path=os.path.join(
                    self.config.get("queue_directory"), site.unix_path))
            last_site = site
            resolution = self._resolve(site, settings)
            if resolution.loops_back and self.config.get("best_mx_transport"):
                handoff = self.config.get("best_mx_transport")
                self.trouble.site_failed(Status("4.4.6", f"mail for {site.text} loops back to myself; "
                                                         f"passing it to transport {handoff}"))
                break
            if not resolution.addresses:
                self.trouble.site_failed(resolution.status)
                if resolution.final:
                    break
                continue
            self._try_servers(site, resolution)
            if resolution.final:
                break
        results = self.trouble.finish(relayhost_or_fallback=self._misconfigured(last_site))
        for index, result in enumerate(results):
            self._report(index, result)
        return Outcome(results, self.trouble.destination_down, handoff)

    def _resolve(self, site, settings):
        """resolve_site(), once per batch: its next messages use the same answer."""
        known = self.batch.resolutions if self.batch is not None else {}
        resolution = known.get(site)
        if resolution is None:
            resolution = resolve.resolve_site(site, settings, deadline=time.monotonic() + DNS_DEADLINE)
            for warning in resolution.warnings:
                log.warning("%s", warning)
            known[site] = resolution
        return resolution

    def _misconfigured(self, last_site):
        """Whether a hard leftover status means a local configuration problem (SMTP only).

        As Postfix's smtp_connect.c: the last site was a fallback relay, or the
        first site is relayhost; such mail is deferred (4.3.5), never bounced,
        and the problem is logged for the administrator.
        """
        if self.protocol != "smtp" or last_site is None or self.trouble.finished:
            return False
        if last_site.is_fallback:
            which = "smtp_fallback_relay"
        elif last_site.index == 0 and self.request.nexthop == self.config.get("relayhost"):
            which = "relayhost"
        else:
            return False
        status = self.trouble.last[0] if self.trouble.last else None
        if status is not None and status.hard:
            log.warning("%s configuration problem", which)
        return True

    def _refuse_unsafe_values(self):
        """CR, LF or NUL in an address or the HELO name: refused before any connection."""
        if self._checked:
            return
        self._checked = True
        envelope = self._envelope(range(len(self.addresses)))
        problems = commands.unsafe_values(envelope, self.get("smtp_helo_name"))
        # A recipient's own problem (address, ORCPT, NOTIFY) fails that recipient
        # only, with the address problem first (5.1.3); the rest fail them all.
        problems.sort(key=lambda p: p.index is None or p.field != "recipient")
        for problem in problems:
            status = Status(problem.dsn, str(problem))
            if problem.index is not None:
                self.trouble.fail([problem.index], status, "none", final_server=True)
            else:
                self.trouble.fail_all(status, "none", final_server=True)

    def _try_servers(self, site, resolution):
        session_limit = self.get("smtp_mx_session_limit")
        sessions = 0
        site_final = site.is_last or resolution.final
        # --- connection cache: cached sessions first; their addresses leave the list -----
        addresses = self.cache.begin_site(site, resolution)

        def settings_for(address, best_mx):
            return self._server_settings(site, resolution, address, best_mx)

        for cached in self.cache.reuse_sessions(site, resolution, addresses, settings_for):
            sessions += 1
            used = self._session(site, resolution, cached.address, cached.sock, cached=cached,
                                 final=lambda done: site_final and (not addresses or bool(
                                     session_limit and sessions >= session_limit)))
            if used is BROKEN_BEFORE_MAIL:
                # A continued batch session failed where a probe would have
                # (reuse.py): as after a failed probe, a new connection instead.
                sessions -= 1
                addresses.insert(0, cached.address)
                continue
            if self.trouble.finished or (session_limit and sessions >= session_limit):
                return
        # --- end of connection cache -------------------------------------------------------
        for position, address in enumerate(addresses):
            if self.trouble.finished:
                return
            last_address = position == len(addresses) - 1
            cached = self.cache.reuse_address(address, resolution, settings_for)  # connection cache
            try:
                sock = cached.sock if cached else driver.connect(
                    address, self.get("smtp_connect_timeout"), self.get("smtp_bind_address"),
                    self.get("smtp_bind_address6"), self.config.get("tcp_windowsize"))
            except driver.ConnectError as error:
                log.info("%s", error.status.text)
                self.trouble.site_failed(error.status)
                if site_final and last_address:
                    self.trouble.fail_all(error.status, "none", final_server=True, suspend=True)
                continue
            handshake_done = self._session(site, resolution, address, sock, cached=cached,
                                           final=lambda done: site_final and (
                                               last_address or (done and session_limit and
                                                                sessions + 1 >= session_limit)))
            if handshake_done:
                sessions += 1
                if session_limit and sessions >= session_limit:
                    return

    # --- one session ------------------------------------------------------------------
    def _envelope(self, indexes):
        """The envelope for these recipients (made once for the same set: the
        unsafe-value check and the first session use the same)."""
        key = tuple(indexes)
        known = self._envelopes.get(key)
        if known is None:
            known = self._envelopes[key] = self._make_envelope(key)
        return known

    def _make_envelope(self, indexes):
        request = self.request
        recipients = [commands.Rcpt(self.addresses[i], original=request.recipients[i].original or
                                    request.recipients[i].address, orcpt=request.recipients[i].orcpt,
                                    notify=request.recipients[i].notify) for i in indexes]
        needs_utf8 = request.smtputf8 and any(
            not a.isascii() for a in [self.sender] + [r.address for r in recipients])
        return commands.Envelope(sender=self.sender, recipients=recipients, size=self.content_size,
                                 encoding="" if request.encoding == "unknown" else request.encoding,
                                 envid=request.envid, ret=request.ret, smtputf8=request.smtputf8,
                                 smtputf8_required=needs_utf8, xforward=request.client or None)

    def _server_settings(self, site, resolution, address, best_mx=None):
        if best_mx is None:
            best_mx = address.preference == resolution.best_preference
        session = dict(peer=f"{address.name}[{address.address}]", nexthop=site.domain or site.text,
                       loop_detection=site.loop_detection, best_mx=best_mx)
        pix = self.pix_maps.lookup(address.address) if self.pix_maps.tables else None
        if pix is not None:
            session["pix_workarounds"] = tuple(w.lower() for w in pix.replace(",", " ").split())
        discard = self.discard_maps.lookup(address.address) if self.discard_maps.tables else None
        if discard is not None:
            session["discard_ehlo_keywords"] = tuple(discard.replace(",", " ").split())
        base = _memo(self.config, ("settings", self.protocol),
                     lambda: Settings.from_config(self.config, self.protocol))
        return dataclasses.replace(base, **session)

    def _session(self, site, resolution, address, sock, final, cached=None):
        """Run one session; returns True when its handshake succeeded (a session counts).

        ``cached`` is a reuse.CachedSession: its core is already past the handshake.
        A continued one (no probe) that broke before MAIL was accepted returns
        BROKEN_BEFORE_MAIL, and nothing is recorded for its recipients.
        """
        pending = self.trouble.pending()
        envelope = self._envelope(pending)
        relay = address.endpoint
        if cached is not None:
            client, opened, best_mx = cached.client, cached.opened, cached.best_mx
        else:
            client, opened = Client(self._server_settings(site, resolution, address)), time.time()
            best_mx = address.preference == resolution.best_preference
        connection = driver.Connection(sock)
        ready = []
        if client.next_envelope is not None:
            # the batch's previous message sent this message's MAIL... behind its "."
            if client.next_envelope is not envelope:
                connection.close()      # not ours (cannot happen): no content of it was sent
                return BROKEN_BEFORE_MAIL
            ready.append(time.time())
            for index in pending:
                self.ready_at[index] = ready[0]

        def on_ready(core):
            ready.append(time.time())
            for index in pending:
                self.ready_at[index] = ready[0]
            return True

        def on_end_of_data(event):
            self._apply(pending, event.outcomes, relay, final(True), client.capabilities.dsn)

        options = _memo(self.config, ("options", self.protocol),
                        lambda: driver.SessionOptions.from_config(self.config, self.protocol, 0.0)
                        ).for_message(time.time() - self.request.arrival_time)
        content = self.content if self.content is not None else self.request.open_content()
        on_next_mail = None
        if (self.batch is not None and self.batch.prepare_next is not None and self.cache.hold
                and site.index == 0 and best_mx and self.get("smtp_batch_pipelining")):
            # where the batch's next message will look first (reuse.py): its
            # transaction may follow this one's "." (driver.run_session())
            on_next_mail = self._next_mail
        kept = False
        try:
            events = driver.run_session(connection, client, envelope, content, options,
                                        on_ready=on_ready, on_end_of_data=on_end_of_data,
                                        quit_after=not self.cache.keep_open(),
                                        on_next_mail=on_next_mail)
            # connection cache: save (or keep) the session instead of QUIT (a no-op without caching)
            kept = self.cache.session_done(connection, client, address, opened, best_mx, site)
        finally:
            if not kept:
                connection.close()
            if content is not self.content:
                content.close()
        if cached is not None and cached.continued and _broke_before_mail(events):
            return BROKEN_BEFORE_MAIL
        for notice in client.take_notices():
            log.info("%s: %s", self.request.queue_id, getattr(notice, "text", notice))
        for event in events:
            if isinstance(event, SessionFailed):
                failure = event.failure
                self.trouble.fail([i for i in pending], _status(failure), relay,
                                  final(bool(ready)), suspend=failure.suspends_destination)
            elif isinstance(event, TransactionDone):
                self._apply(pending, event.result.outcomes, relay, final(True), client.capabilities.dsn)
        return bool(ready)

    def _next_mail(self):
        try:
            delivery = self.batch.prepare_next()
            return delivery.first_envelope() if delivery is not None else None
        except Exception as error:      # this message's "." must still go out
            log.warning("%s: cannot take up the next message of the batch: %s",
                        self.request.queue_id, error)
            return None

    def _apply(self, pending, outcomes, relay, final_server, server_dsn=False):
        """Results of one transaction; ``server_dsn``: the server announced DSN, so
        success notices are its job (postfix-behaviour.md §8)."""
        for outcome in outcomes:
            index = pending[outcome.index]
            if index in self.trouble.results:
                continue
            if outcome.delivered:
                self.trouble.sent(index, relay, outcome.reply.text, outcome.reply.dsn)
                self.trouble.results[index].server_dsn = server_dsn
            elif outcome.failure is not None:
                failure = outcome.failure
                self.trouble.fail([index], _status(failure), relay, final_server,
                                  suspend=failure.suspends_destination)
            if index in self.trouble.results:
                self._report(index, self.trouble.results[index])

    # --- results ------------------------------------------------------------------------
    def _report(self, index, result):
        if index in self.logged:
            return
        self.logged.add(index)
        log_line(log, self._log_line(index, result))
        if self.on_result is not None:
            self.on_result(index, result)

    def _log_line(self, index, result):
        now = time.time()
        digits = self.config.get("delay_logging_resolution_limit")
        queued = max(0.0, self.started - self.request.arrival_time)
        ready = self.ready_at.get(index, now)
        setup = max(0.0, ready - self.started)
        transmission = max(0.0, now - ready)
        fmt = _DELAY_FORMATS[digits]
        recipient = self.request.recipients[index]
        orig = f", orig_to=<{recipient.original}>" if recipient.original and \
            recipient.original != recipient.address else ""
        return (f"{self.request.queue_id}: to=<{recipient.address}>{orig}, relay={result.relay}, "
                f"delay={fmt(now - self.request.arrival_time)}, "
                f"delays={fmt(queued)}/0/{fmt(setup)}/{fmt(transmission)}, "
                f"dsn={result.dsn}, status={result.status} ({result.text})")


def _delay_format(digits):
    """The delay= and delays= figures with ``digits`` decimals at most, trailing zeros
    dropped (Postfix: "delay=0.12, delays=0.01/0/0.05/0.06")."""
    if not digits:
        return lambda seconds: str(int(seconds))
    pattern = f"{{:.{digits}f}}".format

    def fmt(seconds):
        return pattern(seconds).rstrip("0").rstrip(".")
    return fmt


_DELAY_FORMATS = [_delay_format(digits) for digits in range(7)]   # 0..6, as the parameter


class Batch:
    """What the messages of one batched delivery request share (service.handle_batch()):
    the session one leaves READY for the next (reuse.py), the cache policy
    decided for its destination, the sites of its next-hop (parsed once) and
    the resolution of each site, so that a batch makes its DNS lookups (and
    waits out a failing resolver) once, not once per message."""

    def __init__(self):
        self._sites = None          # the next-hop's sites as far as parsed, and what came after
        self.resolutions = {}       # destination.Site -> resolve.Resolution
        self.held = None            # the idle session one message leaves for the next (reuse.py)
        self.cache_policies = {}    # what reuse.RequestCache decided, by site and flags
        # () -> the next message's prepared _Delivery, or None (service.py sets it)
        self.prepare_next = None

    def sites(self, nexthop, protocol, config):
        """destination.iter_sites(), parsed once per batch (every message has the
        batch's next-hop): the same sites, then the same end or DestinationError."""
        if self._sites is None:
            self._sites = ([], destination.iter_sites(nexthop, protocol, config), [])
        parsed, source, end = self._sites
        position = 0
        while True:
            if position < len(parsed):
                yield parsed[position]
                position += 1
                continue
            if end:
                if end[0] is not None:
                    raise end[0].with_traceback(None)
                return
            try:
                parsed.append(next(source))
            except StopIteration:
                end.append(None)
            except destination.DestinationError as error:
                end.append(error)


BROKEN_BEFORE_MAIL = "broken before MAIL"


def _broke_before_mail(events):
    """The session died at MAIL (I/O trouble or a 421 reply), before anything was accepted."""
    for event in events:
        if isinstance(event, SessionFailed):
            failures = [event.failure]
        elif isinstance(event, TransactionDone):
            if any(o.delivered for o in event.result.outcomes):
                return False
            failures = [o.failure for o in event.result.outcomes]
        else:
            continue
        return bool(failures) and all(
            f is not None and f.stage in ("mail", "rset") and
            (f.origin == "io" or getattr(f.reply, "code", None) == 421) for f in failures)
    return False


def deliver(config, request, protocol="smtp", on_result=None, hold_idle=False, batch=None):
    """Deliver ``request`` (a request.DeliveryRequest); returns an Outcome.

    ``hold_idle`` (the delivery agent's serve loop): a session that would go to
    scache stays in this process for the next request (reuse.py, "In-process
    reuse"); without it the session is saved to scache before this returns.
    ``batch``: the Batch of a batched delivery request, the same for each of
    its messages.
    """
    return prepare(config, request, protocol, on_result, hold_idle, batch).run()


def prepare(config, request, protocol="smtp", on_result=None, hold_idle=False, batch=None):
    """deliver() in two steps: the delivery, ready to run(); a batch prepares its
    next message early, for first_envelope()."""
    return _Delivery(config, request, protocol, on_result, hold_idle, batch)
