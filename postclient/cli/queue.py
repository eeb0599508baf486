"""``postclient queue``: list and flush the mail queue, like postqueue(1) and mailq.

Exports add_arguments(), run(), read_entry(), format_listing(),
format_json() and EMPTY_SENDER.  Reads queue_directory
and ipc_timeout.

  -p        (default) the mailq listing, in Postfix's format: one block per
            message (queue ID, ``*`` active or ``!`` on hold, content size,
            arrival time, sender), then its pending recipients with the
            current delay reason in parentheses above those it applies to
            (latest defer/ record per recipient); "-- N Kbytes in M
            Requests." or "Mail queue is empty".
  -j        one JSON object per message and line, postqueue -j's members in
            its order: queue_name, queue_id, arrival_time, message_size,
            forced_expire, sender, recipients [{address, delay_reason}].
  -f        ask the queue manager to flush: every deferred message now.
  -s SITE   flush only deferred mail with a recipient at SITE (a domain or
            an [address] literal).

Queues are listed in showq's order (maildrop, active, incoming, deferred,
hold).  Only pending recipients are shown; those with a delay reason come
first, grouped by reason.  A file that fails validation is reported on
standard error with its ID and skipped; moving it to corrupt/ is the queue
manager's job, never the listing's.  The empty sender shows as
MAILER-DAEMON, and characters that are not printable as "?", as Postfix
does.

Exit statuses: 0 success (also when corrupt files were skipped); 64 bad
usage or an invalid site; 69 the queue directory does not exist; 74 a
queue directory cannot be read; 75 (EX_TEMPFAIL) -f/-s could not reach the
queue manager, the mail stays queued (postqueue says 69 there: postclient
uses 75 for "try again later" throughout); 77 permission denied; 78
configuration error.
"""

import json
import os
import re
import sys
import time

from ..queue import manage, queuefile
from ..record import Record
from .common import QMGR_TIMEOUT, UsageError, fatal, load_config, os_error_status, printable, warn

COMMAND = "queue"
EMPTY_SENDER = "MAILER-DAEMON"
EX_TEMPFAIL = 75

