"""The queue manager's file worker: loads into active/, removals, and what it reports."""

import fcntl
import os
import threading
import time

import pytest

from postclient.queue import queuefile, statuslog
from postclient.queue.qmgr_files import FileWorker
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
        outcomes = {r.queue_id: r.outcome for r in results(worker, 3)}
    finally:
        os.close(holder)
    assert outcomes == {"GONE": "vanished", "BAD": "corrupt", "LOCKED": "locked"}
    assert os.listdir(queue_dir / "corrupt") == ["BAD"]
    # the locked one waits in deferred/ for locked_backoff, nothing is left in active/
    assert os.listdir(queue_dir / "deferred") == ["LOCKED"] and os.listdir(queue_dir / "active") == []
    assert os.stat(queue_dir / "deferred" / "LOCKED").st_mtime > time.time() + 50


def test_a_removal_takes_the_status_logs_and_reports_a_file_moved_away(queue_dir, worker):
    queue_file(queue_dir, "active", "DONE")
    statuslog.append_status(str(queue_dir), "trace", "DONE", statuslog.StatusRecord(recipient="r@example.com"))
    worker.remove("DONE")
    worker.remove("MOVED")                      # postclient super moved it meanwhile
    (requeued,) = results(worker, 1)
    assert (requeued.queue_id, requeued.outcome) == ("MOVED", "requeued")
    assert os.listdir(queue_dir / "active") == [] and os.listdir(queue_dir / "trace") == []


def test_stop_carries_out_the_removals_already_given(queue_dir):
    files = FileWorker(str(queue_dir), locked_backoff=60, wake=lambda: None).start()
    for n in range(50):
        queue_file(queue_dir, "active", f"R{n}")
        files.remove(f"R{n}")
    files.stop()
    assert os.listdir(queue_dir / "active") == []
