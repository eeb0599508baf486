"""The status record a child sends to the master (both sides use this module).

Exports AVAILABLE, TAKEN, RECORD_SIZE, encode_status() and decode_status().

Every service has one status channel (a SOCK_DGRAM socketpair: the master
reads one end, all of the service's children share the other).  A record is
one datagram of three native 32-bit integers: the child's pid, its
generation and its status, AVAILABLE (ready to accept a client) or TAKEN
(busy with one).  Datagrams keep records apart, so a confused child cannot
desynchronise the channel; the master ignores whatever does not decode
("it's all gossip after all").
"""

import struct

AVAILABLE = 1
TAKEN = 0
_RECORD = struct.Struct("=iIi")
RECORD_SIZE = _RECORD.size


def encode_status(pid, generation, status):
    return _RECORD.pack(pid, generation, status)


def decode_status(data):
    """(pid, generation, status), or None when ``data`` is not one record."""
    if len(data) != RECORD_SIZE:
        return None
    return _RECORD.unpack(data)
