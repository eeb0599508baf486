"""The scache service: one process that holds idle SMTP/LMTP connections for the others.

Exports run(context) (a "multi" service for the child skeleton, see
postclient/server/registry.py), Server and Statistics.  Reads
connection_cache_ttl_limit, connection_cache_status_update_time and
connection_cache_protocol_timeout, plus max_idle from the context.

One process, many clients, one selectors loop (Postfix's multi_server +
scache.c).  On accept the server announces ``{"protocol": "scache",
"version": 1}``; each client then sends requests one at a time and gets one
reply each (docs/protocols.md, "scache protocol"):

  save_endp {ttl, label, properties} + one fd    -> {status}
  find_endp {label}                              -> {status, properties} [+ fd]
  save_dest {ttl, label, properties, endp_label} -> {status}
  find_dest {label}                -> {status, dest_properties, endp_properties} [+ fd]

Status 0 OK, 1 BAD (malformed request: the client is answered and kept),
2 FAIL (nothing cached under that label).  The tables are in tables.py.

Nothing a client sends is trusted (DESIGN.md, "Protocols between
processes"):
  - a request is read with bounded recvmsg() calls that never go past the end
    of the current message, so the descriptors that arrive belong to that
    message; at most ipc.MAX_FDS per message, MAX_REQUEST bytes, and the
    whole request (and the whole reply) within
    connection_cache_protocol_timeout, or the client is disconnected;
  - anything that is not a framed JSON attribute list ends the connection;
  - every descriptor received is either stored (save_endp with exactly one
    socket) or closed at once; every descriptor handed out is closed here as
    soon as it has been sent (or when its client goes away);
  - at most ``max_sessions`` descriptors are cached (the oldest is dropped to
    make room) and at most ``max_clients`` clients are connected, both
    derived from the descriptor limit (RLIMIT_NOFILE, raised if allowed).

The process ends when the lifeline reads EOF (the master is gone, reloading
or stopping), or after max_idle seconds without any client; statistics are
logged every connection_cache_status_update_time and at exit, in Postfix's
words ("statistics: domain lookup hits=N miss=N success=N%", ...).
"""

import array
import errno
import json
import logging
import os
import resource
import selectors
import socket
import stat
import struct
import time

from .. import ipc
from . import (FIND_DEST, FIND_ENDP, MAX_LABEL, MAX_PROPERTIES, MAX_REQUEST, PROTOCOL, SAVE_DEST,
               SAVE_ENDP, STATUS_BAD, STATUS_FAIL, STATUS_OK, VERSION, WAKEUP)
from .tables import Tables

log = logging.getLogger("postclient.scache")

MAX_CACHED = 1000          # cached descriptors, at most (fewer if RLIMIT_NOFILE is low)
MAX_CLIENTS = 1000         # connected clients, at most (idem)
FD_RESERVE = 32            # descriptors kept for the listen socket, logging, the lifeline...
_HEADER = struct.Struct(">I")
_INT_SIZE = array.array("i").itemsize


class Statistics:
    """Postfix scache's counters: lookups and the largest table sizes per interval."""

    def __init__(self, clock=time.time):
        self.clock = clock
        self.reset()

    def reset(self):
        self.start = self.clock()
        self.dest_hits = self.dest_miss = 0
        self.endp_hits = self.endp_miss = 0
        self.max_dests = self.max_endps = self.max_sessions = 0

    def saw(self, tables):
        self.max_dests = max(self.max_dests, tables.destination_count)
        self.max_endps = max(self.max_endps, tables.endpoint_count)
        self.max_sessions = max(self.max_sessions, tables.session_count)

    def lines(self):
        """The lines Postfix's scache_status_dump() logs (none for an idle interval)."""
        lines = []
        if not (self.dest_hits or self.dest_miss or self.endp_hits or self.endp_miss
                or self.max_dests or self.max_endps or self.max_sessions):
            return lines
        lines.append("statistics: start interval "
                     + time.strftime("%b %d %H:%M:%S", time.localtime(self.start)))
        if self.dest_hits or self.dest_miss:
            lines.append(f"statistics: domain lookup hits={self.dest_hits} miss={self.dest_miss} "
                         f"success={self.dest_hits * 100 // (self.dest_hits + self.dest_miss)}%")
        if self.endp_hits or self.endp_miss:
            lines.append(f"statistics: address lookup hits={self.endp_hits} miss={self.endp_miss} "
                         f"success={self.endp_hits * 100 // (self.endp_hits + self.endp_miss)}%")
        if self.max_dests or self.max_endps or self.max_sessions:
            lines.append(f"statistics: max simultaneous domains={self.max_dests} "
                         f"addresses={self.max_endps} connection={self.max_sessions}")
        return lines

    def dump(self):
        for line in self.lines():
            log.info("%s", line)
        self.reset()


