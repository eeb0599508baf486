"""Spawn, reap and throttle decisions of the master, with a fake operating system.

No process is forked here: FakeSystem hands out pids and exit statuses, so
each rule of postfix-behaviour.md section 6 is checked on its own.
"""

import errno
import logging
import signal

import pytest

from postclient.master import avail
from postclient.master.proto import AVAILABLE, TAKEN
from postclient.master.spawn import Spawner
from postclient.master.status import apply_report
from tests.unit.master_fakes import KILLED, ChildRan, FakeSystem, exited, make_service, settings


@pytest.fixture
def system():
    return FakeSystem()


@pytest.fixture
def spawner(system):
    return Spawner(system, child_main=lambda service: None)


def serve_one_client(service, pid):
    generation = service.children[pid].generation
    assert apply_report(service, pid, generation, TAKEN) == "taken"
    assert apply_report(service, pid, generation, AVAILABLE) == "available"


# --- on demand ------------------------------------------------------------------
def test_no_child_before_a_client_waits(system, spawner):
    service = make_service()
    assert avail.wants_listen(service, system.now)
    assert not avail.should_spawn(service, system.now, client_waiting=False)
    assert system.forks == []


def test_one_child_per_waiting_client_while_none_is_available(system, spawner):
    service = make_service("echo unix - - n - 5 echo")
    assert avail.should_spawn(service, system.now, client_waiting=True)
    pid = spawner.spawn(service, system.now)
    assert system.forks == [pid]
    # The new child counts as available: the master leaves the client to it.
    assert service.available() == 1
    assert not avail.wants_listen(service, system.now)
    # Once it reports "taken", a further waiting client gets another child.
    apply_report(service, pid, service.generation, TAKEN)
    assert avail.should_spawn(service, system.now, client_waiting=True)


def test_spawning_stops_at_maxproc(system, spawner):
    service = make_service("echo unix - - n - 2 echo")
    for _ in range(2):
        pid = spawner.spawn(service, system.now)
        apply_report(service, pid, service.generation, TAKEN)
    assert service.total() == 2
    assert not avail.should_spawn(service, system.now, client_waiting=True)
    # A child exits: the service is below its limit again.
    system.child_exits(pid, exited(0))
    spawner.reap(system.now)
    assert avail.should_spawn(service, system.now, client_waiting=True)


def test_maxproc_counts_the_clients_of_threaded_children(system, spawner):
    """smtp_agent_threads: a child serves several clients; maxproc still limits clients."""
    service = make_service("smtp unix - - n - 12 smtp", settings(smtp_agent_threads=5))
    pids = []
    while avail.should_spawn(service, system.now, client_waiting=True):
        pids.append(spawner.spawn(service, system.now))
        apply_report(service, pids[-1], service.generation, TAKEN)
    assert [service.children[pid].threads for pid in pids] == [5, 5, 2]
    assert service.slots() == 12 and service.total() == 3
    system.child_exits(pids[0], exited(0))
    spawner.reap(system.now)
    assert service.next_child_threads() == 5 and avail.should_spawn(service, system.now, True)


@pytest.mark.parametrize("line, main_cf, threads", [
    ("smtp unix - - n - 0 smtp", {}, 5),                                       # the default
    ("lmtp unix - - n - 0 lmtp", {"lmtp_agent_threads": 3}, 3),                # the lmtp mirror
    ("relay unix - - n - 0 smtp -o smtp_agent_threads=2", {}, 2),              # -o per service
    ("smtp unix - - n - 3 smtp", {}, 3),                                       # never past maxproc
    ("smtp unix - - n - 9 smtp", {"smtp_agent_threads": 1}, 1),                # as Postfix
    ("echo unix - - n - 9 echo", {"smtp_agent_threads": 4}, 1),                # not a threaded service
    ("smtp unix - - n - 9 smtp -o smtp_agent_threads=lots", {}, 1),            # the child fails at start
])
def test_threads_of_the_next_child(line, main_cf, threads):
    assert make_service(line, settings(**main_cf)).next_child_threads() == threads


def test_maxproc_zero_is_unlimited(system, spawner):
    service = make_service("echo unix - - n - 0 echo")
    for _ in range(500):
        pid = spawner.spawn(service, system.now)
        apply_report(service, pid, service.generation, TAKEN)
    assert avail.should_spawn(service, system.now, client_waiting=True)


def test_maxproc_dash_is_default_process_limit(system):
    service = make_service("echo unix - - n - - echo", settings(default_process_limit=3))
    assert service.process_limit == 3
    assert make_service("echo unix - - n - - echo").process_limit == 100


# --- throttling -------------------------------------------------------------------
def test_child_failing_before_its_first_client_throttles(system, spawner, caplog):
    service = make_service("broken unix - - n - - nosuch", settings(service_throttle_time="7s"))
    pid = spawner.spawn(service, system.now)
    system.child_exits(pid, exited(1))
    with caplog.at_level(logging.INFO, logger="postclient"):
        spawner.reap(system.now)
    assert [r.getMessage() for r in caplog.records] == [
        f"process postclient/broken pid {pid} exit status 1",
        "postclient/broken: bad command startup -- throttling",
    ]
    assert service.is_throttled(system.now)
    # No fork loop: a client is waiting, but nothing is spawned while throttled...
    assert not avail.wants_listen(service, system.now)
    system.now += 6.9
    assert not avail.should_spawn(service, system.now, client_waiting=True)
    # ...until service_throttle_time has passed.
    system.now += 0.2
    assert service.unthrottle_due(system.now)
    assert avail.should_spawn(service, system.now, client_waiting=True)


