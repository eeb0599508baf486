"""qmgr.raise_priority(): the queue manager's nice value, with and without permission.

Each probe runs in a forked child, so that the test process keeps its own
priority and user.
"""

import logging
import os

import pytest

from postclient.queue.qmgr import raise_priority


def probe(levels, unprivileged=False):
    """(change of the nice value, what was logged) in a child that calls raise_priority()."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            if unprivileged:
                os.setgid(65534)
                os.setuid(65534)
            lines = []
            handler = logging.Handler()
            handler.emit = lambda record: lines.append(record.getMessage())
            logger = logging.getLogger("postclient.qmgr")
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            before = os.getpriority(os.PRIO_PROCESS, 0)
            raise_priority(levels)
            change = os.getpriority(os.PRIO_PROCESS, 0) - before
            os.write(write_end, f"{change}\n{''.join(lines)}".encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as handle:
        output = handle.read().decode()
    assert os.waitpid(pid, 0)[1] == 0
    change, logged = output.split("\n", 1)
    return int(change), logged


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@needs_root
def test_an_unprivileged_queue_manager_keeps_its_priority_and_says_so():
    change, logged = probe(5, unprivileged=True)
    assert change == 0
    assert "qmgr_priority_boost = 5: not permitted for this user" in logged


@needs_root
def test_root_raises_it_by_the_given_levels():
    assert probe(4) == (-4, "")


def test_zero_leaves_it_alone():
    assert probe(0, unprivileged=os.geteuid() == 0) == (0, "")
