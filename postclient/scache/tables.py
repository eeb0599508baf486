"""The connection cache's two tables, without any I/O (Postfix's scache_multi.c).

Exports Tables.  Reads nothing: the server passes the TTL cap
(connection_cache_ttl_limit) and the session limit.

  destination label -> [binding (endpoint label, destination properties), ...]
  endpoint label    -> [session (file descriptor, endpoint properties), ...]

Both lists keep the oldest entry first and add new ones at the tail.
find_endp() hands out the oldest session of an endpoint and forgets it: the
caller owns the descriptor from then on.  find_dest() walks the bindings of a
destination in order and returns the first endpoint that has a session.  A
binding is only a pointer: it outlives its sessions until its own time runs
out, and saving the same binding again (same endpoint label, same
properties) refreshes its expiry instead of adding a duplicate.

Every entry lives min(requested TTL, ttl_limit) seconds; an expired session
is closed without any protocol goodbye (the server side sees a disconnect,
as with Postfix).  At most ``max_sessions`` descriptors are held: saving one
more closes the oldest session of all first, so that a buggy or hostile
client cannot make the cache run out of descriptors.

Descriptors are owned here until find_*() returns them or close_all() /
expire() close them; ``close`` (os.close) and ``clock`` (time.monotonic)
are parameters for the tests.
"""

import collections
import heapq
import itertools
import os
import time


class _Session:
    __slots__ = ("fd", "label", "properties", "expires", "seq", "alive")

    def __init__(self, fd, label, properties, expires, seq):
        self.fd, self.label, self.properties = fd, label, properties
        self.expires, self.seq, self.alive = expires, seq, True


class _Binding:
    __slots__ = ("label", "endp_label", "properties", "expires", "alive")

    def __init__(self, label, endp_label, properties, expires):
        self.label, self.endp_label, self.properties = label, endp_label, properties
        self.expires, self.alive = expires, True


class Tables:
    """Destination bindings and endpoint sessions with expiry and a descriptor limit."""

    def __init__(self, ttl_limit, max_sessions, clock=time.monotonic, close=os.close):
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.ttl_limit = ttl_limit
        self.max_sessions = max_sessions
        self.clock = clock
        self._close = close
        self.endpoints = {}                       # label -> OrderedDict(seq -> _Session)
        self.destinations = {}                    # label -> [_Binding], oldest first
        self._sessions = collections.OrderedDict()  # seq -> _Session, all of them, oldest first
        self._timers = []                         # heap of (expires, tie, entry)
        self._tie = itertools.count()

    # --- sizes (statistics) ---------------------------------------------------------
    @property
    def session_count(self):
        return len(self._sessions)

    @property
    def endpoint_count(self):
        return len(self.endpoints)

    @property
    def destination_count(self):
        return len(self.destinations)

    def ttl(self, requested):
        """The time to live actually granted: Postfix scache uses the smaller one."""
        return min(requested, self.ttl_limit)

    # --- endpoints --------------------------------------------------------------------
    def save_endp(self, ttl, label, properties, fd):
        """Keep ``fd`` (ours from now on) under ``label``; returns how many were evicted."""
        evicted = 0
        while len(self._sessions) >= self.max_sessions:
            _, oldest = self._sessions.popitem(last=False)
            self._forget_session(oldest)
            self._close_fd(oldest.fd)
            evicted += 1
        seq = next(self._tie)
        session = _Session(fd, label, properties, self.clock() + self.ttl(ttl), seq)
        self.endpoints.setdefault(label, collections.OrderedDict())[seq] = session
        self._sessions[seq] = session
        heapq.heappush(self._timers, (session.expires, seq, session))
        return evicted

    def find_endp(self, label):
        """(fd, properties) of the oldest session for ``label``, now the caller's; or None."""
        sessions = self.endpoints.get(label)
        if not sessions:
            return None
        seq, session = next(iter(sessions.items()))
        del self._sessions[seq]
        self._forget_session(session)
        return session.fd, session.properties

    def _forget_session(self, session):
        """Unlink a session from its endpoint list (it is already out of _sessions)."""
        session.alive = False
        sessions = self.endpoints.get(session.label)
        if sessions is not None:
            sessions.pop(session.seq, None)
            if not sessions:
                del self.endpoints[session.label]

    # --- destinations -----------------------------------------------------------------
    def save_dest(self, ttl, label, properties, endp_label):
        """Bind ``label`` to ``endp_label`` (refreshing an identical binding)."""
        expires = self.clock() + self.ttl(ttl)
        bindings = self.destinations.setdefault(label, [])
        for binding in bindings:
            if binding.endp_label == endp_label and binding.properties == properties:
                binding.expires = expires
                break
        else:
            binding = _Binding(label, endp_label, properties, expires)
            bindings.append(binding)
        heapq.heappush(self._timers, (expires, next(self._tie), binding))

    def find_dest(self, label):
        """(fd, destination properties, endpoint properties) through the first binding
        of ``label`` whose endpoint has a session; or None."""
        for binding in self.destinations.get(label, ()):
            found = self.find_endp(binding.endp_label)
            if found is not None:
                fd, endp_properties = found
                return fd, binding.properties, endp_properties
        return None

    def _forget_binding(self, binding):
        binding.alive = False
        bindings = self.destinations.get(binding.label)
        if bindings is not None:
            try:
                bindings.remove(binding)
            except ValueError:
                pass
            if not bindings:
                del self.destinations[binding.label]

    # --- time ----------------------------------------------------------------------------
    def next_expiry(self):
        """When expire() has something to do next (clock time), or None."""
        while self._timers:
            expires, _, entry = self._timers[0]
            if entry.alive and entry.expires == expires:
                return expires
            heapq.heappop(self._timers)          # stale: taken, or a refreshed binding
        return None

    def expire(self):
        """Drop what has outlived its TTL, closing sessions; returns how many sessions closed."""
        now = self.clock()
        closed = 0
        while self._timers and self._timers[0][0] <= now:
            expires, _, entry = heapq.heappop(self._timers)
            if not entry.alive or entry.expires != expires:
                continue
            if isinstance(entry, _Session):
                del self._sessions[entry.seq]
                self._forget_session(entry)
                self._close_fd(entry.fd)
                closed += 1
            else:
                self._forget_binding(entry)
        return closed

    def close_all(self):
        """Close every cached descriptor and forget everything (at exit)."""
        for session in self._sessions.values():
            session.alive = False
            self._close_fd(session.fd)
        self._sessions.clear()
        self.endpoints.clear()
        self.destinations.clear()
        self._timers.clear()

    def _close_fd(self, fd):
        try:
            self._close(fd)
        except OSError:
            pass


__all__ = ["Tables"]
