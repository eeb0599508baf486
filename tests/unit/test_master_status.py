"""Status reports from children: fixed-size records, believed only when consistent."""

import logging

from postclient.master.proto import AVAILABLE, RECORD_SIZE, TAKEN, decode_status, encode_status
from postclient.master.spawn import Spawner
from postclient.master.status import apply_report
from tests.unit.master_fakes import FakeSystem, make_service


def spawned():
    system = FakeSystem()
    service = make_service()
    pid = Spawner(system, lambda s: None).spawn(service, system.now)
    return service, pid


def test_record_round_trip():
    data = encode_status(1234, 7, TAKEN)
    assert len(data) == RECORD_SIZE
    assert decode_status(data) == (1234, 7, TAKEN)


def test_bogus_sizes_do_not_decode():
    record = encode_status(1234, 7, AVAILABLE)
    for data in (b"", record[:-1], record + b"x", b"x" * 100):
        assert decode_status(data) is None


def test_taken_then_available_counts_one_use():
    service, pid = spawned()
    assert service.children[pid].available
    assert apply_report(service, pid, 1, AVAILABLE) == "redundant"   # new children start available
    assert service.children[pid].use_count == 0
    assert apply_report(service, pid, 1, TAKEN) == "taken"
    assert service.available() == 0
    assert apply_report(service, pid, 1, TAKEN) == "redundant"
    assert apply_report(service, pid, 1, AVAILABLE) == "available"
    assert service.available() == 1
    assert service.children[pid].use_count == 1


def test_report_from_an_unknown_pid_is_ignored():
    service, pid = spawned()
    assert apply_report(service, pid + 1, 1, TAKEN) == "unknown pid"
    assert service.available() == 1


def test_report_with_the_wrong_generation_is_ignored(caplog):
    service, pid = spawned()
    with caplog.at_level(logging.INFO, logger="postclient"):
        assert apply_report(service, pid, 99, TAKEN) == "wrong generation"
    assert f"ignoring status update from child pid {pid} generation 99" in caplog.text
    assert service.children[pid].available


def test_unknown_status_is_warned_about_and_ignored(caplog):
    service, pid = spawned()
    with caplog.at_level(logging.WARNING, logger="postclient"):
        assert apply_report(service, pid, 1, 42) == "unknown status"
    assert f"ignoring unknown status 42 allegedly from pid {pid}" in caplog.text
    assert service.children[pid].available