# showq_compat.c: the short queue ID format Postfix admins know (our IDs are
# longer than the column; Postfix's own long IDs overflow it too).
_ROW = "{:<11} {:>7} {:<20} {}"
_HEADING = _ROW.format("-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
_RECIPIENT_INDENT = " " * 41
_REASON_WIDTH = 76
_DOMAIN = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*$")


class Entry(Record):
    """One message as the listing shows it."""
    __slots__ = ("queue_name", "queue_id", "arrival_time", "message_size", "sender", "recipients")

    def __init__(self, queue_name, queue_id, arrival_time, message_size, sender, recipients):
        self.queue_name = queue_name
        self.queue_id = queue_id
        self.arrival_time = arrival_time        # whole seconds
        self.message_size = message_size
        self.sender = sender
        self.recipients = recipients            # [(address, delay reason or "")], in listing order


def _reason_text(record):
    return printable(record.text or record.reply or "")


def read_entry(queue_directory, queue_name, queue_id, path):
    """The Entry of one queue file; CorruptQueueFile or OSError as they come."""
    queued = queuefile.read_queue_file(path)
    reasons = manage.current_delay_reasons(queue_directory, queued)
    pending = [(printable(r.address), _reason_text(reasons[r.offset]) if r.offset in reasons else "")
               for r in queued.pending()]
    order = {}
    for _, reason in pending:
        if reason:
            order.setdefault(reason, len(order))
    # With a reason first, grouped by reason in order of first appearance; the rest after.
    pending.sort(key=lambda item: order[item[1]] if item[1] else len(order))
    return Entry(queue_name=queue_name, queue_id=queue_id, arrival_time=int(queued.arrival_time),
                 message_size=queued.content_size,
                 sender=printable(queued.sender) or EMPTY_SENDER, recipients=pending)


def entries(queue_directory, on_problem):
    """Every listable message, in showq order; files that cannot be listed go to
    ``on_problem(queue_name, queue_id, text)`` and are skipped.

    A file that disappears between the directory scan and its reading (the
    queue manager moved or finished it) is skipped silently.
    """
    for queue_name, queue_id, path in manage.walk(queue_directory):
        try:
            yield read_entry(queue_directory, queue_name, queue_id, path)
        except FileNotFoundError:
            continue
        except queuefile.CorruptQueueFile as error:
            on_problem(queue_name, queue_id, f"corrupt queue file ({printable(str(error))})")
        except OSError as error:
            on_problem(queue_name, queue_id, f"cannot read the queue file ({error.strerror or error})")


def _arrival(seconds):
    return time.asctime(time.localtime(seconds))[:20]


def format_message(entry):
    """The lines of one message block of the mailq listing."""
    marker = {"active": "*", "hold": "!"}.get(entry.queue_name, "")
    lines = [_ROW.format(entry.queue_id + marker, entry.message_size, _arrival(entry.arrival_time),
                         entry.sender)]
    shown = ""
    for address, reason in entry.recipients:
        if reason != shown:
            shown = reason
            text = reason or "reason unavailable"
            lines.append(" " * max(0, _REASON_WIDTH - len(text)) + f"({text})")
        lines.append(_RECIPIENT_INDENT + address)
    return lines


def format_listing(all_entries):
    """Yield the mailq listing line by line (without newlines)."""
    count = total = 0
    for entry in all_entries:
        yield _HEADING if count == 0 else ""
        yield from format_message(entry)
        count += 1
        total += entry.message_size
    if count == 0:
        yield "Mail queue is empty"
    else:
        yield ""
        yield f"-- {total // 1024} Kbytes in {count} Request{'' if count == 1 else 's'}."


def format_json(entry):
    """One postqueue -j line (without its newline)."""
    recipients = []
    for address, reason in entry.recipients:
        item = {"address": address}
        if reason:
            item["delay_reason"] = reason
        recipients.append(item)
    return json.dumps({"queue_name": entry.queue_name, "queue_id": entry.queue_id,
                       "arrival_time": entry.arrival_time, "message_size": entry.message_size,
                       "forced_expire": False, "sender": entry.sender, "recipients": recipients},
                      ensure_ascii=False)


def add_arguments(parser):
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("-p", dest="mode", action="store_const", const="list",
                       help="list the queue, like mailq (the default)")
    modes.add_argument("-j", dest="mode", action="store_const", const="json",
                       help="list the queue as JSON lines, like postqueue -j")
    modes.add_argument("-f", dest="mode", action="store_const", const="flush",
                       help="flush: ask the queue manager to retry all deferred mail now")
    modes.add_argument("-s", dest="site", metavar="SITE",
                       help="flush deferred mail for one destination (domain or [address])")


def normalise_site(site):
    """A -s argument as sent to the queue manager; UsageError if it is no destination."""
    if site.startswith("[") and site.endswith("]"):
        import ipaddress    # here: only -s [address] needs it
        inner = site[1:-1]
        try:
            if inner[:5].lower() == "ipv6:":
                return "[IPv6:" + str(ipaddress.IPv6Address(inner[5:])) + "]"
            return "[" + str(ipaddress.IPv4Address(inner)) + "]"
        except ValueError:
            pass
    else:
        lowered = site.lower()
        if len(lowered) <= 255 and _DOMAIN.match(lowered):
            return lowered
    raise UsageError(f"postclient/{COMMAND}: fatal: invalid destination for -s: {printable(site)!r}")


def _queue_directory(args):
    config = load_config(args, COMMAND)
    return config, os.path.abspath(config.expand("queue_directory"))


def _flush(config, queue_directory, request):
    timeout = min(float(config.get("ipc_timeout")), QMGR_TIMEOUT)
    try:
        manage.notify_qmgr(queue_directory, request, timeout)
    except manage.QmgrUnavailable as error:
        warn(COMMAND, f"cannot flush the mail queue: {error}; the mail stays queued and "
                      "will be processed when the queue manager runs")
        return EX_TEMPFAIL
    return 0


def _list(queue_directory, as_json):
    if not os.path.isdir(queue_directory):
        fatal(COMMAND, f"queue listing unavailable: queue directory {queue_directory} does not exist")
        return os.EX_UNAVAILABLE

    def on_problem(queue_name, queue_id, text):
        warn(COMMAND, f"{queue_name}/{queue_id}: {text}; skipped")

    out = sys.stdout
    try:
        found = entries(queue_directory, on_problem)
        if as_json:
            for entry in found:
                out.write(format_json(entry) + "\n")
        else:
            for line in format_listing(found):
                out.write(line + "\n")
    except OSError as error:
        if isinstance(error, BrokenPipeError):
            raise
        out.flush()
        fatal(COMMAND, f"cannot read the queue: {error.strerror or error}"
                       f"{': ' + error.filename if error.filename else ''}")
        return os_error_status(error)
    out.flush()
    return 0


def run(args):
    if args.site is not None:
        site = normalise_site(args.site)
        config, queue_directory = _queue_directory(args)
        return _flush(config, queue_directory, {"request": "flush_site", "site": site})
    config, queue_directory = _queue_directory(args)
    if args.mode == "flush":
        return _flush(config, queue_directory, {"request": "flush"})
    return _list(queue_directory, as_json=args.mode == "json")
