"""What one delivery is asked to do, and what became of each recipient.

Exports Recipient, DeliveryRequest, Status and RecipientResult.

A DeliveryRequest is what the queue manager sends the smtp/lmtp service (and
what ``postclient deliver`` builds from its command line); the engine answers
with one RecipientResult per recipient plus an optional destination status.
Status is a DSN status code with the text Postfix would log in parentheses.
"""

import dataclasses
import time


@dataclasses.dataclass
class Recipient:
    address: str
    original: str = ""      # the address before rewriting (logged as orig_to=)
    orcpt: str = ""         # DSN ORCPT, e.g. "rfc822;user@example.com"
    notify: str = ""        # DSN NOTIFY: "" (unspecified), NEVER, or SUCCESS,FAILURE,DELAY
    offset: int = -1        # offset of this recipient's record in the queue file


@dataclasses.dataclass
class DeliveryRequest:
    queue_id: str
    nexthop: str
    sender: str
    recipients: list
    content: bytes = b""            # the message as stored (header + body), or:
    open_content: object = None     # a callable giving a fresh binary file of the message
    content_size: int = None        # its size, with open_content
    encoding: str = "unknown"       # body encoding: 7bit, 8bit or unknown
    envid: str = ""                 # DSN ENVID
    ret: str = ""                   # DSN RET: FULL, HDRS or ""
    smtputf8: bool = False
    arrival_time: float = dataclasses.field(default_factory=time.time)
    use_cached_connection: bool = False
    store_connection: bool = False
    client: dict = dataclasses.field(default_factory=dict)  # XFORWARD attributes (NAME, ADDR, ...)


@dataclasses.dataclass(frozen=True)
class Status:
    """A DSN status: ``dsn`` like "4.4.1", ``text`` as Postfix logs it in parentheses.

    ``reply`` is the server's reply text when the status came from a server
    (it becomes the DSN Diagnostic-Code), else "".
    """

    dsn: str
    text: str
    reply: str = ""

    @property
    def soft(self):
        return self.dsn.startswith("4")

    @property
    def hard(self):
        return self.dsn.startswith("5")

    def softened(self, dsn=None):
        """The same status made temporary (class 5 -> 4, or the given code)."""
        return dataclasses.replace(self, dsn=dsn or "4" + self.dsn[1:])


@dataclasses.dataclass
class RecipientResult:
    recipient: Recipient
    status: str             # "sent", "deferred" or "bounced"
    dsn: str
    relay: str              # host[addr]:port, or "none"
    text: str
    reply: str = ""         # the server's reply, for the DSN Diagnostic-Code
    server_dsn: bool = False  # sent to a server that announced DSN (it sends success notices)

    def as_json(self):
        return {"recipient": self.recipient.address, "status": self.status, "dsn": self.dsn,
                "relay": self.relay, "text": self.text}
