"""The queue manager's file worker: loads into active/, removals, and what it reports."""

import fcntl
import os
import threading
import time

import pytest

from postclient.queue import queuefile, statuslog
from postclient.queue.qmgr_files import REPORT_EVERY, FileWorker, Loaded
from postclient.smtp.request import Recipient


@pytest.fixture
def queue_dir(tmp_path):
    for name in ("incoming", "active", "deferred", "corrupt", "bounce", "defer", "trace"):
        (tmp_path / name).mkdir()
    return tmp_path


@pytest.fixture
def worker(queue_dir):
    woken = threading.Event()
    files = FileWorker(str(queue_dir), locked_backoff=60, wake=woken.set).start()
    files.woken = woken
    yield files
    files.stop()


def queue_file(queue_dir, name, queue_id):
    queuefile.write_queue_file(str(queue_dir / name), queue_id, sender="s@example.com",
                               recipients=[Recipient("r@example.com")], content=b"x\r\n",
                               arrival_time=time.time())


def results(files, count, timeout=5):
    found, deadline = [], time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        found += files.results(10)
        time.sleep(0.01)
    return found


def test_a_load_moves_the_file_into_active_and_reads_it(queue_dir, worker):
    queue_file(queue_dir, "incoming", "Q1")
    worker.load("incoming", "Q1")
    time.sleep(0.1)
    assert os.listdir(queue_dir / "incoming") == ["Q1"]     # waits for the loop's hand-over
    worker.hand_over()
    (loaded,) = results(worker, 1)
    assert (loaded.source, loaded.queue_id, loaded.outcome) == ("incoming", "Q1", "ok")
    assert loaded.queued.sender == "s@example.com" and loaded.queued.path == str(queue_dir / "active" / "Q1")
    assert os.listdir(queue_dir / "active") == ["Q1"] and worker.woken.is_set()


def test_a_vanished_a_corrupt_and_a_locked_file(queue_dir, worker):
    queue_file(queue_dir, "deferred", "BAD")
    with open(queue_dir / "deferred" / "BAD", "r+b") as handle:
        handle.truncate(20)
    queue_file(queue_dir, "deferred", "LOCKED")
    holder = os.open(queue_dir / "deferred" / "LOCKED", os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_SH)          # an agent of an earlier queue manager
    try:
        for queue_id in ("GONE", "BAD", "LOCKED"):
            worker.load("deferred", queue_id)
        worker.hand_over()
        outcomes = {r.queue_id: r.outcome for r in results(worker, 3)}
    finally:
        os.close(holder)
    assert outcomes == {"GONE": "vanished", "BAD": "corrupt", "LOCKED": "locked"}
    assert os.listdir(queue_dir / "corrupt") == ["BAD"]
    # the locked one waits in deferred/ for locked_backoff, nothing is left in active/
    assert os.listdir(queue_dir / "deferred") == ["LOCKED"] and os.listdir(queue_dir / "active") == []
    assert os.stat(queue_dir / "deferred" / "LOCKED").st_mtime > time.time() + 50


def test_a_pass_of_loads_is_one_task_reported_in_groups_with_one_wakeup_each(queue_dir):
    wakeups = []
    files = FileWorker(str(queue_dir), locked_backoff=60, wake=lambda: wakeups.append(files.done.qsize()))
    count = 2 * REPORT_EVERY + 5
    ids = [f"L{n:03d}" for n in range(count)]
    for queue_id in ids:
        queue_file(queue_dir, "incoming", queue_id)
        files.load("incoming", queue_id)
    files.hand_over()
    assert files.loads.qsize() == 1             # one task for the whole pass
    files.start()
    found = results(files, count)
    files.stop()
    assert [r.queue_id for r in found] == ids and {r.outcome for r in found} == {"ok"}
    assert sorted(os.listdir(queue_dir / "active")) == ids
    # a wakeup per group whose results found nothing older waiting, never one per file
    assert 1 <= len(wakeups) <= 3
    assert all(size <= REPORT_EVERY for size in wakeups)