def test_killed_by_a_signal_before_its_first_client_throttles(system, spawner, caplog):
    service = make_service()
    pid = spawner.spawn(service, system.now)
    system.child_exits(pid, KILLED)
    with caplog.at_level(logging.WARNING, logger="postclient"):
        spawner.reap(system.now)
    assert f"process postclient/echo pid {pid} killed by signal 9" in caplog.text
    assert service.is_throttled(system.now)


def test_clean_exit_before_any_client_does_not_throttle(system, spawner, caplog):
    # max_idle: a child that was never used exits 0; that is not a failure.
    service = make_service()
    pid = spawner.spawn(service, system.now)
    system.child_exits(pid, exited(0))
    with caplog.at_level(logging.INFO, logger="postclient"):
        spawner.reap(system.now)
    assert caplog.records == []
    assert not service.is_throttled(system.now)


def test_failure_after_serving_a_client_does_not_throttle(system, spawner, caplog):
    service = make_service()
    pid = spawner.spawn(service, system.now)
    serve_one_client(service, pid)
    system.child_exits(pid, exited(1))
    with caplog.at_level(logging.WARNING, logger="postclient"):
        spawner.reap(system.now)
    assert "exit status 1" in caplog.text
    assert "throttling" not in caplog.text
    assert not service.is_throttled(system.now)


def test_taken_without_finishing_is_not_a_served_client(system, spawner):
    # Postfix counts a use when the child is available again: a child that
    # dies during its very first client is a bad start.
    service = make_service()
    pid = spawner.spawn(service, system.now)
    apply_report(service, pid, service.generation, TAKEN)
    system.child_exits(pid, exited(1))
    spawner.reap(system.now)
    assert service.is_throttled(system.now)


def test_throttle_is_logged_once_per_period(system, spawner, caplog):
    service = make_service("echo unix - - n - 0 echo")
    pids = [spawner.spawn(service, system.now) for _ in range(3)]
    for pid in pids:
        system.child_exits(pid, exited(1))
    with caplog.at_level(logging.WARNING, logger="postclient"):
        spawner.reap(system.now)
    assert caplog.text.count("bad command startup -- throttling") == 1
    assert caplog.text.count("exit status 1") == 3


def test_fork_failure_throttles(system, spawner, caplog):
    service = make_service()
    system.fork_error = errno.EAGAIN
    with caplog.at_level(logging.WARNING, logger="postclient"):
        assert spawner.spawn(service, system.now) is None
    assert "postclient/echo: fork: Resource temporarily unavailable -- throttling" in caplog.text
    assert service.total() == 0
    assert service.is_throttled(system.now)


# --- reaping ----------------------------------------------------------------------
def test_reap_collects_every_finished_child_then_stops(system, spawner):
    service = make_service("echo unix - - n - 0 echo")
    pids = [spawner.spawn(service, system.now) for _ in range(3)]
    system.child_exits(pids[0], exited(0))
    system.child_exits(pids[2], exited(0))
    reaped = spawner.reap(system.now)
    assert [child.pid for _, child, _ in reaped] == [pids[0], pids[2]]
    assert set(service.children) == {pids[1]}
    assert system.waitpid_calls == 3     # two children, then "nothing more now"


def test_reap_tolerates_unknown_pids(system, spawner, caplog):
    system.live.add(4242)
    system.child_exits(4242, exited(0))
    with caplog.at_level(logging.INFO, logger="postclient"):
        assert spawner.reap(system.now) == []
    assert "reaped unknown process pid 4242" in caplog.text


def test_reap_without_children(system, spawner):
    assert spawner.reap(system.now) == []


# --- reload, removal, stop -----------------------------------------------------------
def test_retired_children_are_never_available_and_never_throttle(system, spawner):
    service = make_service("echo unix - - n - 2 echo")
    old = spawner.spawn(service, system.now)
    service.new_generation()
    # The old child is still counted against maxproc but no longer available...
    assert service.total() == 1 and service.available() == 0
    assert avail.should_spawn(service, system.now, client_waiting=True)
    # ...its reports (old generation) do not make it available again...
    apply_report(service, old, 1, TAKEN)
    apply_report(service, old, 1, AVAILABLE)
    assert service.available() == 0
    # ...and its exit does not throttle the new generation.
    system.child_exits(old, exited(1))
    spawner.reap(system.now)
    assert not service.is_throttled(system.now)
    new = spawner.spawn(service, system.now)
    assert service.children[new].generation == 2


def test_reload_releases_a_throttle(system, spawner):
    service = make_service()
    service.throttle(system.now)
    service.new_generation()
    assert not service.is_throttled(system.now)


def test_removed_or_stopping_service_spawns_nothing(system):
    for flag in ("removed", "stopping"):
        service = make_service()
        setattr(service, flag, True)
        assert not avail.should_spawn(service, system.now, client_waiting=True)


def test_children_of_a_stopping_service_do_not_throttle(system, spawner):
    service = make_service()
    pid = spawner.spawn(service, system.now)
    service.stopping = True
    system.child_exits(pid, KILLED)
    spawner.reap(system.now)
    assert not service.is_throttled(system.now)


def test_kill_all_goes_through_the_system_object(system, spawner):
    service = make_service("echo unix - - n - 0 echo")
    pids = [spawner.spawn(service, system.now) for _ in range(2)]
    spawner.kill_all(signal.SIGKILL)
    assert system.killed == [(pid, signal.SIGKILL) for pid in pids]


def test_the_child_branch_never_returns_into_master_code(system):
    ran = []
    spawner = Spawner(system, child_main=ran.append)
    service = make_service()
    system.fork_returns_child = True
    with pytest.raises(ChildRan) as stopped:
        spawner.spawn(service, system.now)
    assert ran == [service]
    assert stopped.value.status == 1
    assert service.total() == 0
