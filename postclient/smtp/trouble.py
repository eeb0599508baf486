"""What failures mean for recipients: keep for the next server, defer or bounce.

Exports Trouble (one per delivery request) and the local-status builders
(connect_failed, lost_connection, timed_out, ...).  Reads soft_bounce.

This is the one place that applies the table of postfix-behaviour.md §1.6:

  - A recipient either stays KEPT (to be tried on the next server) or is
    DROPPED with a final result for this delivery: sent, bounced or deferred.
  - A soft (4.x.x) failure on a server that is not the final one keeps the
    recipient and logs nothing.  On the final server it defers.
  - A hard (5.x.x) failure bounces at once, even on a non-final server
    (soft_bounce = yes turns every bounce into a deferral).
  - I/O errors and site failures on the final server also mark the
    destination "down", so the queue manager suspends it.
  - After the last server, recipients still kept get the latest recorded
    status (Postfix's "why"), or 4.3.0 "server unavailable or unable to receive mail".  A hard
    status there (a DNS failure for the relay, say) becomes 4.3.5 when the
    last site was a fallback relay or the first one was relayhost: a local
    misconfiguration must not bounce mail.

Security rule 1 holds here: only ``sent()`` produces "sent", and nothing
produces it for a recipient whose delivery was not confirmed.
"""

from .request import RecipientResult, Status

UNAVAILABLE = Status("4.3.0", "server unavailable or unable to receive mail")


def connect_failed(endpoint, reason):
    return Status("4.4.1", f"connect to {endpoint}: {reason}")


def lost_connection(host, state):
    return Status("4.4.2", f"lost connection with {host} while {state}")


def timed_out(host, state):
    return Status("4.4.2", f"conversation with {host} timed out while {state}")


def local_error(text):
    return Status("4.3.0", text)


class Trouble:
    """Per-recipient bookkeeping for one delivery request."""

    def __init__(self, recipients, soft_bounce=False):
        self.recipients = list(recipients)
        self.soft_bounce = soft_bounce
        self.results = {}            # index -> RecipientResult (dropped recipients)
        self.last = None             # (Status, relay) of the latest failure that kept someone
        self.destination_down = None  # Status that suspends the destination, or None

    # --- which recipients are still open ----------------------------------------
    def pending(self):
        """Indexes of recipients that are still kept for some server."""
        return [i for i in range(len(self.recipients)) if i not in self.results]

    @property
    def finished(self) -> bool:
        return len(self.results) == len(self.recipients)

    # --- outcomes -----------------------------------------------------------------
    def sent(self, index, relay, text, dsn="2.0.0"):
        """The server took responsibility: 2xx to "." (SMTP) or this recipient's 2xx (LMTP)."""
        self._drop(index, "sent", Status(dsn, text), relay)

    def fail(self, indexes, status, relay, final_server, suspend=False):
        """Apply a failure to some recipients (§1.6); returns the indexes kept."""
        kept = []
        for index in indexes:
            if index in self.results:
                continue
            if status.soft and not final_server:
                self.last = (status, relay)
                kept.append(index)
            elif status.soft or self.soft_bounce:
                self._drop(index, "deferred", status.softened() if status.hard else status, relay)
            else:
                self._drop(index, "bounced", status, relay)
        if suspend and final_server and status.soft:
            self.destination_down = status
        return kept

    def fail_all(self, status, relay, final_server, suspend=False):
        """A failure of the site, the session or the whole message."""
        return self.fail(self.pending(), status, relay, final_server, suspend)

    def site_failed(self, status, relay="none"):
        """Record a failure that touched no recipient (DNS, connect) for later."""
        self.last = (status, relay)

    def finish(self, relayhost_or_fallback=False):
        """Give every recipient still kept its final result; return all results in order."""
        status, relay = self.last or (UNAVAILABLE, "none")
        if status.hard and relayhost_or_fallback:
            status = status.softened("4.3.5")
        self.fail(self.pending(), status, relay, final_server=True)
        return [self.results[i] for i in range(len(self.recipients))]

    def _drop(self, index, outcome, status, relay):
        if index in self.results:
            raise AssertionError(f"recipient {index} already has a result")
        self.results[index] = RecipientResult(self.recipients[index], outcome, status.dsn, relay,
                                              status.text, status.reply)
