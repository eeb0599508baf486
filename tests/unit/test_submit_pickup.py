"""The pickup service's scan: what it takes from maildrop/ and what it sets aside.

pickup_maildrop() runs directly on a temporary queue (no master, no sockets);
tests/integration/test_sendmail.py runs the service under a real master.
"""

import logging
import os
import time

import pytest

from postclient.log import LOGGER_NAME
from postclient.queue import pickup, queuefile
from postclient.queue.qid import new_queue_id

LIMIT = 10240000


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelname, record.getMessage()))

    def text(self):
        return "\n".join(f"{level}: {line}" for level, line in self.lines)


@pytest.fixture
def logged():
    handler = Records()
    logger = logging.getLogger(LOGGER_NAME)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture
def queue(tmp_path):
    for name in ("incoming", "active", "deferred", "hold", "corrupt", "maildrop"):
        (tmp_path / name).mkdir()
    os.chmod(tmp_path / "maildrop", 0o1733)
    return tmp_path


def drop(queue, queue_id=None, **overrides):
    values = dict(sender="user@example.com", recipients=["a@example.net"],
                  content=b"Subject: s\n\nbody\n", arrival_time=time.time(), encoding="7bit")
    values.update(overrides)
    queue_id = queue_id or new_queue_id()
    return queuefile.write_queue_file(str(queue / "maildrop"), queue_id, **values), queue_id


def names(queue, directory):
    return sorted(os.listdir(queue / directory))


def test_a_sound_file_moves_to_incoming_with_its_queue_id(queue, logged):
    path, queue_id = drop(queue)
    with open(path, "rb") as handle:
        original = handle.read()
    dropped_inode = os.stat(path).st_ino
    assert pickup.pickup_maildrop(str(queue), LIMIT) == 1
    assert names(queue, "maildrop") == [] and names(queue, "incoming") == [queue_id]
    target = queue / "incoming" / queue_id
    assert target.read_bytes() == original
    assert os.stat(target).st_ino != dropped_inode     # a private copy, not the user's file
    assert queuefile.read_queue_file(str(target)).sender == "user@example.com"
    assert ("INFO", f"{queue_id}: uid={os.getuid()} from=<user@example.com>") in logged.lines


def test_every_file_is_taken_in_one_wakeup(queue):
    ids = [drop(queue)[1] for _ in range(3)]
    assert pickup.pickup_maildrop(str(queue), LIMIT) == 3
    assert names(queue, "incoming") == sorted(ids)


def test_files_still_being_written_are_left_alone(queue):
    temporary = queue / "maildrop" / f".{new_queue_id()}.tmp"
    temporary.write_bytes(b"PCQ1\npartial")
    assert pickup.pickup_maildrop(str(queue), LIMIT) == 0
    assert temporary.exists() and names(queue, "corrupt") == [] and names(queue, "incoming") == []


def test_a_stale_temporary_file_is_removed(queue, logged):
    temporary = queue / "maildrop" / f".{new_queue_id()}.tmp"
    temporary.write_bytes(b"PCQ1\npartial")
    old = time.time() - pickup.STALE_TEMPORARY_AGE - 60
    os.utime(temporary, (old, old))
    pickup.pickup_maildrop(str(queue), LIMIT)
    assert not temporary.exists()
    assert "removed" in logged.text()


def rejected(queue, logged, name, reason):
    assert name not in names(queue, "maildrop")
    assert name in names(queue, "corrupt")
    assert names(queue, "incoming") == []
    assert reason in logged.text(), logged.text()


def test_garbage_goes_to_corrupt(queue, logged):
    queue_id = new_queue_id()
    (queue / "maildrop" / queue_id).write_bytes(b"not a queue file\n")
    assert pickup.pickup_maildrop(str(queue), LIMIT) == 0
    rejected(queue, logged, queue_id, "bad magic")
    assert "WARNING" in logged.text()


def test_a_truncated_file_goes_to_corrupt(queue, logged):
    path, queue_id = drop(queue)
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) - 5)
    pickup.pickup_maildrop(str(queue), LIMIT)
    rejected(queue, logged, queue_id, "corrupt queue file")


def test_a_name_that_is_not_a_queue_id_goes_to_corrupt(queue, logged):
    path, _ = drop(queue)
    os.rename(path, queue / "maildrop" / "my-message")
    pickup.pickup_maildrop(str(queue), LIMIT)
    rejected(queue, logged, "my-message", "not a queue ID")


def test_a_symlink_is_not_followed(queue, logged, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "maildrop").mkdir()
    secret, _ = drop(elsewhere)
    queue_id = new_queue_id()
    os.symlink(secret, queue / "maildrop" / queue_id)
    pickup.pickup_maildrop(str(queue), LIMIT)
    rejected(queue, logged, queue_id, "not a regular file")
    assert os.path.exists(secret)


def test_a_hard_link_is_refused(queue, logged):
    path, queue_id = drop(queue)
    os.link(path, queue / "hold" / "kept-elsewhere")
    pickup.pickup_maildrop(str(queue), LIMIT)
    rejected(queue, logged, queue_id, "2 links")


def test_directories_and_fifos_are_set_aside_without_hanging(queue, logged):
    directory, fifo = new_queue_id(), new_queue_id()
    os.mkdir(queue / "maildrop" / directory)
    os.mkfifo(queue / "maildrop" / fifo)
    pickup.pickup_maildrop(str(queue), LIMIT)
    assert sorted(names(queue, "corrupt")) == sorted([directory, fifo])
    assert names(queue, "maildrop") == []


