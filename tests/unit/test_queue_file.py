"""Queue files: round trip, done marks, streaming, and every kind of corruption.

Every test runs twice: with the compiled record scanner (pyx/_records_c.pyx,
queuefile._scan) and without it, where records() does everything in Python.
"""

import os
import random

import pytest

from postclient import extensions
from postclient.queue import qid, queuefile, statuslog
from postclient.smtp.request import Recipient

CONTENT = b"Subject: test\r\n\r\nline one\n.dot line\nraw \xff byte\n"


@pytest.fixture(autouse=True, params=["compiled scanner", "python only"])
def scanner(request, monkeypatch):
    if request.param == "python only":
        monkeypatch.setattr(queuefile, "_scan", None)
    elif queuefile._scan is None:
        pytest.skip("compiled scanner not loaded: see test_the_compiled_scanner_is_loaded")
    return request.param


def test_the_compiled_scanner_is_loaded(scanner):
    if scanner == "python only" or extensions.disabled():
        return
    from postclient.queue import _records_c
    assert queuefile._scan is _records_c.scan


def outcome(path, **options):
    """What records() gives for a file: its records, or the error's text."""
    size = os.path.getsize(path)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        return list(queuefile.records(descriptor, size, **options))
    except queuefile.CorruptQueueFile as error:
        return str(error)
    finally:
        os.close(descriptor)


def test_the_scanner_gives_what_python_gives_for_damaged_files(tmp_path, scanner, monkeypatch):
    if scanner == "python only":
        return
    rng = random.Random(6)
    path = write(tmp_path, recipients=[Recipient(f"r{n}@example.com") for n in range(3)])
    good = open(path, "rb").read()
    for trial in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.4:
                data[at] = rng.choice(b"0123456789:\nPDMER\0x")
            elif choice < 0.7:
                del data[at:at + rng.randint(1, 20)]
            else:
                data[at:at] = bytes(rng.choice(b"0123456789:\nE") for _ in range(rng.randint(1, 5)))
        with open(path, "wb") as handle:
            handle.write(data)
        for options in ({}, {"with_content": True}, {"limit": 30}):
            compiled = outcome(path, **options)
            monkeypatch.setattr(queuefile, "_scan", None)
            python = outcome(path, **options)
            monkeypatch.undo()
            assert compiled == python, (trial, options, bytes(data))


def write(tmp_path, **overrides):
    values = dict(sender="sender@example.com",
                  recipients=[Recipient("a@example.com", original="A@example.com",
                                        orcpt="rfc822;A@example.com", notify="SUCCESS,FAILURE"),
                              Recipient("b@example.com")],
                  content=CONTENT, arrival_time=1700000000.25, envid="ENV1", ret="HDRS",
                  encoding="8bit", smtputf8=True, client={"ADDR": "192.0.2.9", "NAME": "client.example"})
    values.update(overrides)
    return queuefile.write_queue_file(str(tmp_path), "QID1", **values)


def test_round_trip(tmp_path):
    path = write(tmp_path)
    queued = queuefile.read_queue_file(path)
    assert (queued.queue_id, queued.sender, queued.arrival_time) == ("QID1", "sender@example.com", 1700000000.25)
    assert (queued.envid, queued.ret, queued.encoding, queued.smtputf8) == ("ENV1", "HDRS", "8bit", True)
    assert queued.client == {"ADDR": "192.0.2.9", "NAME": "client.example"}
    first, second = queued.recipients
    assert (first.address, first.original, first.orcpt, first.notify) == (
        "a@example.com", "A@example.com", "rfc822;A@example.com", "SUCCESS,FAILURE")
    assert second.address == "b@example.com" and not second.done
    with queuefile.open_content(queued) as handle:
        assert handle.read(5) + handle.read() == CONTENT
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]


def test_mark_done_is_persistent_and_checked(tmp_path):
    path = write(tmp_path)
    queued = queuefile.read_queue_file(path)
    queuefile.mark_done(path, queued.recipients[1].offset)
    again = queuefile.read_queue_file(path)
    assert [r.done for r in again.recipients] == [False, True]
    assert [r.address for r in again.pending()] == ["a@example.com"]
    with pytest.raises(queuefile.CorruptQueueFile, match="no recipient status byte"):
        queuefile.mark_done(path, queued.content_offset)
    assert queuefile.read_queue_file(path).recipients[0].done is False