class _BadRequest(Exception):
    """A well-framed request with wrong attributes: answered with STATUS_BAD."""


class _Client:
    """One connected client: a request being read, or a reply being written."""

    def __init__(self, sock, number):
        self.sock = sock
        self.fileno = sock.fileno()
        self.number = number            # for log lines
        self.header = bytearray()
        self.length = None              # payload length, once the header is in
        self.payload = bytearray()
        self.fds = []                   # received with the current request
        self.out = bytearray()
        self.out_fds = []               # to send with the first byte of ``out``
        self.deadline = None            # while a request or a reply is in flight
        self.want_write = False         # registered for EVENT_WRITE (a reply is stuck)

    @property
    def writing(self):
        return bool(self.out)

    def reading_started(self):
        return bool(self.header)

    def release(self):
        ipc.close_fds(self.fds + self.out_fds)
        self.fds, self.out_fds = [], []
        try:
            self.sock.close()
        except OSError:
            pass


def _descriptor_budget():
    """(max_sessions, max_clients) that fit in RLIMIT_NOFILE, raising the soft limit if we may."""
    wanted = MAX_CACHED + MAX_CLIENTS + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    budget = wanted if soft == resource.RLIM_INFINITY else max(2, soft - FD_RESERVE)
    sessions = min(MAX_CACHED, max(1, budget // 2))
    clients = min(MAX_CLIENTS, max(1, budget - sessions))
    return sessions, clients


class Server:
    """The event loop; run() in production, or drive it from tests with a stand-in context."""

    def __init__(self, config, listen_socket, lifeline_fd=None, *, max_idle=0,
                 report_taken=None, report_available=None, max_sessions=None, max_clients=None):
        self.ttl_limit = config.get("connection_cache_ttl_limit")
        self.status_update_time = config.get("connection_cache_status_update_time")
        self.timeout = config.get("connection_cache_protocol_timeout")
        budget_sessions, budget_clients = _descriptor_budget()
        self.max_sessions = max_sessions or budget_sessions
        self.max_clients = max_clients or budget_clients
        self.tables = Tables(self.ttl_limit, self.max_sessions)
        self.stats = Statistics()
        self.listen_socket = listen_socket
        self.lifeline_fd = lifeline_fd
        self.max_idle = max_idle
        self.report_taken = report_taken or (lambda: True)
        self.report_available = report_available or (lambda: True)
        self.clients = {}                       # fileno -> _Client
        self.selector = selectors.DefaultSelector()
        self._numbers = 0
        self._stopping = False
        self._warned_full = 0.0

    # --- the loop -----------------------------------------------------------------------
    def serve(self):
        """Serve until the lifeline closes, max_idle passes without clients, or stop()."""
        self.listen_socket.setblocking(False)
        self.selector.register(self.listen_socket, selectors.EVENT_READ, "listen")
        if self.lifeline_fd is not None:
            self.selector.register(self.lifeline_fd, selectors.EVENT_READ, "lifeline")
        next_status = time.monotonic() + self.status_update_time
        idle_since = time.monotonic()
        try:
            while not self._stopping:
                now = time.monotonic()
                if now >= next_status:
                    self.stats.dump()
                    next_status = now + self.status_update_time
                if self.clients:
                    idle_since = now
                elif self.max_idle and now - idle_since >= self.max_idle:
                    log.debug("idle timeout -- exiting")
                    break
                wake = [next_status]
                if self.max_idle and not self.clients:
                    wake.append(idle_since + self.max_idle)
                expiry = self.tables.next_expiry()
                if expiry is not None:
                    wake.append(expiry)
                wake.extend(c.deadline for c in self.clients.values() if c.deadline is not None)
                timeout = max(0.0, min(wake) - time.monotonic())
                for key, mask in self.selector.select(timeout):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "lifeline":
                        log.debug("master disconnect -- exiting")
                        self._stopping = True
                    else:
                        client = self.clients.get(key.fd)
                        if client is not None:
                            self._serve_client(client, mask)
                self.tables.expire()
                self._enforce_deadlines()
        finally:
            self._shutdown()

    def stop(self):
        self._stopping = True

    def _shutdown(self):
        for client in list(self.clients.values()):
            self._drop(client)
        self.tables.close_all()
        self.stats.dump()
        try:
            self.selector.close()
        except Exception:
            pass

    # --- clients --------------------------------------------------------------------------
    def _accept(self):
        try:
            sock, _ = self.listen_socket.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            log.warning("accept connection: %s", error.strerror or error)
            if error.errno in (errno.EMFILE, errno.ENFILE):
                time.sleep(0.1)     # let a client or an expiry free a descriptor
            return
        self.report_taken()
        try:
            if len(self.clients) >= self.max_clients:
                log.warning("too many clients (%d); refusing a connection", len(self.clients))
                sock.close()
                return
            self._numbers += 1
            client = _Client(sock, self._numbers)
            sock.setblocking(False)
            self.clients[client.fileno] = client
            self.selector.register(sock, selectors.EVENT_READ)
            self._send(client, {"protocol": PROTOCOL, "version": VERSION})
        finally:
            if not self.report_available():
                self._stopping = True       # the master is gone

    def _drop(self, client):
        self.clients.pop(client.fileno, None)
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.release()

    def _disconnect(self, client, reason):
        log.warning("scache client %d: %s; disconnecting", client.number, reason)
        self._drop(client)

    def _enforce_deadlines(self):
        now = time.monotonic()
        for client in list(self.clients.values()):
            if client.deadline is not None and now >= client.deadline:
                self._disconnect(client, "timeout while sending a reply" if client.writing
                                 else "timeout while receiving a request")

    def _serve_client(self, client, mask):
        try:
            if mask & selectors.EVENT_WRITE:
                self._flush(client)
            elif mask & selectors.EVENT_READ:
                self._read(client)
        except Exception as error:      # one client's trouble must not take the cache down
            log.error("scache client %d: %s: %s; disconnecting", client.number,
                      type(error).__name__, error)
            self._drop(client)

    # --- reading one request --------------------------------------------------------------
    def _read(self, client):
        """Read what is there of the current request, never past its end; handle it when complete."""
        while True:
            if client.length is None:
                want = _HEADER.size - len(client.header)
            else:
                want = client.length - len(client.payload)
            try:
                data, ancdata, flags, _ = client.sock.recvmsg(
                    want, socket.CMSG_SPACE(ipc.MAX_FDS * _INT_SIZE))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if client.reading_started():
                    log.warning("scache client %d: read error: %s", client.number,
                                error.strerror or error)
                self._drop(client)
                return
            fds = self._descriptors(ancdata)
            client.fds.extend(fds)
            if flags & socket.MSG_CTRUNC or len(client.fds) > ipc.MAX_FDS:
                self._disconnect(client, "too many file descriptors in one request")
                return
            if not data:
                if client.reading_started() or client.fds:
                    self._disconnect(client, "lost connection in the middle of a request")
                else:
                    self._drop(client)          # a clean goodbye between requests
                return
            if client.deadline is None:
                client.deadline = time.monotonic() + self.timeout
            if client.length is None:
                client.header += data
                if len(client.header) < _HEADER.size:
                    continue
                (client.length,) = _HEADER.unpack(client.header)
                if client.length > MAX_REQUEST:
                    self._disconnect(client, f"request of {client.length} bytes exceeds the "
                                             f"{MAX_REQUEST}-byte limit")
                    return
                if client.length:
                    continue
            else:
                client.payload += data
                if len(client.payload) < client.length:
                    continue
            self._complete(client)
            return

    @staticmethod
    def _descriptors(ancdata):
        fds = array.array("i")
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[:len(data) - len(data) % _INT_SIZE])
        return list(fds)

    def _complete(self, client):
        payload, fds = bytes(client.payload), client.fds
        client.header, client.length, client.payload, client.fds = bytearray(), None, bytearray(), []
        client.deadline = None
        try:
            request = json.loads(payload.decode("utf-8"))
        except ValueError:
            request = None
        if not isinstance(request, dict):
            ipc.close_fds(fds)
            self._disconnect(client, "malformed request (not an attribute list)")
            return
        kind = request.get("request")
        if kind == WAKEUP:
            ipc.close_fds(fds)
            self._drop(client)
            return
        try:
            reply, out_fds = self._handle(kind, request, fds)
        except _BadRequest as error:
            ipc.close_fds(fds)
            log.warning("scache client %d: %s: bad or missing request parameter: %s",
                        client.number, kind if isinstance(kind, str) else "request", error)
            reply, out_fds = {"status": STATUS_BAD, "reason": str(error)}, []
        self._send(client, reply, out_fds)

    # --- the requests -----------------------------------------------------------------------
    def _handle(self, kind, request, fds):
        """(reply, fds to send); consumes ``fds`` (stores or closes them); _BadRequest if malformed."""
        if kind == SAVE_ENDP:
            ttl, label, properties = self._attributes(request, ttl=int, label=str, properties=str)
            if len(fds) != 1:
                raise _BadRequest(f"expected one file descriptor, got {len(fds)}")
            if not self._is_stream_socket(fds[0]):
                raise _BadRequest("the file descriptor is not a stream socket")
            evicted = self.tables.save_endp(ttl, label, properties, fds[0])
            if evicted:
                self._warn_full()
            self.stats.saw(self.tables)
            return {"status": STATUS_OK}, []
        if fds:
            raise _BadRequest(f"unexpected file descriptor with {kind}")
        if kind == FIND_ENDP:
            (label,) = self._attributes(request, label=str)
            found = self.tables.find_endp(label)
            if found is None:
                self.stats.endp_miss += 1
                return {"status": STATUS_FAIL, "properties": ""}, []
            self.stats.endp_hits += 1
            return {"status": STATUS_OK, "properties": found[1]}, [found[0]]
        if kind == SAVE_DEST:
            ttl, label, properties, endp_label = self._attributes(
                request, ttl=int, label=str, properties=str, endp_label=str)
            self.tables.save_dest(ttl, label, properties, endp_label)
            self.stats.saw(self.tables)
            return {"status": STATUS_OK}, []
        if kind == FIND_DEST:
            (label,) = self._attributes(request, label=str)
            found = self.tables.find_dest(label)
            if found is None:
                self.stats.dest_miss += 1
                return {"status": STATUS_FAIL, "dest_properties": "", "endp_properties": ""}, []
            self.stats.dest_hits += 1
            fd, dest_properties, endp_properties = found
            return {"status": STATUS_OK, "dest_properties": dest_properties,
                    "endp_properties": endp_properties}, [fd]
        raise _BadRequest(f"unrecognized request: {kind!r}")

    @staticmethod
    def _attributes(request, **types):
        """The named attributes, checked (Postfix's ATTR_FLAG_STRICT: nothing more, nothing less)."""
        extra = set(request) - set(types) - {"request"}
        if extra:
            raise _BadRequest(f"unexpected attribute {sorted(extra)[0]!r}")
        values = []
        for name, kind in types.items():
            value = request.get(name)
            if kind is int:
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise _BadRequest(f"{name} must be a positive integer")
            elif not isinstance(value, str):
                raise _BadRequest(f"{name} must be a string")
            elif name == "properties":
                if len(value) > MAX_PROPERTIES:
                    raise _BadRequest(f"{name} longer than {MAX_PROPERTIES} characters")
            elif not value or len(value) > MAX_LABEL:
                raise _BadRequest(f"{name} must have 1 to {MAX_LABEL} characters")
            values.append(value)
        return values

    @staticmethod
    def _is_stream_socket(fd):
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                return False
            kind = socket.socket(fileno=os.dup(fd))
        except OSError:
            return False
        try:
            return kind.type == socket.SOCK_STREAM
        finally:
            kind.close()

    def _warn_full(self):
        now = time.monotonic()
        if now - self._warned_full >= 60:
            self._warned_full = now
            log.warning("connection cache full (%d connections): dropping the oldest ones",
                        self.max_sessions)

    # --- writing one reply ---------------------------------------------------------------------
    def _send(self, client, reply, fds=()):
        data = json.dumps(reply, separators=(",", ":")).encode("utf-8")
        client.out += _HEADER.pack(len(data)) + data
        client.out_fds.extend(fds)
        client.deadline = time.monotonic() + self.timeout
        self._flush(client)

    def _flush(self, client):
        while client.out:
            try:
                if client.out_fds:
                    sent = socket.send_fds(client.sock, [bytes(client.out)], client.out_fds)
                    ipc.close_fds(client.out_fds)      # the client has its own copies now
                    client.out_fds = []
                else:
                    sent = client.sock.send(client.out)
            except (BlockingIOError, InterruptedError):
                if not client.want_write:
                    client.want_write = True
                    self.selector.modify(client.sock, selectors.EVENT_WRITE)
                return
            except OSError as error:
                log.warning("scache client %d: write error: %s", client.number,
                            error.strerror or error)
                self._drop(client)
                return
            del client.out[:sent]
        client.deadline = None
        if client.want_write:
            client.want_write = False
            self.selector.modify(client.sock, selectors.EVENT_READ)


def run(context):
    """The "multi" service entry point (postclient/server/registry.py)."""
    server = Server(context.config, context.listen_socket, context.lifeline_fd,
                    max_idle=context.max_idle,
                    report_taken=getattr(context, "report_taken", None),
                    report_available=getattr(context, "report_available", None))
    log.debug("connection cache: ttl limit %ss, at most %d connections and %d clients",
              server.ttl_limit, server.max_sessions, server.max_clients)
    server.serve()


__all__ = ["run", "Server", "Statistics", "MAX_CACHED", "MAX_CLIENTS"]
