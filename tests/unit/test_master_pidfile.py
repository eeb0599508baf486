"""master.pid: one master per queue, found through the lock, not the file's contents."""

import os
import time
from pathlib import Path

import pytest

from postclient.master.pidfile import AlreadyRunning, PidFile, master_pid


def hold_lock_in_child(path):
    """Fork a process that takes the lock; returns (pid, release function)."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            PidFile(path).acquire()
            os.write(ready_w, b"x")
            os.read(go_r, 1)
        finally:
            os._exit(0)
    assert os.read(ready_r, 1) == b"x"

    def release():
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)
    return pid, release


def test_no_file_no_master(tmp_path):
    assert master_pid(str(tmp_path / "master.pid")) is None


def test_a_stale_file_is_not_a_master(tmp_path):
    path = tmp_path / "master.pid"
    path.write_text("     99999\n")
    assert master_pid(str(path)) is None
    PidFile(str(path)).acquire().release()


def test_the_lock_holder_is_the_master_and_a_second_one_is_refused(tmp_path):
    path = str(tmp_path / "master.pid")
    pid, release = hold_lock_in_child(path)
    try:
        assert master_pid(path) == pid
        assert Path(path).read_text() == "%10d\n" % pid
        with pytest.raises(AlreadyRunning, match=f"already running as pid {pid}"):
            PidFile(path).acquire()
    finally:
        release()
    deadline = time.monotonic() + 5
    while master_pid(path) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert master_pid(path) is None
    mine = PidFile(path).acquire()
    assert Path(path).read_text() == "%10d\n" % os.getpid()   # (closing it drops our lock)
    mine.release()
