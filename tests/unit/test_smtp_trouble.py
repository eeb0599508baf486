"""The §1.6 policy: keep for the next server, defer, or bounce."""

import pytest

from postclient.smtp import trouble
from postclient.smtp.request import Recipient, Status

SOFT = Status("4.2.0", "host mx1[192.0.2.1] said: 450 4.2.0 busy", "450 4.2.0 busy")
HARD = Status("5.1.1", "host mx1[192.0.2.1] said: 550 5.1.1 unknown user", "550 5.1.1 unknown user")
RELAY = "mx1[192.0.2.1]:25"


def make(count=3, soft_bounce=False):
    return trouble.Trouble([Recipient(f"r{i}@example.com") for i in range(count)], soft_bounce)


def outcomes(results):
    return [(r.status, r.dsn) for r in results]


def test_soft_on_non_final_server_keeps_and_logs_nothing():
    t = make()
    assert t.fail([1], SOFT, RELAY, final_server=False) == [1]
    assert t.pending() == [0, 1, 2] and t.results == {}


def test_soft_on_final_server_defers():
    t = make()
    t.fail([1], SOFT, RELAY, final_server=True)
    assert t.results[1].status == "deferred" and t.results[1].dsn == "4.2.0"
    assert t.results[1].relay == RELAY and t.results[1].reply == "450 4.2.0 busy"


def test_hard_bounces_even_on_a_non_final_server():
    t = make()
    assert t.fail([0], HARD, RELAY, final_server=False) == []
    assert t.results[0].status == "bounced" and t.results[0].dsn == "5.1.1"


def test_soft_bounce_turns_bounces_into_deferrals():
    t = make(soft_bounce=True)
    t.fail([0], HARD, RELAY, final_server=False)
    assert (t.results[0].status, t.results[0].dsn) == ("deferred", "4.1.1")


def test_one_rcpt_rejected_others_sent():
    t = make()
    t.fail([1], HARD, RELAY, final_server=False)
    for index in t.pending():
        t.sent(index, RELAY, "250 2.0.0 Ok: queued as X")
    assert outcomes(t.finish()) == [("sent", "2.0.0"), ("bounced", "5.1.1"), ("sent", "2.0.0")]


def test_leftovers_get_the_latest_status():
    t = make(2)
    t.fail_all(SOFT, RELAY, final_server=False)
    t.site_failed(trouble.connect_failed("mx2[192.0.2.2]:25", "Connection refused"))
    results = t.finish()
    assert outcomes(results) == [("deferred", "4.4.1")] * 2
    assert results[0].text == "connect to mx2[192.0.2.2]:25: Connection refused"


def test_nothing_recorded_gives_server_unavailable():
    results = make(1).finish()
    assert outcomes(results) == [("deferred", "4.3.0")]
    assert results[0].text == "server unavailable or unable to receive mail"


@pytest.mark.parametrize("misconfigured, expected", [(False, ("bounced", "5.4.4")), (True, ("deferred", "4.3.5"))])
def test_hard_leftover_becomes_4_3_5_for_relayhost_or_fallback(misconfigured, expected):
    t = make(1)
    t.site_failed(Status("5.4.4", "Host or domain name not found"))
    assert outcomes(t.finish(relayhost_or_fallback=misconfigured)) == [expected]


def test_io_error_on_final_server_suspends_destination():
    t = make(2)
    lost = trouble.lost_connection("mx1[192.0.2.1]", "sending message body")
    t.fail_all(lost, RELAY, final_server=False, suspend=True)
    assert t.destination_down is None
    t.fail_all(lost, RELAY, final_server=True, suspend=True)
    assert t.destination_down == lost
    assert outcomes(t.finish()) == [("deferred", "4.4.2")] * 2


def test_a_recipient_gets_exactly_one_result():
    t = make(1)
    t.sent(0, RELAY, "250 ok")
    with pytest.raises(AssertionError):
        t.sent(0, RELAY, "250 ok")
    t.fail([0], HARD, RELAY, final_server=True)   # already finished: ignored
    assert outcomes(t.finish()) == [("sent", "2.0.0")]


def test_local_status_texts():
    assert trouble.timed_out("h[1.2.3.4]", "sending end of data -- message may be sent more than once").text == \
        "conversation with h[1.2.3.4] timed out while sending end of data -- message may be sent more than once"
    assert trouble.lost_connection("h[1.2.3.4]", "sending RCPT TO").dsn == "4.4.2"