@pytest.mark.parametrize("overrides, reason", [
    (dict(client={"ADDR": "192.0.2.1"}), "client attributes"),
    (dict(sender="a@x.org\r\nRCPT TO:<evil@x.org>"), "CR, LF or NUL"),
    (dict(recipients=["a@x.org\nDATA"]), "CR, LF or NUL"),
    (dict(envid="e\rf"), "CR, LF or NUL"),
    (dict(content=b"x" * 2000), "message file too big"),
    (dict(arrival_time=time.time() + 3 * 86400), "arrival time in the future"),
    (dict(arrival_time=float("nan")), "arrival time in the future"),
])
def test_files_our_sendmail_never_writes_are_refused(queue, logged, overrides, reason):
    _, queue_id = drop(queue, **overrides)
    assert pickup.pickup_maildrop(str(queue), 1000) == 0
    rejected(queue, logged, queue_id, reason)


def test_recipients_marked_done_are_refused(queue, logged):
    path, queue_id = drop(queue)
    queuefile.mark_done(path, queuefile.read_queue_file(path).recipients[0].offset)
    pickup.pickup_maildrop(str(queue), LIMIT)
    rejected(queue, logged, queue_id, "already marked done")


def test_bad_notify_values_are_refused(queue, logged):
    recipient = queuefile.QueuedRecipient("a@x.org", notify="SOMETIMES")
    _, queue_id = drop(queue, recipients=[recipient])
    pickup.pickup_maildrop(str(queue), LIMIT)
    rejected(queue, logged, queue_id, "bad -N value")


@pytest.mark.parametrize("other", ["incoming", "active", "deferred", "hold"])
def test_a_queue_id_in_use_never_replaces_a_queued_message(queue, logged, other):
    queued, queue_id = drop(queue)
    os.rename(queued, queue / other / queue_id)
    before = (queue / other / queue_id).read_bytes()
    drop(queue, queue_id, sender="intruder@example.com")
    pickup.pickup_maildrop(str(queue), LIMIT)
    assert (queue / other / queue_id).read_bytes() == before
    assert names(queue, "corrupt") == [queue_id] and names(queue, "maildrop") == []
    assert "queue ID already in use" in logged.text()


def test_a_name_already_in_corrupt_is_not_replaced(queue, logged):
    queue_id = new_queue_id()
    (queue / "corrupt" / queue_id).write_bytes(b"evidence")
    (queue / "maildrop" / queue_id).write_bytes(b"garbage")
    pickup.pickup_maildrop(str(queue), LIMIT)
    assert (queue / "corrupt" / queue_id).read_bytes() == b"evidence"
    assert names(queue, "maildrop") == []
    assert "exists -- removed" in logged.text()


def test_an_unwritable_incoming_keeps_the_file_for_later(queue, logged, monkeypatch):
    _, queue_id = drop(queue)
    real_open = os.open

    def full_disk(path, flags, *args):
        if str(path).endswith(".pickup"):
            raise OSError(28, "No space left on device")
        return real_open(path, flags, *args)
    monkeypatch.setattr(pickup.os, "open", full_disk)
    assert pickup.pickup_maildrop(str(queue), LIMIT) == 0
    assert names(queue, "maildrop") == [queue_id] and names(queue, "corrupt") == []
    assert "will try again" in logged.text()
    monkeypatch.undo()
    assert pickup.pickup_maildrop(str(queue), LIMIT) == 1
    assert [n for n in names(queue, "incoming")] == [queue_id]


def test_a_leftover_private_copy_from_a_crash_is_replaced(queue):
    _, queue_id = drop(queue)
    (queue / "incoming" / f".{queue_id}.pickup").write_bytes(b"half a copy")
    assert pickup.pickup_maildrop(str(queue), LIMIT) == 1
    assert names(queue, "incoming") == [queue_id]


def test_a_symlink_swapped_in_after_the_check_is_not_opened(queue, logged, monkeypatch, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "maildrop").mkdir()
    secret, _ = drop(elsewhere)
    queue_id = new_queue_id()
    link = queue / "maildrop" / queue_id
    os.symlink(secret, link)
    real_lstat = os.lstat
    # what lstat saw an instant before the user replaced the file with a symlink
    monkeypatch.setattr(pickup.os, "lstat",
                        lambda path: real_lstat(secret) if str(path) == str(link) else real_lstat(path))
    pickup.pickup_maildrop(str(queue), LIMIT)
    monkeypatch.undo()
    rejected(queue, logged, queue_id, "cannot open")


def test_a_hard_link_swapped_in_after_the_check_is_refused(queue, logged, monkeypatch):
    innocent, _ = drop(queue, sender="innocent@example.com")
    os.rename(innocent, queue / "active" / "innocent")
    linked, queue_id = drop(queue, sender="linked@example.com")
    os.link(linked, queue / "hold" / "other-link")
    real_lstat = os.lstat
    monkeypatch.setattr(pickup.os, "lstat", lambda path: real_lstat(queue / "active" / "innocent")
                        if str(path) == str(linked) else real_lstat(path))
    pickup.pickup_maildrop(str(queue), LIMIT)
    monkeypatch.undo()
    rejected(queue, logged, queue_id, "replaced")
