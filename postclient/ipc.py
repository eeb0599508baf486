"""Internal protocol framing: small attribute lists over UNIX stream sockets.

Exports send_message(), receive_message(), announce(), expect_protocol(),
connect_unix(), close_fds(), encode_message(), MessageReader, check_protocol(),
IpcError, IpcClosed, MAX_MESSAGE and MAX_FDS.  Reads nothing
itself: callers pass deadlines built from ipc_timeout or
connection_cache_protocol_timeout.

A message is a 4-byte big-endian length and that many bytes of a JSON
object (an "attribute list").  File descriptors (scache) travel with the
first byte of the message as SCM_RIGHTS ancillary data.  Every read and
write is bounded in size (MAX_MESSAGE) and in time (an absolute deadline on
time.monotonic()); a peer that sends too much, too slowly or nonsense gets
IpcError and is disconnected, never trusted.  On accept the server first
announces ``{"protocol": NAME, "version": N}`` so that a client talking to
the wrong service, or an incompatible one, notices at once.
"""

import json
import socket
import struct
import time

MAX_MESSAGE = 1024 * 1024
MAX_FDS = 4
_HEADER = struct.Struct(">I")


class IpcError(Exception):
    """The peer went away, timed out, or sent something that is not a valid message."""


class IpcClosed(IpcError):
    """The peer closed the connection cleanly between two messages."""


def _remaining(deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise IpcError("timeout")
    return left


def encode_message(attributes):
    """One attribute list (a dict) as it goes on the wire: length, then JSON."""
    payload = json.dumps(attributes, separators=(",", ":")).encode("utf-8", "surrogateescape")
    if len(payload) > MAX_MESSAGE:
        raise IpcError(f"message of {len(payload)} bytes exceeds the {MAX_MESSAGE}-byte limit")
    return _HEADER.pack(len(payload)) + payload


def _decode(payload):
    try:
        attributes = json.loads(payload.decode("utf-8", "surrogateescape"))
    except ValueError:
        raise IpcError("malformed message (not a JSON object)") from None
    if not isinstance(attributes, dict):
        raise IpcError("malformed message (not an attribute list)")
    return attributes


class MessageReader:
    """Attribute lists out of bytes that come in pieces (a non-blocking socket).

    feed() what was read; next_message() gives each complete message once,
    None until more bytes come, and IpcError for an over-size or malformed
    one.  ``partial`` says whether bytes of an unfinished message wait, so a
    peer that closes there can be told apart from one that closes between
    messages.
    """

    def __init__(self):
        self._buffer = bytearray()

    def feed(self, data):
        self._buffer += data

    @property
    def partial(self):
        return bool(self._buffer)

    def next_message(self):
        if len(self._buffer) < _HEADER.size:
            return None
        (length,) = _HEADER.unpack_from(self._buffer)
        if length > MAX_MESSAGE:
            raise IpcError(f"message of {length} bytes exceeds the {MAX_MESSAGE}-byte limit")
        end = _HEADER.size + length
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[_HEADER.size:end])
        del self._buffer[:end]
        return _decode(payload)


def send_message(sock, attributes, deadline, fds=()):
    """Send one attribute list (a dict), optionally with file descriptors."""
    data = encode_message(attributes)
    try:
        sock.settimeout(_remaining(deadline))
        if fds:
            sent = socket.send_fds(sock, [data], list(fds))
            data = data[sent:]
        while data:
            sock.settimeout(_remaining(deadline))
            sent = sock.send(data)
            data = data[sent:]
    except socket.timeout:
        raise IpcError("timeout") from None
    except OSError as error:
        raise IpcError(f"write error: {error.strerror or error}") from None


def _receive_exactly(sock, size, deadline, want_fds):
    chunks = []
    fds = []
    got = 0
    while got < size:
        try:
            sock.settimeout(_remaining(deadline))
            if want_fds and not got:
                data, new_fds, flags, _ = socket.recv_fds(sock, size - got, MAX_FDS)
                fds.extend(new_fds)
                if flags & socket.MSG_CTRUNC:
                    close_fds(fds)
                    raise IpcError("too many file descriptors in one message")
            else:
                data = sock.recv(size - got)
        except socket.timeout:
            close_fds(fds)
            raise IpcError("timeout") from None
        except OSError as error:
            close_fds(fds)
            raise IpcError(f"read error: {error.strerror or error}") from None
        if not data:
            close_fds(fds)
            if got:
                raise IpcError("lost connection in the middle of a message")
            raise IpcClosed("connection closed")
        chunks.append(data)
        got += len(data)
    return b"".join(chunks), fds


def close_fds(fds):
    """Close received descriptors that nobody will use; errors are ignored."""
    for fd in fds:
        try:
            socket.close(fd)
        except OSError:
            pass


def receive_message(sock, deadline, want_fds=False):
    """One attribute list; with ``want_fds`` returns (attributes, [fd]) instead.

    Received descriptors belong to the caller, who must close them.
    """
    header, fds = _receive_exactly(sock, _HEADER.size, deadline, want_fds)
    (length,) = _HEADER.unpack(header)
    if length > MAX_MESSAGE:
        close_fds(fds)
        raise IpcError(f"message of {length} bytes exceeds the {MAX_MESSAGE}-byte limit")
    try:
        payload, _ = _receive_exactly(sock, length, deadline, False)
    except IpcClosed:
        raise IpcError("lost connection in the middle of a message") from None
    try:
        attributes = _decode(payload)
    except IpcError:
        close_fds(fds)
        raise
    return (attributes, fds) if want_fds else attributes


def announce(sock, protocol, version, deadline):
    """Server side: say which protocol this socket speaks."""
    send_message(sock, {"protocol": protocol, "version": version}, deadline)


def expect_protocol(sock, protocol, version, deadline):
    """Client side: read the server's announcement; IpcError if it is not ``protocol``."""
    check_protocol(receive_message(sock, deadline), protocol, version)


def check_protocol(hello, protocol, version):
    """IpcError unless the announcement ``hello`` names ``protocol`` ``version``."""
    if hello.get("protocol") != protocol or hello.get("version") != version:
        raise IpcError(f"expected protocol {protocol} version {version}, "
                       f"got {hello.get('protocol')!r} version {hello.get('version')!r}")


def connect_unix(path, deadline):
    """A connected UNIX stream socket to ``path``; IpcError when nobody listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(_remaining(deadline))
        sock.connect(path)
    except (OSError, IpcError) as error:
        sock.close()
        raise IpcError(f"connect to {path}: {getattr(error, 'strerror', None) or error}") from None
    return sock


__all__ = ["send_message", "receive_message", "announce", "expect_protocol", "connect_unix",
           "close_fds", "encode_message", "MessageReader", "check_protocol", "IpcError",
           "IpcClosed", "MAX_MESSAGE", "MAX_FDS"]
