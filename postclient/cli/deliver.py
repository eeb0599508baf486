"""``postclient deliver``: deliver one message from standard input, now.

  postclient deliver [--lmtp] [--nexthop DEST] [--sender ADDR]
                     [--encoding 7bit|8bit] [--notify LIST] [--envid ID]
                     [--ret FULL|HDRS] RECIPIENT...

Runs the delivery engine in-process, without the queue, using main.cf (``-c``,
``-o``).  Prints one JSON object per recipient per line and writes the
Postfix-format log lines.  The next-hop defaults to relayhost, else each
recipient's domain (recipients are grouped by domain then).  Exit status: 0
all sent, 75 any deferred, 69 any bounced and none deferred, 64 bad usage.
"""

import json
import os
import sys
import uuid

from ..log import setup_logging
from .common import UsageError, load_config

NOTIFY_WORDS = {"SUCCESS", "FAILURE", "DELAY"}


def add_arguments(parser):
    parser.add_argument("--lmtp", action="store_true", help="speak LMTP (lmtp_* parameters)")
    parser.add_argument("--nexthop", metavar="DEST", help="destination (default: relayhost or the recipient's domain)")
    parser.add_argument("--sender", default="", metavar="ADDR", help="envelope sender (default: <>)")
    parser.add_argument("--encoding", choices=("7bit", "8bit"), help="declared body encoding (default: unknown)")
    parser.add_argument("--notify", metavar="LIST", default="", help="DSN NOTIFY: NEVER or SUCCESS,FAILURE,DELAY")
    parser.add_argument("--envid", default="", metavar="ID", help="DSN envelope id")
    parser.add_argument("--ret", type=str.upper, choices=("FULL", "HDRS"), help="DSN RET")
    parser.add_argument("recipients", nargs="*", metavar="RECIPIENT")


def _check_usage(args):
    if not args.recipients:
        raise UsageError("postclient deliver: expected at least one RECIPIENT")
    if args.notify:
        words = {w.strip().upper() for w in args.notify.split(",")}
        if not (words == {"NEVER"} or words <= NOTIFY_WORDS):
            raise UsageError(f'postclient deliver: bad --notify "{args.notify}" '
                             "(expected NEVER or a list of SUCCESS, FAILURE, DELAY)")
    for address in [args.sender] + args.recipients:
        if any(c in address for c in "\r\n\0"):
            raise UsageError("postclient deliver: CR, LF or NUL in an address")


def _groups(args, config):
    """(nexthop, [recipient]) pairs: one delivery per next-hop."""
    nexthop = args.nexthop or config.get("relayhost")
    if nexthop:
        return [(nexthop, list(args.recipients))]
    groups = {}
    for address in args.recipients:
        domain = address.rpartition("@")[2]
        if not domain or "@" not in address:
            raise UsageError(f'postclient deliver: recipient "{address}" has no domain; use --nexthop')
        groups.setdefault(domain.lower(), []).append(address)
    return list(groups.items())


def exit_status(results):
    outcomes = {r.status for r in results}
    if "deferred" in outcomes:
        return os.EX_TEMPFAIL
    if "bounced" in outcomes:
        return os.EX_UNAVAILABLE
    return 0


def run(args):
    from ..smtp import engine
    from ..smtp.request import DeliveryRequest, Recipient

    _check_usage(args)
    protocol = "lmtp" if args.lmtp else "smtp"
    config = load_config(args, "deliver", require_main_cf=False)
    setup_logging(config, protocol, verbose=getattr(args, "verbose", False))
    content = sys.stdin.buffer.read()
    notify = ",".join(w.strip().upper() for w in args.notify.split(",")) if args.notify else ""
    results = []
    for nexthop, addresses in _groups(args, config):
        request = DeliveryRequest(
            queue_id=uuid.uuid4().hex[:12].upper(), nexthop=nexthop, sender=args.sender,
            recipients=[Recipient(a, original=a, notify=notify) for a in addresses],
            content=content, encoding=args.encoding or "unknown", envid=args.envid,
            ret=args.ret or "")
        outcome = engine.deliver(config, request, protocol)
        results.extend(outcome.results)
    for result in results:
        sys.stdout.write(json.dumps(result.as_json()) + "\n")
    sys.stdout.flush()
    return exit_status(results)