def test_a_done_mark_after_a_parse_writes_without_reading_back(tmp_path, monkeypatch):
    """parsed=True (the agent, whose offsets come from read_queue_file() through
    the same descriptor) makes one system call: the write."""
    path = write(tmp_path)
    descriptor = queuefile.open_for_marking(path)
    try:
        queued = queuefile.read_queue_file(path, descriptor)
        calls = []
        real_pread = os.pread
        monkeypatch.setattr(os, "pread", lambda *a: calls.append(a) or real_pread(*a))
        queuefile.mark_done_fd(descriptor, queued.recipients[0].offset, path, parsed=True)
        assert calls == []
        queuefile.mark_done_fd(descriptor, queued.recipients[1].offset, path)     # checks first
        assert len(calls) == 1
    finally:
        os.close(descriptor)
    assert [r.done for r in queuefile.read_queue_file(path).recipients] == [True, True]


def test_a_size_the_caller_knows_is_used_and_checked_like_its_own(tmp_path, monkeypatch):
    path = write(tmp_path)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(descriptor).st_size
        stats = []
        real_fstat = os.fstat
        monkeypatch.setattr(os, "fstat", lambda fd: stats.append(fd) or real_fstat(fd))
        assert queuefile.read_queue_file(path, descriptor, size).sender == "sender@example.com"
        assert stats == []
        # a size that is not the file's is caught as the file's own would be
        with pytest.raises(queuefile.CorruptQueueFile):
            queuefile.read_queue_file(path, descriptor, size + 1)
    finally:
        os.close(descriptor)


@pytest.mark.parametrize("size, kept", [(len(CONTENT), True), (queuefile.HEAD_BYTES - 400, True),
                                         (queuefile.HEAD_BYTES, False), (3 * queuefile.HEAD_BYTES, False)])
def test_with_content_a_small_message_comes_with_the_envelope(tmp_path, size, kept):
    """One read for envelope and content where the first read holds both; a
    larger content is left to open_content(), as without with_content."""
    content = (CONTENT * (size // len(CONTENT) + 1))[:size]
    path = write(tmp_path, content=content)
    queued = queuefile.read_queue_file(path, with_content=True)
    assert queued.content == (content if kept else None)
    with queuefile.open_content(queued) as handle:
        assert handle.read() == content
    assert queuefile.read_queue_file(path).content is None      # the queue manager keeps none
    assert queued.replace(content=None) == queuefile.read_queue_file(path)


def test_every_truncation_is_detected(tmp_path):
    path = write(tmp_path)
    data = open(path, "rb").read()
    for cut in range(len(data)):
        with open(path, "wb") as handle:
            handle.write(data[:cut])
        with pytest.raises(queuefile.CorruptQueueFile):
            queuefile.read_queue_file(path)



def test_truncations_of_a_file_larger_than_the_first_read_are_detected(tmp_path):
    # The envelope runs past the first read and the end record lies beyond the
    # content: both further reads of records() are used, and every cut is caught.
    content = b"Subject: big\r\n\r\n" + b"x" * (queuefile.HEAD_BYTES + 100) + b"\r\n"
    recipients = [Recipient(f"r{n}@example.com", original=f"{n}" * 5000) for n in range(5)]
    path = write(tmp_path, recipients=recipients, content=content)
    queued = queuefile.read_queue_file(path)
    assert [(r.address, r.original) for r in queued.recipients] == [
        (r.address, r.original) for r in recipients]
    assert queued.recipients[-1].offset > queuefile.HEAD_BYTES
    with queuefile.open_content(queued) as handle:
        assert handle.read() == content
    inside_content = range(queued.content_offset + 64, queued.content_offset + len(content) - 64)
    for cut in range(os.path.getsize(path) - 1, -1, -1):
        if cut in inside_content and cut % 101:
            continue                    # all alike: a sample of them is enough
        os.truncate(path, cut)
        with pytest.raises(queuefile.CorruptQueueFile):
            queuefile.read_queue_file(path)

def test_a_head_read_by_the_caller_gives_the_same_parse(tmp_path, monkeypatch):
    # small: the head is the whole file, which is never opened again
    path = write(tmp_path)
    data = open(path, "rb").read()
    expected = queuefile.read_queue_file(path)
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    assert queuefile.read_queue_file(path, size=len(data), head=data) == expected
    assert opened == []
    # large: the envelope goes on past the head, so the file is opened for the rest
    recipients = [Recipient(f"r{n}@example.com", original=f"{n}" * 5000) for n in range(5)]
    path = write(tmp_path, recipients=recipients)
    data = open(path, "rb").read()
    head = data[:queuefile.HEAD_BYTES]
    assert queuefile.read_queue_file(path, size=len(data), head=head) == \
        queuefile.read_queue_file(path)
    assert opened.count(path) == 2
    # a head that does not hold a sound envelope is corrupt, as the file would be
    with pytest.raises(queuefile.CorruptQueueFile, match="runs past the end of the file"):
        queuefile.read_queue_file(path, size=100, head=data[:100])
    with pytest.raises(queuefile.CorruptQueueFile, match="bad magic"):
        queuefile.read_queue_file(path, size=4, head=b"XXXX")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: b"XXXX" + d[4:], "bad magic"),
    (lambda d: d + b"junk", "data after the end record"),
    (lambda d: d.replace(b"\nS18:", b"\nQ18:"), "unknown record type"),
    (lambda d: d.replace(b"B4:8bit", b"B4:9bit"), "bad body encoding"),
    (lambda d: d.replace(b"\nA13:", b"\nA1x:"), "bad record length"),
    (lambda d: d.replace(b"\nR", b"\nR", 1).replace(b":P", b":Z", 1), "bad recipient record"),
])
def test_malformed_files(tmp_path, mutate, message):
    path = write(tmp_path)
    with open(path, "rb") as handle:
        data = handle.read()
    changed = mutate(data)
    assert changed != data
    with open(path, "wb") as handle:
        handle.write(changed)
    with pytest.raises(queuefile.CorruptQueueFile, match=message):
        queuefile.read_queue_file(path)


