"""Stop: children get the stop bound to finish, then SIGKILL, through the System object."""

import signal

import pytest

from postclient.master.master import Master
from tests.unit.master_fakes import FakeSystem, make_service


@pytest.fixture
def master(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    system = FakeSystem()
    master = Master("/nonexistent", system=system, stop_timeout=5)
    service = make_service("echo unix - - n - 0 echo")
    master.services[service.key] = service
    return master


def test_children_get_the_stop_bound_then_are_killed(master):
    system, service = master.system, next(iter(master.services.values()))
    pids = [master.spawner.spawn(service, system.now) for _ in range(2)]
    master.handle_term(signal.SIGTERM)
    assert master.stopping and service.stopping
    assert service.listen_socket is None           # no new clients
    system.now += 4.9
    master._timers(system.now)
    assert system.killed == []
    system.now += 0.2
    master._timers(system.now)
    assert system.killed == [(pid, signal.SIGKILL) for pid in pids]
    master._timers(system.now + 10)                # once only
    assert len(system.killed) == 2


def test_a_second_stop_signal_kills_at_once(master):
    system, service = master.system, next(iter(master.services.values()))
    pid = master.spawner.spawn(service, system.now)
    master.handle_term(signal.SIGTERM)
    assert system.killed == []
    master.handle_term(signal.SIGINT)
    assert system.killed == [(pid, signal.SIGKILL)]


def test_no_reload_while_stopping(master):
    master.handle_term(signal.SIGTERM)
    master.handle_hup()                            # would need main.cf: must not even read it


def test_poll_timeout_is_the_nearest_timer(master):
    system, service = master.system, next(iter(master.services.values()))
    assert master._poll_timeout(system.now) == 60_000
    service.throttle(system.now)                   # service_throttle_time: 60 s
    service.wakeup_at = system.now + 2.5
    assert master._poll_timeout(system.now) == 2501
