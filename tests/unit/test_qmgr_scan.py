"""Queue scans a step at a time (qmgr_scan.py) and the queue manager's use of them."""

import os
import time

import pytest

from postclient.config.config import Config
from postclient.queue import qmgr, queuefile
from postclient.queue.qmgr_scan import STEP_ENTRIES, STEP_READS, QueueScan
from postclient.smtp.request import Recipient


def touch(directory, name, mtime=None):
    path = directory / name
    path.write_bytes(b"")
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def walk(scan, now=None, **limits):
    """Every step until the scan is done: the IDs of each step."""
    steps = []
    while scan.running:
        steps.append(scan.step(time.time() if now is None else now, **limits))
    return steps


def test_everything_goes_a_step_at_a_time_in_queue_id_order(tmp_path):
    names = [f"Q{n:05d}" for n in range(2 * STEP_ENTRIES + 7)]
    for name in reversed(names):
        touch(tmp_path, name)
    touch(tmp_path, ".Q99999.tmp")              # a file being written
    scan = QueueScan(str(tmp_path), ordered=True)
    assert not scan.running and scan.step(time.time()) == []
    scan.request(everything=True)
    steps = walk(scan)
    assert [len(step) for step in steps] == [STEP_ENTRIES, STEP_ENTRIES, 7]
    assert sum(steps, []) == names and not scan.running


def test_due_offers_only_files_whose_next_attempt_has_come(tmp_path):
    now = time.time()
    touch(tmp_path, "DUE", now - 10)
    touch(tmp_path, "LATER", now + 600)
    scan = QueueScan(str(tmp_path))
    scan.request(due=True)
    assert sum(walk(scan, now), []) == ["DUE"]


def test_a_file_gone_since_the_listing_is_skipped(tmp_path):
    touch(tmp_path, "A", 0)
    touch(tmp_path, "B", 0)
    scan = QueueScan(str(tmp_path), ordered=True)
    scan.request(due=True)
    first = scan.step(time.time(), entries=1)
    os.unlink(tmp_path / "B")
    assert first == ["A"] and sum(walk(scan), []) == []


def test_site_checks_read_a_bounded_number_of_files_per_step(tmp_path):
    for n in range(2 * STEP_READS + 3):
        touch(tmp_path, f"Q{n:03d}", time.time() + 600)
    asked = []

    def concerns(path, sites):
        asked.append((os.path.basename(path), sites))
        return path.endswith(("7", "41"))

    scan = QueueScan(str(tmp_path), concerns=concerns, ordered=True)
    scan.request(sites=["Example.COM"])
    steps = walk(scan)
    assert [len(step) for step in steps] == [2, 2, 1]      # Q007, Q017 | Q027, Q037 | Q041
    assert len(asked) == 2 * STEP_READS + 3
    assert {sites for _, sites in asked} == {frozenset({"example.com"})}


def test_a_request_during_a_scan_becomes_one_more_scan_after_it(tmp_path):
    now = time.time()
    for n in range(STEP_ENTRIES + 1):
        touch(tmp_path, f"Q{n:04d}", now + 600)     # not due
    touch(tmp_path, "Q0000", now - 1)               # due
    scan = QueueScan(str(tmp_path), ordered=True)
    scan.request(due=True)
    assert scan.step(now) == ["Q0000"]
    touch(tmp_path, "ZNEW", now + 600)              # after the listing
    for _ in range(3):
        scan.request(everything=True)               # a flush, three times
    scan.request(due=True)
    # the running scan goes on to its end as it was asked (nothing more is due) ...
    assert scan.step(now) == []
    # ... then exactly one more scan, everything: the new file too, each file once
    rescan = sum(walk(scan, now), [])
    assert len(rescan) == STEP_ENTRIES + 2 and rescan[-1] == "ZNEW"
    assert len(set(rescan)) == len(rescan) and not scan.running


def test_a_missing_directory_is_an_empty_scan(tmp_path):
    scan = QueueScan(str(tmp_path / "nowhere"))
    scan.request(everything=True)
    assert scan.step(time.time()) == [] and not scan.running


@pytest.mark.parametrize("ordered", [True, False])
def test_an_unreadable_directory_is_an_empty_scan_warned_once(tmp_path, caplog, ordered):
    """A file where the directory belongs (as root, permissions cannot make one
    unreadable): no exception, one warning for two scans, and once the directory is
    back its mail is offered with a note."""
    caplog.set_level("INFO", logger="postclient")
    directory = tmp_path / "deferred"
    directory.write_bytes(b"not a directory")
    scan = QueueScan(str(directory), ordered=ordered)
    for _ in range(2):
        scan.request(everything=True)
        assert sum(walk(scan), []) == [] and not scan.running
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"cannot read queue directory {directory}: Not a directory; "
                        "its mail waits there until it can be read"]
    directory.unlink()
    directory.mkdir()
    touch(directory, "Q1")
    scan.request(everything=True)
    assert sum(walk(scan), []) == ["Q1"] and scan.trouble is None
    assert f"queue directory {directory} can be read again" in caplog.text
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1


def test_a_file_that_cannot_be_looked_at_is_skipped_with_a_warning(tmp_path, caplog):
    touch(tmp_path, "A", 0)
    os.symlink("LOOP", tmp_path / "LOOP")       # stat(): ELOOP
    touch(tmp_path, "Z", 0)
    scan = QueueScan(str(tmp_path), ordered=True)
    scan.request(due=True)
    assert sum(walk(scan), []) == ["A", "Z"]
    assert f"cannot look at queue file {tmp_path}/LOOP: Too many levels of symbolic links" \
        in caplog.text