def test_refuses_to_write_nonsense(tmp_path):
    with pytest.raises(ValueError):
        write(tmp_path, recipients=[])
    with pytest.raises(ValueError):
        write(tmp_path, encoding="base64")
    with pytest.raises(ValueError):
        write(tmp_path, recipients=["bad\0address"])
    assert os.listdir(tmp_path) == []


def test_no_partial_file_is_left_when_writing_fails(tmp_path, monkeypatch):
    def failing_fsync(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        write(tmp_path)
    assert os.listdir(tmp_path) == []


def test_queue_ids_are_unique_sortable_and_valid():
    ids = [qid.new_queue_id() for _ in range(5000)]
    assert len(set(ids)) == 5000 and ids == sorted(ids)
    assert all(qid.valid_queue_id(i) for i in ids)
    assert not qid.valid_queue_id("../etc/passwd")
    assert abs(qid.queue_id_time(qid.new_queue_id(now=1800000000.5)) - 1800000000.5) < 1e-6
    assert qid.new_queue_id(now=1) < qid.new_queue_id(now=2)


def test_status_logs(tmp_path):
    for kind in statuslog.LOG_KINDS:
        (tmp_path / kind).mkdir()
    record = statuslog.StatusRecord(recipient="a@example.com", status="deferred", dsn="4.4.1",
                                    text="connect to x[192.0.2.1]:25: Connection refused")
    statuslog.append_status(str(tmp_path), "defer", "QID1", record)
    statuslog.append_status(str(tmp_path), "defer", "QID1",
                            statuslog.StatusRecord(recipient="b@example.com", status="deferred"))
    with open(tmp_path / "defer" / "QID1", "ab") as handle:
        handle.write(b'{"recipient": "torn')          # a crash in the middle of an append
    records = statuslog.read_status(str(tmp_path), "defer", "QID1")
    assert [r.recipient for r in records] == ["a@example.com", "b@example.com"]
    assert records[0].dsn == "4.4.1" and records[0].time > 0
    assert statuslog.read_status(str(tmp_path), "bounce", "QID1") == []
    statuslog.remove_status(str(tmp_path), "QID1")
    assert statuslog.read_status(str(tmp_path), "defer", "QID1") == []
    with pytest.raises(ValueError):
        statuslog.append_status(str(tmp_path), "../x", "QID1", record)