def test_the_loop_is_woken_whenever_results_would_wait_unseen(queue_dir):
    """The loop may take some results and go to sleep at any moment: a group
    put after it looked must wake it (no lost wakeup), one behind older
    results waiting need not."""
    files = FileWorker(str(queue_dir), locked_backoff=60, wake=lambda: woken.append(1))
    woken = []
    first = [Loaded("incoming", "A", "ok"), Loaded("incoming", "B", "ok")]
    files._report(first)
    assert woken == [1]                         # the queue was empty
    files._report([Loaded("incoming", "C", "ok")])
    assert woken == [1]                         # A and B still wait: the loop was woken for them
    assert [r.queue_id for r in files.results(2)] == ["A", "B"]
    files._report([Loaded("incoming", "D", "ok")])
    assert woken == [1]                         # C still waits
    files.results(10)
    files._report([Loaded("incoming", "E", "ok")])
    assert woken == [1, 1]                      # all taken: the loop may sleep, so wake it
    files._report([])
    assert woken == [1, 1]


def test_a_load_that_fails_unexpectedly_is_reported_and_the_rest_go_on(queue_dir, monkeypatch):
    files = FileWorker(str(queue_dir), locked_backoff=60, wake=lambda: None)
    real = files._load

    def load(source, queue_id):
        if queue_id == "BROKEN":
            raise RuntimeError("surprise")
        return real(source, queue_id)

    monkeypatch.setattr(files, "_load", load)
    for queue_id in ("OK1", "BROKEN", "OK2"):
        queue_file(queue_dir, "incoming", queue_id)
        files.load("incoming", queue_id)
    files.hand_over()
    files.start()
    found = results(files, 3)
    files.stop()
    assert [(r.queue_id, r.outcome) for r in found] == [("OK1", "ok"), ("BROKEN", "error"), ("OK2", "ok")]


def test_a_removal_takes_the_status_logs_and_reports_a_file_moved_away(queue_dir, worker):
    queue_file(queue_dir, "active", "DONE")
    statuslog.append_status(str(queue_dir), "trace", "DONE", statuslog.StatusRecord(recipient="r@example.com"))
    worker.remove("DONE")
    worker.remove("MOVED")                      # postclient super moved it meanwhile
    time.sleep(0.1)
    assert os.listdir(queue_dir / "active") == ["DONE"]     # waits for the loop's hand-over
    worker.hand_over()
    (requeued,) = results(worker, 1)
    assert (requeued.queue_id, requeued.outcome) == ("MOVED", "requeued")
    assert os.listdir(queue_dir / "active") == [] and os.listdir(queue_dir / "trace") == []


def test_a_batch_of_removals_is_one_task_and_logs_every_removal(queue_dir, tmp_path):
    from postclient import log
    from postclient.config.config import Config
    maillog = tmp_path / "maillog"
    (tmp_path / "main.cf").write_text(f"maillog_file = {maillog}\n")
    log.setup_logging(Config.load(str(tmp_path), process_name="qmgr"), "qmgr")
    files = FileWorker(str(queue_dir), locked_backoff=60, wake=lambda: None)
    ids = [f"B{n}" for n in range(30)]
    for queue_id in ids:
        queue_file(queue_dir, "active", queue_id)
        statuslog.append_status(str(queue_dir), "defer", queue_id,
                                statuslog.StatusRecord(recipient="r@example.com"))
        files.remove(queue_id)
    (queue_dir / "active" / "B7").unlink()      # moved away meanwhile
    (queue_dir / "active" / "B9").unlink()
    (queue_dir / "active" / "B9").mkdir()       # cannot be unlinked: not removed, logs kept
    files.hand_over()
    assert files.removals.qsize() == 1          # one task for the whole pass
    files.start()
    files.stop()
    assert os.listdir(queue_dir / "active") == ["B9"]
    # the logs stay where the message lives on: moved away (B7) or not removed (B9)
    assert sorted(os.listdir(queue_dir / "defer")) == ["B7", "B9"]
    found = files.results(100)
    assert [(r.queue_id, r.outcome) for r in found] == [("B7", "requeued")]
    removed = [line.split(": ")[-2] for line in maillog.read_text().splitlines()
               if line.endswith(": removed")]
    assert removed == [queue_id for queue_id in ids if queue_id not in ("B7", "B9")]
    assert "B9: cannot remove queue file: Is a directory" in maillog.read_text()


def test_stop_carries_out_the_removals_already_given(queue_dir):
    files = FileWorker(str(queue_dir), locked_backoff=60, wake=lambda: None).start()
    for n in range(50):
        queue_file(queue_dir, "active", f"R{n}")
        files.remove(f"R{n}")
    files.stop()
    assert os.listdir(queue_dir / "active") == []