def test_names_already_offered_are_passed_over_without_a_look(tmp_path, caplog, monkeypatch):
    for name in ("A", "B", "C"):
        touch(tmp_path, name, 0)
    os.symlink("OFFERED_LOOP", tmp_path / "OFFERED_LOOP")    # a look would warn (ELOOP)
    looked = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: looked.append(os.path.basename(path))
                        or real_stat(path, *a, **k))
    scan = QueueScan(str(tmp_path), ordered=True, offered={"B", "OFFERED_LOOP"}.__contains__)
    scan.request(due=True)
    assert sum(walk(scan), []) == ["A", "C"]
    assert looked == ["A", "C"] and "OFFERED_LOOP" not in caplog.text
    scan.request(everything=True)               # a flush offers everything; the caller dedupes
    assert sum(walk(scan), []) == ["A", "B", "C", "OFFERED_LOOP"]


# --- the queue manager ----------------------------------------------------------------------

@pytest.fixture
def manager(tmp_path):
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path / 'q'}\n")
    for name in ("incoming", "active", "deferred", "hold", "corrupt", "bounce", "defer", "trace"):
        (tmp_path / "q" / name).mkdir(parents=True)
    config = Config.load(str(tmp_path))
    return qmgr.QueueManager(config, str(tmp_path / "q"))


def test_a_large_deferred_queue_is_looked_at_a_step_per_loop_pass(manager, tmp_path):
    deferred = tmp_path / "q" / "deferred"
    later = time.time() + 3600
    for n in range(3 * STEP_ENTRIES):
        touch(deferred, f"Q{n:05d}", later)
    touch(deferred, "Q00000", time.time() - 1)
    manager.scan_deferred()
    looked = []                 # entries looked at, after each pass
    while manager.scanning():
        manager.scan_step(time.time())
        looked.append(manager.deferred_scan.position)
    assert looked[0] == STEP_ENTRIES                        # not the whole directory at once
    assert max(b - a for a, b in zip([0] + looked, looked)) <= STEP_ENTRIES
    assert looked[-1] == 3 * STEP_ENTRIES and list(manager.candidates) == [("deferred", "Q00000")]


def test_scans_pause_while_enough_files_wait_for_room(manager, tmp_path, monkeypatch):
    monkeypatch.setattr(qmgr, "CANDIDATE_LIMIT", STEP_ENTRIES + 50)
    incoming = tmp_path / "q" / "incoming"
    for n in range(3 * STEP_ENTRIES):
        touch(incoming, f"Q{n:05d}")
    manager.scan_incoming()
    for _ in range(5):
        manager.scan_step(time.time())
    assert len(manager.candidates) == STEP_ENTRIES + 50 and not manager.scanning()
    for _ in range(100):
        manager.candidates.popleft()            # activated meanwhile
    assert manager.scanning()
    manager.scan_step(time.time())
    assert len(manager.candidates) == STEP_ENTRIES + 50
    offered = [queue_id for _, queue_id in manager.candidates]
    assert offered == sorted(offered) and offered[0] == "Q00100"


def test_a_due_scan_does_not_look_at_deferred_mail_already_offered_or_active(manager, tmp_path,
                                                                           monkeypatch):
    deferred = tmp_path / "q" / "deferred"
    for n in range(5):
        touch(deferred, f"Q{n}", time.time() - 1)
    manager.flush()                             # all five offered without a look
    while manager.scanning():
        manager.scan_step(time.time())
    assert len(manager.candidates) == 5
    manager.active["Q0"] = object()             # one is active meanwhile
    manager.candidates.popleft()
    manager.candidate_ids.discard(("deferred", "Q0"))
    looked = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: looked.append(path) or real_stat(path, *a, **k))
    touch(deferred, "QNEW", time.time() - 1)
    manager.scan_deferred()
    while manager.scanning():
        manager.scan_step(time.time())
    assert looked == [str(deferred / "QNEW")]
    assert list(manager.candidates)[-1] == ("deferred", "QNEW") and len(manager.candidates) == 5


def test_flush_site_offers_only_mail_for_that_site(manager, tmp_path):
    deferred = str(tmp_path / "q" / "deferred")
    later = time.time() + 3600
    for queue_id, recipient in (("QA", "a@one.example"), ("QB", "b@two.example"),
                                ("QC", "c@TWO.example")):
        queuefile.write_queue_file(deferred, queue_id, sender="s@example.com",
                                   recipients=[Recipient(recipient)], content=b"x\r\n",
                                   arrival_time=time.time())
        os.utime(os.path.join(deferred, queue_id), (later, later))
    manager.flush("Two.Example")
    while manager.scanning():
        manager.scan_step(time.time())
    assert sorted(manager.candidates) == [("deferred", "QB"), ("deferred", "QC")]


def test_an_unreadable_active_directory_does_not_stop_the_queue_manager(manager, tmp_path,
                                                                      caplog):
    """Recovery reports it; new mail is still scanned and offered."""
    active = tmp_path / "q" / "active"
    active.rmdir()
    active.write_bytes(b"")
    manager.recover_active()
    assert f"cannot read queue directory {active}: Not a directory" in caplog.text
    touch(tmp_path / "q" / "incoming", "QNEW")
    manager.scan_incoming()
    while manager.scanning():
        manager.scan_step(time.time())
    assert list(manager.candidates) == [("incoming", "QNEW")]
