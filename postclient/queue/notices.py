"""Sending notices: bounce, delay and success reports built from the status logs.

Exports Notices (one per queue manager) with bounce(), delay() and
success().  Reads myhostname, mail_name, bounce_size_limit,
2bounce_notice_recipient, bounce_notice_recipient, delay_notice_recipient,
notify_classes, maximal_queue_lifetime.

A notice is an ordinary message with the null sender, written durably into
incoming/ like any submission, so it is delivered, retried and listed like
the rest.  Who asked for what (RFC 3461 NOTIFY): bounce records go to the
sender when NOTIFY is unset or has FAILURE, delay records when it is unset or
has DELAY, success records only with SUCCESS; NEVER means nothing.  A bounce
of a null-sender message goes to 2bounce_notice_recipient; one that cannot
be delivered there either is dropped, so notices never loop.  With
notify_classes containing "bounce" or "delay", the postmaster gets a copy
with the headers only.
"""

import logging
import os
import time

from . import dsn, queuefile
from .qid import new_queue_id

log = logging.getLogger("postclient.queue")


def _wants(record, word):
    notify = (record.notify or "").upper()
    if "NEVER" in notify:
        return False
    if word == "SUCCESS":
        return "SUCCESS" in notify
    return not notify or word in notify


class Notices:
    def __init__(self, config, queue_directory):
        self.config = config
        self.queue_directory = queue_directory
        self.myhostname = config.get("myhostname")

    def _send(self, kind, queued, records, to, ret=None, **extra):
        with queuefile.open_content(queued) as handle:
            content = handle.read(max(self.config.get("bounce_size_limit"), 0) + 65536)
        message = dsn.build_notice(kind, queue_id=queued.queue_id, sender=queued.sender,
                                   arrival_time=queued.arrival_time, records=records,
                                   content=content, ret=queued.ret if ret is None else ret,
                                   envid=queued.envid, myhostname=self.myhostname,
                                   mail_name=self.config.get("mail_name"),
                                   bounce_size_limit=self.config.get("bounce_size_limit"),
                                   to=to, **extra)
        notice_id = new_queue_id()
        encoding = "7bit" if message.isascii() else "8bit"
        queuefile.write_queue_file(os.path.join(self.queue_directory, "incoming"), notice_id,
                                   sender="", recipients=[to], content=message,
                                   arrival_time=time.time(), encoding=encoding)
        log.info("%s: sender %s notification: %s", queued.queue_id,
                 {"bounce": "non-delivery", "delay": "delay", "success": "delivery status"}[kind],
                 notice_id)
        return notice_id

    def _postmaster_copy(self, kind, queued, records, parameter):
        if kind in self.config.get("notify_classes"):
            self._send(kind, queued, records, self.config.get(parameter), ret="HDRS")

    def bounce(self, queued, records):
        """A non-delivery notice for ``records`` (those that asked for one)."""
        wanted = [r for r in records if _wants(r, "FAILURE")]
        sent = []
        if wanted:
            to = dsn.notice_recipient("bounce", queued.sender, self.config)
            double_bounce = self.config.get("2bounce_notice_recipient")
            if not queued.sender and all(r.recipient == double_bounce for r in records):
                log.warning("%s: undeliverable postmaster notification discarded", queued.queue_id)
            elif to:
                sent.append(self._send("bounce", queued, wanted, to))
        if records:
            self._postmaster_copy("bounce", queued, records, "bounce_notice_recipient")
        return sent

    def delay(self, queued, records, delay):
        wanted = [r for r in records if _wants(r, "DELAY")]
        to = dsn.notice_recipient("delay", queued.sender, self.config)
        if not wanted or not to:
            return []
        lifetime = self.config.get("maximal_queue_lifetime")
        notice = self._send("delay", queued, wanted, to, delay=delay, lifetime=lifetime)
        self._postmaster_copy("delay", queued, wanted, "delay_notice_recipient")
        return [notice]

    def success(self, queued, records):
        wanted = [r for r in records if _wants(r, "SUCCESS")]
        to = dsn.notice_recipient("success", queued.sender, self.config)
        if not wanted or not to:
            return []
        return [self._send("success", queued, wanted, to)]
