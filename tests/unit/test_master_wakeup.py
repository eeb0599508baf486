"""master.cf wakeup timers: "N" from start, "N?" only once the service was used."""

from postclient.master import wakeup
from tests.unit.master_fakes import make_service


def test_wakeup_fires_at_once_then_every_n_seconds():
    service = make_service("pickup unix n - n 60 1 echo")
    sent = []
    wakeup.arm(service, 100.0)
    assert wakeup.due(service, 100.0)
    assert wakeup.fire(service, 100.0, send=lambda path: sent.append(path) or True)
    assert sent == ["/queue/private/pickup"]
    assert not wakeup.due(service, 159.9)
    assert wakeup.next_deadline(service) == 160.0
    assert wakeup.due(service, 160.0)


def test_arming_twice_does_not_move_the_timer():
    service = make_service("pickup unix n - n 60 1 echo")
    wakeup.arm(service, 100.0)
    wakeup.fire(service, 100.0, send=lambda path: True)
    wakeup.arm(service, 130.0)
    assert wakeup.next_deadline(service) == 160.0


def test_conditional_wakeup_waits_for_first_use():
    service = make_service("flush unix n - n 30? 1 echo")
    wakeup.arm(service, 100.0)
    assert wakeup.next_deadline(service) is None
    service.add_child(101)              # the first spawn is the first use
    wakeup.arm(service, 105.0)
    assert wakeup.due(service, 105.0)


def test_no_wakeup_column_no_timer():
    service = make_service("echo unix - - n - 1 echo")
    wakeup.arm(service, 100.0)
    assert wakeup.next_deadline(service) is None


def test_stopping_or_removed_service_is_not_woken():
    for flag in ("stopping", "removed"):
        service = make_service("pickup unix n - n 60 1 echo")
        setattr(service, flag, True)
        wakeup.arm(service, 100.0)
        assert wakeup.next_deadline(service) is None


def test_failed_wakeup_is_tried_again_next_period():
    service = make_service("pickup unix n - n 10 1 echo")
    wakeup.arm(service, 0.0)
    assert not wakeup.fire(service, 0.0, send=lambda path: False)
    assert wakeup.next_deadline(service) == 10.0
