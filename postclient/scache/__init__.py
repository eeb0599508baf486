"""The connection cache: the scache service and its client (postfix-behaviour.md §5).

Modules: tables.py (the two tables, no I/O), server.py (the service, one
event-driven process), client.py (what the smtp/lmtp service uses).  The
protocol is documented in docs/protocols.md ("scache protocol").

Exports the protocol constants shared by both sides: PROTOCOL, VERSION, the
request names, the status codes STATUS_OK (0), STATUS_BAD (1, a malformed
request) and STATUS_FAIL (2, nothing cached under that label), and the size
limits MAX_LABEL and MAX_PROPERTIES.  Reads nothing.
"""

PROTOCOL = "scache"
VERSION = 1

SAVE_ENDP = "save_endp"
FIND_ENDP = "find_endp"
SAVE_DEST = "save_dest"
FIND_DEST = "find_dest"
WAKEUP = "wakeup"          # the master's wakeup timer; answered by hanging up

STATUS_OK = 0
STATUS_BAD = 1
STATUS_FAIL = 2

MAX_LABEL = 1024           # characters in a destination or endpoint label
MAX_PROPERTIES = 16384     # characters in a properties string
MAX_REQUEST = 64 * 1024    # bytes in one request (far below ipc.MAX_MESSAGE)

__all__ = ["PROTOCOL", "VERSION", "SAVE_ENDP", "FIND_ENDP", "SAVE_DEST", "FIND_DEST", "WAKEUP",
           "STATUS_OK", "STATUS_BAD", "STATUS_FAIL", "MAX_LABEL", "MAX_PROPERTIES", "MAX_REQUEST"]
