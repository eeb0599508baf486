"""Delivery status notifications: bounce, delay and success notices (RFC 3464).

Exports build_notice(), NoticeKind values ("bounce", "delay", "success") and
notice_recipient().  Reads nothing itself: the queue manager passes
myhostname, mail_name, bounce_size_limit and the times.

A notice is a ``multipart/report; report-type=delivery-status`` message, as
Postfix sends it: a human-readable part, a ``message/delivery-status`` part
with Reporting-MTA and Arrival-Date and, per recipient, Final-Recipient,
Original-Recipient, Action, Status, Remote-MTA and Diagnostic-Code, and the
original message (``message/rfc822``, RET=FULL or unspecified) or only its
headers (``text/rfc822-headers``, RET=HDRS, or when the message is larger
than bounce_size_limit).  Records come from the message's status logs
(statuslog.StatusRecord).
"""

import email.utils
import time

from .qid import new_queue_id

ACTIONS = {"bounce": "failed", "delay": "delayed"}
SUBJECTS = {
    "bounce": "Undelivered Mail Returned to Sender",
    "delay": "Delayed Mail (still being retried)",
    "success": "Successful Mail Delivery Report",
}
INTROS = {
    "bounce": ("I'm sorry to have to inform you that your message could not\n"
               "be delivered to one or more recipients. It's attached below.\n\n"
               "For further assistance, please send mail to postmaster.\n\n"
               "If you do so, please include this problem report. You can\n"
               "delete your own text from the attached returned message."),
    "delay": ("####################################################################\n"
              "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
              "####################################################################\n\n"
              "Your message could not be delivered for {delay}.\n"
              "It will be retried until it is {lifetime} old."),
    "success": ("Your message was successfully delivered to the destination(s)\n"
                "listed below. If the message was delivered to mailbox you will\n"
                "receive no further notifications. Otherwise you may still receive\n"
                "notifications of mail delivery errors from other systems."),
}


def _address_type(address):
    return "utf-8" if not address.isascii() else "rfc822"


def _duration(seconds):
    seconds = int(seconds)
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit[:-1] if count == 1 else unit}"
    return f"{seconds} seconds"


def _header_block(content):
    end = content.find(b"\r\n\r\n")
    end_lf = content.find(b"\n\n")
    ends = [e for e in (end, end_lf) if e >= 0]
    return content[:min(ends)] + b"\n" if ends else content


def _crlf(text):
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def _action(kind, record):
    if kind != "success":
        return ACTIONS[kind]
    return "delivered" if record.status == "delivered" else "relayed"


def _recipient_fields(kind, record):
    lines = [f"Final-Recipient: {_address_type(record.recipient)}; {record.recipient}"]
    if record.orcpt:
        orcpt_type, _, orcpt = record.orcpt.partition(";")
        lines.append(f"Original-Recipient: {orcpt_type.strip()};{orcpt.strip()}")
    elif record.original and record.original != record.recipient:
        lines.append(f"Original-Recipient: rfc822;{record.original}")
    lines.append(f"Action: {_action(kind, record)}")
    lines.append(f"Status: {record.dsn or ('5.0.0' if kind == 'bounce' else '4.0.0')}")
    if record.relay and record.relay != "none":
        lines.append(f"Remote-MTA: dns; {record.relay.split('[')[0]}")
    if record.reply:
        lines.append(f"Diagnostic-Code: smtp; {record.reply}")
    elif record.text and kind != "success":
        lines.append(f"Diagnostic-Code: X-Postfix; {record.text}")
    if kind == "delay" and record.time:
        lines.append(f"Last-Attempt-Date: {email.utils.formatdate(record.time)}")
    return "\n".join(lines)


def _human_line(record):
    reason = record.text or record.dsn
    return f"<{record.recipient}>: {reason}"


def build_notice(kind, *, queue_id, sender, arrival_time, records, content, ret="",
                 myhostname, mail_name="postclient", bounce_size_limit=50000,
                 delay=None, lifetime=None, envid="", to=None, now=None):
    """The complete notice message as bytes (CRLF line endings), ready to queue.

    ``to`` defaults to ``sender``; ``content`` is the original message.
    """
    if kind not in SUBJECTS:
        raise ValueError(f"unknown notice kind {kind!r}")
    if not records:
        raise ValueError("a notice needs at least one recipient record")
    now = time.time() if now is None else now
    boundary = f"{new_queue_id(now)}.{int(now)}/{myhostname}"
    headers_only = ret.upper() == "HDRS" or len(content) > bounce_size_limit or kind != "bounce"
    intro = INTROS[kind].format(delay=_duration(delay or 0), lifetime=_duration(lifetime or 0))
    human = (f"This is the mail system at host {myhostname}.\n\n{intro}\n\n"
             f"                   The mail system\n\n" +
             "\n".join(_human_line(r) for r in records) + "\n")
    report = [f"Reporting-MTA: dns; {myhostname}",
              f"X-Postfix-Queue-ID: {queue_id}",
              f"X-Postfix-Sender: rfc822; {sender}"]
    if envid:
        report.append(f"Original-Envelope-Id: {envid}")
    report.append(f"Arrival-Date: {email.utils.formatdate(arrival_time)}")
    blocks = ["\n".join(report)] + [_recipient_fields(kind, r) for r in records]
    if headers_only:
        returned_type, description = "text/rfc822-headers", "Undelivered Message Headers"
        returned = _header_block(content)
    else:
        returned_type, description = "message/rfc822", "Undelivered Message"
        returned = content
    if kind != "bounce":
        description = "Message Headers"
    head = (f"From: MAILER-DAEMON@{myhostname} (Mail Delivery System)\n"
            f"To: {to or sender}\n"
            f"Subject: {SUBJECTS[kind]}\n"
            f"Date: {email.utils.formatdate(now, localtime=True)}\n"
            f"Message-Id: <{new_queue_id(now)}@{myhostname}>\n"
            "Auto-Submitted: auto-replied\n"
            "MIME-Version: 1.0\n"
            f"Content-Type: multipart/report; report-type=delivery-status;\n"
            f"\tboundary=\"{boundary}\"\n"
            "Content-Transfer-Encoding: 8bit\n\n"
            "This is a MIME-encapsulated message.\n\n"
            f"--{boundary}\n"
            f"Content-Description: Notification\n"
            f"Content-Type: text/plain; charset=us-ascii\n\n"
            f"{human}\n"
            f"--{boundary}\n"
            f"Content-Description: Delivery report\n"
            f"Content-Type: message/delivery-status\n\n" +
            "\n\n".join(blocks) + "\n\n"
            f"--{boundary}\n"
            f"Content-Description: {description}\n"
            f"Content-Type: {returned_type}\n"
            "Content-Transfer-Encoding: 8bit\n\n")
    tail = f"\n--{boundary}--\n"
    body = returned.replace(b"\r\n", b"\n")
    if not body.endswith(b"\n"):
        body += b"\n"
    return (_crlf(head).encode("utf-8", "surrogateescape") + body.replace(b"\n", b"\r\n") +
            _crlf(tail).encode())


def notice_recipient(kind, sender, config):
    """Who gets a notice: the sender, or for the null sender the double-bounce address.

    Returns None when no notice is to be sent (a delay or success notice for the
    null sender, as in Postfix).
    """
    if sender:
        return sender
    if kind == "bounce":
        return config.get("2bounce_notice_recipient")
    return None
