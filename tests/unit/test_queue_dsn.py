"""Bounce, delay and success notices parse as RFC 3464 reports with the right fields."""

import email
import email.policy

import pytest

from postclient.queue import dsn
from postclient.queue.statuslog import StatusRecord

ORIGINAL = (b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: lunch?\r\n"
            b"Message-Id: <m1@example.com>\r\n\r\nAre you free?\r\n\xc3\xa9\r\n")
BOUNCED = StatusRecord(recipient="bob@example.net", original="Bob@Example.net", orcpt="rfc822;Bob@Example.net",
                       status="bounced", dsn="5.1.1", relay="mx.example.net[192.0.2.7]:25",
                       reply="550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown",
                       text="host mx.example.net[192.0.2.7] said: 550 5.1.1 <bob@example.net>: "
                            "Recipient address rejected: User unknown (in reply to RCPT TO command)")


def parse(data):
    assert b"\n" not in data.replace(b"\r\n", b"")          # CRLF only
    return email.message_from_bytes(data, policy=email.policy.compat32)


def build(kind="bounce", **extra):
    values = dict(queue_id="0660CF1CE689CF05CFD000", sender="alice@example.com",
                  arrival_time=1795000000, records=[BOUNCED], content=ORIGINAL,
                  myhostname="relay.example.org", now=1795000100)
    values.update(extra)
    return parse(dsn.build_notice(kind, **values))


def report_blocks(message):
    part = [p for p in message.walk() if p.get_content_type() == "message/delivery-status"][0]
    return [dict(block.items()) for block in part.get_payload()]


def test_bounce_is_a_delivery_status_report():
    message = build(envid="ENV-1")
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    human, status, returned = message.get_payload()
    assert "could not\nbe delivered" in human.get_payload().replace("\r\n", "\n")
    assert "<bob@example.net>: host mx.example.net[192.0.2.7] said: 550 5.1.1" in human.get_payload()
    per_message, per_recipient = report_blocks(message)
    assert per_message["Reporting-MTA"] == "dns; relay.example.org"
    assert per_message["Original-Envelope-Id"] == "ENV-1"
    assert per_message["Arrival-Date"] == email.utils.formatdate(1795000000)
    assert per_recipient["Final-Recipient"] == "rfc822; bob@example.net"
    assert per_recipient["Original-Recipient"] == "rfc822;Bob@Example.net"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Remote-MTA"] == "dns; mx.example.net"
    assert per_recipient["Diagnostic-Code"].startswith("smtp; 550 5.1.1 <bob@example.net>")
    assert returned.get_content_type() == "message/rfc822"
    inner = returned.get_payload()[0]
    assert inner["Subject"] == "lunch?" and inner["Message-Id"] == "<m1@example.com>"
    assert "Are you free?" in inner.get_payload()


@pytest.mark.parametrize("options", [{"ret": "HDRS"}, {"bounce_size_limit": 10}])
def test_headers_only_when_asked_or_too_big(options):
    message = build(**options)
    returned = message.get_payload()[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Subject: lunch?" in returned.get_payload()
    assert "Are you free?" not in returned.get_payload()


def test_delay_notice():
    record = StatusRecord(recipient="carol@example.net", status="deferred", dsn="4.4.1",
                          text="connect to mx.example.net[192.0.2.7]:25: Connection refused", time=1795003600)
    message = build("delay", records=[record], delay=4 * 3600, lifetime=5 * 86400)
    assert message["Subject"] == "Delayed Mail (still being retried)"
    human = message.get_payload()[0].get_payload()
    assert "THIS IS A WARNING ONLY" in human
    assert "could not be delivered for 4 hours" in human and "until it is 5 days old" in human
    _, block = report_blocks(message)
    assert block["Action"] == "delayed" and block["Status"] == "4.4.1"
    assert block["Diagnostic-Code"].startswith("X-Postfix; connect to")
    assert message.get_payload()[2].get_content_type() == "text/rfc822-headers"


def test_success_notice_relayed_or_delivered():
    relayed = StatusRecord(recipient="dan@example.net", status="sent", dsn="2.0.0",
                           relay="mx.example.net[192.0.2.7]:25", reply="250 2.0.0 Ok: queued as X")
    delivered = StatusRecord(recipient="erin@example.net", status="delivered", dsn="2.0.0")
    message = build("success", records=[relayed, delivered])
    assert message["Subject"] == "Successful Mail Delivery Report"
    _, first, second = report_blocks(message)
    assert (first["Action"], second["Action"]) == ("relayed", "delivered")


def test_notice_recipient_rules():
    class Config:
        def get(self, name):
            return {"2bounce_notice_recipient": "postmaster"}[name]
    assert dsn.notice_recipient("bounce", "a@b", Config()) == "a@b"
    assert dsn.notice_recipient("bounce", "", Config()) == "postmaster"
    assert dsn.notice_recipient("delay", "", Config()) is None
    assert dsn.notice_recipient("success", "", Config()) is None


def test_refuses_nonsense():
    with pytest.raises(ValueError):
        build("panic")
    with pytest.raises(ValueError):
        build(records=[])
