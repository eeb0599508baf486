"""The queue tools in-process: ``postclient queue`` listings, ``super`` moves, ``cat`` output.

Queues are built in temporary directories with write_queue_file() and
append_status(); the queue manager is replaced by a recorder (no sockets
here: tests/integration/test_queue_tools.py talks to a real listener).
"""

import io
import json
import os
import time

import pytest

from postclient.cli import cat as cat_command
from postclient.cli import queue as queue_command
from postclient.cli.main import main
from postclient.master.listen import make_queue_directories
from postclient.queue import _fileio_py, manage, queuefile, statuslog
from postclient.queue.qid import new_queue_id
from postclient.smtp.request import Recipient

ID1 = "0660CF1CE689CF05CFD000"
ID2 = "0660CF1CE689CF05CFD001"
ID3 = "0660CF1CE689CF05CFD002"
ID4 = "0660CF1CE689CF05CFD003"
ARRIVAL = 1605989735            # Sat Nov 21 20:15:35 2020 UTC
REFUSED = "connect to mx.example.com[192.0.2.1]:25: Connection refused"
GREYLISTED = "host mx.example.org[192.0.2.2] said: 450 4.7.1 greylisted (in reply to RCPT TO command)"
CONTENT = b"Subject: hello\r\nFrom: s@example.com\r\n folded\r\n\r\nbody line\r\nSubject: in the body\r\n"


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def qdir(tmp_path):
    queue_directory = tmp_path / "q"
    make_queue_directories(str(queue_directory))
    (tmp_path / "main.cf").write_text(f"queue_directory = {queue_directory}\n")
    return queue_directory


def put(qdir, queue_name, queue_id, recipients=("a@example.com",), sender="s@example.com",
        content=CONTENT, arrival=ARRIVAL, **extra):
    path = queuefile.write_queue_file(str(qdir / queue_name), queue_id, sender=sender,
                                      recipients=list(recipients), content=content,
                                      arrival_time=arrival, **extra)
    return queuefile.read_queue_file(path)


def defer(qdir, queued, index, text, offset=None, address=None):
    recipient = queued.recipients[index]
    statuslog.append_status(str(qdir), "defer", queued.queue_id, statuslog.StatusRecord(
        recipient=address or recipient.address,
        offset=recipient.offset if offset is None else offset, status="deferred", text=text))


def run(capsys, qdir, *argv):
    code = main(["-c", str(qdir.parent), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def listing(*blocks, total):
    lines = ["-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"]
    for index, block in enumerate(blocks):
        if index:
            lines.append("")
        lines.extend(block)
    return "\n".join(lines + ["", total]) + "\n"


def rcpt(address):
    return " " * 41 + address


def reason(text):
    return " " * (76 - len(text)) + f"({text})"


# --- postclient queue -p ----------------------------------------------------------------
def test_an_empty_queue_says_so(capsys, qdir):
    assert run(capsys, qdir, "queue") == (0, "Mail queue is empty\n", "")


def test_listing_in_postfix_format(capsys, qdir):
    deferred = put(qdir, "deferred", ID1, ["a@example.com", "b@example.org", "c@example.com",
                                           "d@example.com"])
    defer(qdir, deferred, 0, REFUSED)
    defer(qdir, deferred, 2, REFUSED)
    queuefile.mark_done(deferred.path, deferred.recipients[3].offset)
    put(qdir, "active", ID2, ["z@example.net"], content=b"x" * 1500, arrival=ARRIVAL + 60)
    put(qdir, "hold", ID3, ["h@example.net"], sender="", content=b"y" * 1600, arrival=ARRIVAL + 3600)
    (qdir / "deferred" / f".{ID4}.tmp").write_bytes(b"being written")
    (qdir / "deferred" / "README").write_text("not a queue file")
    code, out, err = run(capsys, qdir, "queue", "-p")
    assert (code, err) == (0, "")
    size = len(CONTENT)
    assert out == listing(
        [f"{ID2}*    1500 Sat Nov 21 20:16:35  s@example.com", rcpt("z@example.net")],
        [f"{ID1}     {size:>3} Sat Nov 21 20:15:35  s@example.com", reason(REFUSED),
         rcpt("a@example.com"), rcpt("c@example.com"), reason("reason unavailable"),
         rcpt("b@example.org")],
        [f"{ID3}!    1600 Sat Nov 21 21:15:35  MAILER-DAEMON", rcpt("h@example.net")],
        total=f"-- {(1500 + 1600 + size) // 1024} Kbytes in 3 Requests.")


def test_default_is_the_listing_and_one_message_is_one_request(capsys, qdir):
    put(qdir, "incoming", ID1, content=b"z" * 2048)
    code, out, _ = run(capsys, qdir, "queue")
    assert code == 0 and out.endswith("\n\n-- 2 Kbytes in 1 Request.\n")
    assert f"{ID1}    2048 Sat Nov 21 20:15:35  s@example.com\n" in out


def test_reasons_are_the_latest_per_pending_recipient_grouped(capsys, qdir):
    queued = put(qdir, "deferred", ID1, ["a@example.com", "b@example.com", "c@example.com"])
    defer(qdir, queued, 0, REFUSED)
    defer(qdir, queued, 1, REFUSED)
    defer(qdir, queued, 2, GREYLISTED)
    defer(qdir, queued, 0, GREYLISTED)          # a's newer reason replaces the older one
    defer(qdir, queued, 1, "ignored: wrong address at that offset", address="x@example.com")
    defer(qdir, queued, 1, REFUSED, offset=-1)  # matched by address
    code, out, _ = run(capsys, qdir, "queue")
    assert code == 0
    assert out.splitlines()[2:7] == [reason(GREYLISTED), rcpt("a@example.com"),
                                     rcpt("c@example.com"), reason(REFUSED), rcpt("b@example.com")]


def test_done_recipients_are_not_listed_even_with_an_old_reason(capsys, qdir):
    queued = put(qdir, "deferred", ID1, ["a@example.com", "b@example.com"])
    defer(qdir, queued, 0, REFUSED)
    queuefile.mark_done(queued.path, queued.recipients[0].offset)
    code, out, _ = run(capsys, qdir, "queue")
    assert code == 0 and "a@example.com" not in out and REFUSED not in out
    assert out.splitlines()[2] == rcpt("b@example.com")


def test_unprintable_characters_are_shown_as_question_marks(capsys, qdir):
    queued = put(qdir, "deferred", ID1, ["r\x01@example.com", "ok@example.com"],
                 sender="s\udcff@example.com")
    defer(qdir, queued, 1, "bad\x07reply")
    code, out, _ = run(capsys, qdir, "queue")
    assert code == 0
    assert "s?@example.com" in out and rcpt("r?@example.com") in out and "(bad?reply)" in out
    code, out, _ = run(capsys, qdir, "queue", "-j")
    entry = json.loads(out)
    assert entry["sender"] == "s?@example.com"
    assert entry["recipients"] == [{"address": "ok@example.com", "delay_reason": "bad?reply"},
                                   {"address": "r?@example.com"}]


# --- postclient queue -j ---------------------------------------------------------------
def test_json_lines_round_trip_and_match_the_files(capsys, qdir):
    deferred = put(qdir, "deferred", ID1, ["a@example.com", "b@example.org", "c@example.com"],
                   arrival=ARRIVAL + 0.75)
    defer(qdir, deferred, 1, GREYLISTED)
    queuefile.mark_done(deferred.path, deferred.recipients[2].offset)
    put(qdir, "hold", ID2, ["h@example.net"], sender="", content=b"hold me")
    put(qdir, "maildrop", ID3, ["m@example.net"])
    code, out, err = run(capsys, qdir, "queue", "-j")
    assert (code, err) == (0, "")
    objects = [json.loads(line) for line in out.splitlines()]
    assert all(list(obj) == ["queue_name", "queue_id", "arrival_time", "message_size",
                             "forced_expire", "sender", "recipients"] for obj in objects)
    assert [(o["queue_name"], o["queue_id"]) for o in objects] == [
        ("maildrop", ID3), ("deferred", ID1), ("hold", ID2)]
    for obj in objects:
        queued = queuefile.read_queue_file(str(qdir / obj["queue_name"] / obj["queue_id"]))
        assert obj["arrival_time"] == int(queued.arrival_time)
        assert isinstance(obj["arrival_time"], int)
        assert obj["message_size"] == queued.content_size
        assert obj["forced_expire"] is False
        assert obj["sender"] == (queued.sender or "MAILER-DAEMON")
        assert sorted(r["address"] for r in obj["recipients"]) == sorted(
            r.address for r in queued.pending())
    assert objects[1]["recipients"] == [{"address": "b@example.org", "delay_reason": GREYLISTED},
                                        {"address": "a@example.com"}]
    assert objects[2]["message_size"] == len(b"hold me")


def test_json_of_an_empty_queue_is_empty(capsys, qdir):
    assert run(capsys, qdir, "queue", "-j") == (0, "", "")


# --- corrupt files and errors -----------------------------------------------------------
@pytest.mark.parametrize("mode", ["-p", "-j"])
def test_a_corrupt_file_is_reported_and_skipped_but_not_moved(capsys, qdir, mode):
    put(qdir, "deferred", ID1)
    good = put(qdir, "deferred", ID2)
    data = open(good.path, "rb").read()
    (qdir / "deferred" / ID2).write_bytes(data[:-4])           # truncated: no end record
    (qdir / "active" / ID3).write_bytes(b"garbage\n")
    code, out, err = run(capsys, qdir, "queue", mode)
    assert code == 0
    assert f"postclient/queue: warning: deferred/{ID2}: corrupt queue file (" in err
    assert (f"postclient/queue: warning: active/{ID3}: corrupt queue file "
            "(not a postclient queue file (bad magic)); skipped") in err
    assert ID1 in out and ID2 not in out and ID3 not in out
    if mode == "-j":
        assert [json.loads(line)["queue_id"] for line in out.splitlines()] == [ID1]
    else:
        assert out.endswith("1 Request.\n")
    assert sorted(os.listdir(qdir / "deferred")) == [ID1, ID2]
    assert os.listdir(qdir / "corrupt") == []


def test_a_missing_queue_directory_is_unavailable(capsys, tmp_path):
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path / 'nowhere'}\n")
    code = main(["-c", str(tmp_path), "queue"])
    out, err = capsys.readouterr()
    assert code == os.EX_UNAVAILABLE and out == "" and "does not exist" in err


def test_listing_modes_exclude_each_other(capsys, qdir):
    assert run(capsys, qdir, "queue", "-p", "-j")[0] == os.EX_USAGE
    assert run(capsys, qdir, "queue", "-f", "-s", "example.com")[0] == os.EX_USAGE


# --- flush requests (the queue manager replaced by a recorder) --------------------------
@pytest.fixture
def qmgr(monkeypatch):
    calls = []
    state = {"up": True}

    def notify(queue_directory, request, timeout):
        calls.append((queue_directory, request))
        if not state["up"]:
            raise manage.QmgrUnavailable("connect to public/qmgr: No such file or directory")

    monkeypatch.setattr(manage, "notify_qmgr", notify)
    return calls, state


def test_releasing_many_messages_wakes_the_queue_manager_early(capsys, qdir, monkeypatch):
    """After 100 and 1,000 released messages (each batch durable first), and at the end."""
    held = [new_queue_id() for _ in range(1234)]
    for queue_id in held:
        put(qdir, "hold", queue_id)
    seen = []
    synced = set()
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.add(os.readlink(f"/proc/self/fd/{fd}"))
                        or real_fsync(fd))

    def notify(queue_directory, request, timeout):
        assert str(qdir / "deferred") in synced, "woken before the moves were durable"
        synced.clear()
        seen.append((request["request"], len(os.listdir(qdir / "deferred"))))

    monkeypatch.setattr(manage, "notify_qmgr", notify)
    code, out, err = run(capsys, qdir, "super", "-H", "ALL")
    assert (code, out) == (0, "") and "Released from hold: 1234 messages" in err
    assert seen == [("wakeup", 100), ("wakeup", 1000), ("wakeup", 1234)]


def test_a_queue_manager_that_is_down_is_tried_once_early_and_once_at_the_end(capsys, qdir, qmgr):
    calls, state = qmgr
    state["up"] = False
    for _ in range(150):
        put(qdir, "hold", new_queue_id())
    code, _, err = run(capsys, qdir, "super", "-H", "ALL")
    assert code == 0 and len(calls) == 2
    assert err.count("cannot wake up the queue manager") == 1       # the last try only


def test_flush_and_flush_site_requests(capsys, qdir, qmgr):
    calls, _ = qmgr
    assert run(capsys, qdir, "queue", "-f") == (0, "", "")
    assert run(capsys, qdir, "queue", "-s", "Example.COM") == (0, "", "")
    assert run(capsys, qdir, "queue", "-s", "[192.0.2.1]")[0] == 0
    assert [request for _, request in calls] == [
        {"request": "flush"}, {"request": "flush_site", "site": "example.com"},
        {"request": "flush_site", "site": "[192.0.2.1]"}]
    assert {directory for directory, _ in calls} == {str(qdir)}


def test_flush_without_a_queue_manager_is_a_temporary_failure(capsys, qdir, qmgr):
    _, state = qmgr
    state["up"] = False
    put(qdir, "deferred", ID1)
    code, out, err = run(capsys, qdir, "queue", "-f")
    assert (code, out) == (75, "")
    assert err.startswith("postclient/queue: warning: cannot flush the mail queue: connect to")
    assert "will be processed when the queue manager runs" in err
    assert os.listdir(qdir / "deferred") == [ID1]


@pytest.mark.parametrize("site", ["a b", "", "ex@mple.com", "bad-.example", "[300.1.1.1]",
                                  "[IPv6:nonsense]", "a..b", "x" * 256])
def test_a_bad_site_is_a_usage_error(capsys, qdir, qmgr, site):
    calls, _ = qmgr
    code, _, err = run(capsys, qdir, "queue", "-s", site)
    assert code == os.EX_USAGE and "invalid destination" in err and calls == []


def test_site_normalisation():
    assert queue_command.normalise_site("[IPv6:2001:DB8::1]") == "[IPv6:2001:db8::1]"
    assert queue_command.normalise_site("Mail.Example.org") == "mail.example.org"


# --- postclient super ------------------------------------------------------------------
def files(qdir, queue_name):
    return sorted(os.listdir(qdir / queue_name))


def logs(qdir, queue_id):
    return [kind for kind in statuslog.LOG_KINDS if (qdir / kind / queue_id).exists()]


def with_logs(qdir, queued):
    for kind in statuslog.LOG_KINDS:
        statuslog.append_status(str(qdir), kind, queued.queue_id,
                                statuslog.StatusRecord(recipient=queued.recipients[0].address))


def test_delete_one_removes_the_message_and_its_status_logs(capsys, qdir, qmgr):
    with_logs(qdir, put(qdir, "deferred", ID1))
    with_logs(qdir, put(qdir, "deferred", ID2))
    code, out, err = run(capsys, qdir, "super", "-d", ID1)
    assert (code, out) == (0, "")
    assert err == f"postclient/super: {ID1}: removed\npostclient/super: Deleted: 1 message\n"
    assert files(qdir, "deferred") == [ID2] and logs(qdir, ID1) == []
    assert logs(qdir, ID2) == list(statuslog.LOG_KINDS)
    assert qmgr[0] == []                        # nothing for the queue manager to notice


def test_delete_all_counts_default_queues_and_removes_orphan_logs(capsys, qdir, qmgr):
    for queue_name, queue_id in [("incoming", ID1), ("active", ID2), ("hold", ID3)]:
        with_logs(qdir, put(qdir, queue_name, queue_id))
    put(qdir, "maildrop", ID4)
    (qdir / "corrupt" / "0660CF1CE689CF05CFD00F").write_bytes(b"junk")
    (qdir / "defer" / "0660CF1CE689CF05CFD0AA").write_text("{}\n")        # orphans
    (qdir / "defer" / ("0660CF1CE689CF05CFD0AA" + statuslog.WARNED_SUFFIX)).write_text("")
    (qdir / "defer" / "notes.txt").write_text("not ours")
    code, _, err = run(capsys, qdir, "super", "-d", "ALL")
    assert code == 0 and err == "postclient/super: Deleted: 3 messages\n"
    assert [files(qdir, q) for q in ("incoming", "active", "hold", "bounce", "trace")] == [[]] * 5
    assert files(qdir, "defer") == ["notes.txt"]
    assert files(qdir, "maildrop") == [ID4] and len(files(qdir, "corrupt")) == 1
    assert [request for _, request in qmgr[0]] == [{"request": "wakeup"}]     # active/ changed


def test_delete_all_fsyncs_each_directory_once_before_any_status_log_goes(capsys, qdir, qmgr,
                                                                          monkeypatch):
    """Many deletions cost one fsync per queue directory, not one per message; the
    logs of a deleted message go only once its unlink is durable."""
    for queue_name, queue_id in [("deferred", ID1), ("deferred", ID2), ("hold", ID3)]:
        with_logs(qdir, put(qdir, queue_name, queue_id))
    events = []
    real_fsync, real_remove = os.fsync, statuslog.remove_status
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(
        ("fsync", os.readlink(f"/proc/self/fd/{fd}"))) or real_fsync(fd))
    monkeypatch.setattr(statuslog, "remove_status", lambda directory, queue_id: events.append(
        ("logs", queue_id)) or real_remove(directory, queue_id))
    code, _, err = run(capsys, qdir, "super", "-d", "ALL")
    assert code == 0 and err == "postclient/super: Deleted: 3 messages\n"
    fsyncs = [what for kind, what in events if kind == "fsync"]
    assert sorted(fsyncs) == [str(qdir / "deferred"), str(qdir / "hold")]
    assert [kind for kind, _ in events] == ["fsync", "fsync", "logs", "logs", "logs"]
    assert sorted(what for kind, what in events if kind == "logs") == [ID1, ID2, ID3]
    assert all(logs(qdir, i) == [] for i in (ID1, ID2, ID3))


def test_super_reports_a_message_done_only_once_its_move_is_durable(capsys, qdir, qmgr,
                                                                    monkeypatch):
    """postsuper prints each ID as it goes; postclient prints the same lines, in the
    same order (warnings included), but only after the fsyncs that make them true."""
    from postclient.cli import super as super_command
    put(qdir, "deferred", ID1)
    put(qdir, "hold", ID2)
    events = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", None)) or real_fsync(fd))
    monkeypatch.setattr(super_command, "print", lambda text, file=None: events.append(("print", text)),
                        raising=False)
    code, _, _ = run(capsys, qdir, "super", "-h", ID1, "-h", "bogus", "-H", ID2)
    assert code == 0
    assert [kind for kind, _ in events] == ["fsync"] * 2 + ["print"] * 5     # deferred/, hold/
    assert [text for kind, text in events if kind == "print"] == [
        f"postclient/super: {ID1}: placed on hold",
        "postclient/super: warning: invalid mail queue id: bogus",
        f"postclient/super: {ID2}: released from hold",
        "postclient/super: Placed on hold: 1 message",
        "postclient/super: Released from hold: 1 message"]


def test_super_whose_fsync_fails_reports_nothing_as_done(capsys, qdir, qmgr, monkeypatch):
    put(qdir, "deferred", ID1)

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fsync", failing_fsync)
    code, _, err = run(capsys, qdir, "super", "-d", "bogus", "-d", ID1)
    assert code == os.EX_IOERR
    assert err == ("postclient/super: warning: invalid mail queue id: bogus\n"
                   f"postclient/super: fatal: Input/output error: {qdir / 'deferred'}\n")
    assert qmgr[0] == []                # not woken for a change that may not last


def test_delete_all_in_one_named_queue_only(capsys, qdir, qmgr):
    put(qdir, "deferred", ID1)
    put(qdir, "deferred", ID2)
    put(qdir, "hold", ID3)
    (qdir / "defer" / "0660CF1CE689CF05CFD0AA").write_text("{}\n")
    (qdir / "corrupt" / ID4).write_bytes(b"junk")
    code, _, err = run(capsys, qdir, "super", "-d", "ALL", "deferred", "corrupt")
    assert code == 0 and err == "postclient/super: Deleted: 3 messages\n"
    assert files(qdir, "deferred") == [] and files(qdir, "corrupt") == []
    assert files(qdir, "hold") == [ID3] and files(qdir, "defer") == ["0660CF1CE689CF05CFD0AA"]


def test_hold_and_release_all(capsys, qdir, qmgr):
    put(qdir, "incoming", ID1)
    put(qdir, "active", ID2)
    put(qdir, "deferred", ID3)
    put(qdir, "maildrop", ID4)
    code, _, err = run(capsys, qdir, "super", "-h", "ALL")
    assert code == 0 and err == "postclient/super: Placed on hold: 3 messages\n"
    assert files(qdir, "hold") == [ID1, ID2, ID3] and files(qdir, "maildrop") == [ID4]
    for queue_id in (ID1, ID2, ID3):
        os.utime(qdir / "hold" / queue_id, (1000, 1000))
    before = time.time()
    code, _, err = run(capsys, qdir, "super", "-H", "ALL")
    assert code == 0 and err == "postclient/super: Released from hold: 3 messages\n"
    assert files(qdir, "hold") == [] and files(qdir, "deferred") == [ID1, ID2, ID3]
    assert all(os.stat(qdir / "deferred" / q).st_mtime >= before - 1 for q in (ID1, ID2, ID3))
    # -h changed active/; -H released mail, due now: deferred/ is scanned too
    assert [request for _, request in qmgr[0]] == [{"request": "wakeup"},
                                                   {"request": "wakeup", "deferred": True}]


def test_hold_one_leaves_held_and_maildrop_messages_alone(capsys, qdir, qmgr):
    put(qdir, "hold", ID1)
    put(qdir, "maildrop", ID2)
    put(qdir, "deferred", ID3)
    code, _, err = run(capsys, qdir, "super", "-h", ID1, "-h", ID2, "-h", ID3)
    assert code == 0
    assert err == f"postclient/super: {ID3}: placed on hold\npostclient/super: Placed on hold: 1 message\n"
    assert files(qdir, "hold") == [ID1, ID3] and files(qdir, "maildrop") == [ID2]
    assert qmgr[0] == []


def test_release_one_sets_the_next_attempt_to_now(capsys, qdir, qmgr):
    put(qdir, "hold", ID1)
    os.utime(qdir / "hold" / ID1, (1000, 1000))
    before = time.time()
    code, _, err = run(capsys, qdir, "super", "-H", ID1)
    assert code == 0 and err.endswith("postclient/super: Released from hold: 1 message\n")
    assert os.stat(qdir / "deferred" / ID1).st_mtime >= before - 1


def test_requeue_moves_to_incoming_forgets_delays_and_keeps_done_marks(capsys, qdir, qmgr):
    queued = put(qdir, "deferred", ID1, ["a@example.com", "b@example.com"])
    queuefile.mark_done(queued.path, queued.recipients[0].offset)
    with_logs(qdir, queued)
    (qdir / "defer" / (ID1 + statuslog.WARNED_SUFFIX)).write_text("")
    os.utime(queued.path, (1000, 1000))
    code, _, err = run(capsys, qdir, "super", "-r", ID1)
    assert code == 0 and err == f"postclient/super: {ID1}: requeued\npostclient/super: Requeued: 1 message\n"
    assert files(qdir, "deferred") == [] and files(qdir, "incoming") == [ID1]
    assert logs(qdir, ID1) == ["bounce", "trace"]
    assert (qdir / "defer" / (ID1 + statuslog.WARNED_SUFFIX)).exists()     # warned once is enough
    requeued = queuefile.read_queue_file(str(qdir / "incoming" / ID1))
    assert [r.done for r in requeued.recipients] == [True, False]
    assert os.stat(qdir / "incoming" / ID1).st_mtime > 1000
    assert [request for _, request in qmgr[0]] == [{"request": "wakeup"}]


def test_requeue_all_counts_each_message_once(capsys, qdir, qmgr):
    put(qdir, "hold", ID1)
    put(qdir, "incoming", ID2)
    put(qdir, "active", ID3)
    code, _, err = run(capsys, qdir, "super", "-r", "ALL")
    assert code == 0 and err == "postclient/super: Requeued: 3 messages\n"
    assert files(qdir, "incoming") == [ID1, ID2, ID3]


def test_invalid_and_unknown_ids(capsys, qdir, qmgr):
    put(qdir, "deferred", ID1)
    code, out, err = run(capsys, qdir, "super", "-d", "../deferred/x", "-d", "all", "-d", ID2)
    assert (code, out) == (0, "")
    assert err == ("postclient/super: warning: invalid mail queue id: ../deferred/x\n"
                   "postclient/super: warning: invalid mail queue id: all\n")
    assert files(qdir, "deferred") == [ID1]


def test_ids_from_standard_input(capsys, qdir, qmgr, monkeypatch):
    put(qdir, "deferred", ID1)
    put(qdir, "hold", ID2)
    put(qdir, "deferred", ID3)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{ID1}\n\nbogus\n  {ID2}  \n"))
    code, _, err = run(capsys, qdir, "super", "-d", "-", "-d", "-")
    assert code == 0
    assert err == (f"postclient/super: {ID1}: removed\n"
                   "postclient/super: warning: invalid mail queue id: bogus\n"
                   f"postclient/super: {ID2}: removed\n"
                   "postclient/super: Deleted: 2 messages\n")
    assert files(qdir, "deferred") == [ID3] and files(qdir, "hold") == []


def test_all_overrides_other_ids_with_a_warning(capsys, qdir, qmgr):
    put(qdir, "deferred", ID1)
    code, _, err = run(capsys, qdir, "super", "-d", ID1, "-d", "ALL")
    assert code == 0
    assert err == ('postclient/super: warning: option "-d ALL" will ignore other command line queue IDs\n'
                   "postclient/super: Deleted: 1 message\n")


@pytest.mark.parametrize("argv", [["super"], ["super", "-d", "ALL", "bounce"],
                                  ["super", "-d", "ALL", "../etc"]])
def test_super_usage_errors(capsys, qdir, qmgr, argv):
    put(qdir, "deferred", ID1)
    code, _, err = run(capsys, qdir, *argv)
    assert code == os.EX_USAGE and err and files(qdir, "deferred") == [ID1]


def test_a_move_never_replaces_a_message(capsys, qdir, qmgr):
    put(qdir, "hold", ID1, ["first@example.com"])
    put(qdir, "deferred", ID1, ["second@example.com"])
    code, _, err = run(capsys, qdir, "super", "-H", ID1)
    assert code == os.EX_IOERR and "already exists" in err
    assert queuefile.read_queue_file(str(qdir / "hold" / ID1)).recipients[0].address == "first@example.com"
    kept = queuefile.read_queue_file(str(qdir / "deferred" / ID1))
    assert kept.recipients[0].address == "second@example.com"


def test_release_all_with_one_conflict_moves_and_reports_the_others(capsys, qdir, qmgr):
    """ALL moves a queue's messages in compiled batches: one message that
    deferred/ already holds stays in hold/, the others of its batch move, are
    counted, and the command fails naming it."""
    for queue_id in (ID1, ID2, ID3):
        put(qdir, "hold", queue_id, ["held@example.com"])
    put(qdir, "deferred", ID2, ["other@example.com"])
    code, _, err = run(capsys, qdir, "super", "-H", "ALL")
    assert code == os.EX_IOERR
    assert err == ("postclient/super: Released from hold: 2 messages\n"
                   f"postclient/super: fatal: deferred/{ID2} already exists\n")
    assert files(qdir, "hold") == [ID2] and files(qdir, "deferred") == [ID1, ID2, ID3]
    kept = queuefile.read_queue_file(str(qdir / "deferred" / ID2))
    assert kept.recipients[0].address == "other@example.com"
    assert time.time() - os.stat(qdir / "deferred" / ID1).st_mtime < 60     # due now


def test_without_a_queue_manager_requeue_warns_and_delete_does_not(capsys, qdir, qmgr):
    _, state = qmgr
    state["up"] = False
    put(qdir, "active", ID1)
    put(qdir, "deferred", ID2)
    code, _, err = run(capsys, qdir, "super", "-d", ID1)
    assert code == 0 and "warning" not in err and files(qdir, "active") == []
    code, _, err = run(capsys, qdir, "super", "-r", ID2)
    assert code == 0 and files(qdir, "incoming") == [ID2]
    assert err.endswith("the mail will be processed when the queue manager runs\n")
    assert "Requeued: 1 message\n" in err


# --- postclient cat ----------------------------------------------------------------------
def full_message(qdir):
    queued = put(qdir, "deferred", ID1,
                 [Recipient("a@example.com", original="A@Example.com", orcpt="rfc822;A@Example.com",
                            notify="SUCCESS,FAILURE"), Recipient("b@example.org")],
                 envid="ENV-1", ret="HDRS", encoding="8bit", smtputf8=True,
                 client={"NAME": "client.example", "ADDR": "192.0.2.9"})
    queuefile.mark_done(queued.path, queued.recipients[1].offset)
    return queued


def run_binary(capsysbinary, qdir, *argv):
    code = main(["-c", str(qdir.parent), *argv])
    out, err = capsysbinary.readouterr()
    return code, out, err.decode()


def test_cat_shows_envelope_content_and_markers(capsysbinary, qdir):
    queued = full_message(qdir)
    code, out, err = run_binary(capsysbinary, qdir, "cat", ID1)
    assert (code, err) == (0, "")
    name = f"deferred/{ID1}"
    assert out == (
        f"*** ENVELOPE RECORDS {name} ***\n"
        f"message_size: {len(CONTENT):>15} {queued.content_offset:>15} {2:>15}\n"
        "message_arrival_time: Sat Nov 21 20:15:35 2020\n"
        "sender: s@example.com\n"
        "named_attribute: encoding=8bit\n"
        "named_attribute: smtputf8=1\n"
        "named_attribute: envelope_id=ENV-1\n"
        "named_attribute: ret_flags=HDRS\n"
        "named_attribute: ADDR=192.0.2.9\n"
        "named_attribute: NAME=client.example\n"
        "dsn_original_recipient: rfc822;A@Example.com\n"
        "dsn_notify_flags: SUCCESS,FAILURE\n"
        "original_recipient: A@Example.com\n"
        "recipient: a@example.com\n"
        "done_recipient: b@example.org\n"
        f"*** MESSAGE CONTENTS {name} ***\n").encode() + CONTENT + (
        f"*** HEADER EXTRACTED {name} ***\n"
        f"*** MESSAGE FILE END {name} ***\n").encode()


def test_cat_parts(capsysbinary, qdir):
    full_message(qdir)
    header, _, body = CONTENT.partition(b"\r\n\r\n")
    assert run_binary(capsysbinary, qdir, "cat", "-h", ID1) == (0, header + b"\r\n", "")
    assert run_binary(capsysbinary, qdir, "cat", "-b", ID1) == (0, b"\r\n" + body, "")
    assert run_binary(capsysbinary, qdir, "cat", "-hb", "-q", ID1) == (0, CONTENT, "")
    code, out, _ = run_binary(capsysbinary, qdir, "cat", "-e", ID1)
    assert code == 0 and CONTENT not in out and b"Subject" not in out
    assert out.endswith(f"*** MESSAGE CONTENTS deferred/{ID1} ***\n*** HEADER EXTRACTED deferred/{ID1} ***\n"
                        f"*** MESSAGE FILE END deferred/{ID1} ***\n".encode())


@pytest.mark.parametrize("chunk", [1, 2, 5, 64 * 1024])
@pytest.mark.parametrize("content, header", [
    (b"A: 1\nB: 2\n continued\n\nbody\nC: not a header\n", b"A: 1\nB: 2\n continued\n"),
    (b"A: 1\nno header here\nX: y\n", b"A: 1\n"),
    (b"A: only a header, no newline", b"A: only a header, no newline"),
    (b"\nbody only\n", b""),
    (b"", b""),
])
def test_cat_splits_header_and_body_across_chunks(capsysbinary, qdir, monkeypatch, chunk, content, header):
    monkeypatch.setattr(cat_command, "CHUNK", chunk)
    put(qdir, "hold", ID1, content=content)
    assert run_binary(capsysbinary, qdir, "cat", "-h", ID1) == (0, header, "")
    assert run_binary(capsysbinary, qdir, "cat", "-b", ID1) == (0, content[len(header):], "")


def test_cat_ends_an_unterminated_message_before_the_next_marker(capsysbinary, qdir):
    put(qdir, "hold", ID1, content=b"Subject: x\n\nno newline at the end")
    code, out, _ = run_binary(capsysbinary, qdir, "cat", ID1)
    assert code == 0 and f"no newline at the end\n*** HEADER EXTRACTED hold/{ID1} ***".encode() in out


def test_cat_a_file_by_path_and_a_corrupt_file_by_id(capsysbinary, qdir, tmp_path):
    queued = full_message(qdir)
    copy = tmp_path / "copy"
    copy.write_bytes(open(queued.path, "rb").read())
    code, out, _ = run_binary(capsysbinary, qdir, "cat", "-e", str(copy))
    assert code == 0 and out.startswith(f"*** ENVELOPE RECORDS {copy} ***\n".encode())
    os.rename(queued.path, qdir / "corrupt" / ID1)
    code, out, _ = run_binary(capsysbinary, qdir, "cat", "-e", ID1)
    assert code == 0 and out.startswith(f"*** ENVELOPE RECORDS corrupt/{ID1} ***\n".encode())


def test_cat_a_truncated_file_shows_what_it_can_and_exits_1(capsysbinary, qdir):
    queued = full_message(qdir)
    data = open(queued.path, "rb").read()
    cut = data.index(b"done") if b"done" in data else queued.recipients[1].offset + 3
    open(queued.path, "wb").write(data[:cut])
    code, out, err = run_binary(capsysbinary, qdir, "cat", ID1)
    assert code == 1
    assert out.startswith(f"*** ENVELOPE RECORDS deferred/{ID1} ***\n".encode())
    assert b"message_arrival_time: Sat Nov 21 20:15:35 2020\n" in out
    assert b"recipient: a@example.com\n" in out and b"b@example.org" not in out
    assert b"MESSAGE CONTENTS" not in out and b"MESSAGE FILE END" not in out
    assert err.startswith(f"postclient/cat: error: deferred/{ID1}: corrupt queue file (offset ")


def test_cat_a_file_with_missing_envelope_records_is_corrupt_after_showing_it(capsysbinary, qdir):
    path = qdir / "hold" / ID1
    recipient = b"Px@example.com\0\0\0"
    path.write_bytes(queuefile.MAGIC + b"S0:\nR%d:%s\nM2:hi\nE0:\n" % (len(recipient), recipient))
    code, out, err = run_binary(capsysbinary, qdir, "cat", ID1)
    assert code == 1 and b"recipient: x@example.com\n" in out and b"MESSAGE FILE END" in out
    assert "missing envelope records" in err


def test_cat_not_found_and_bad_ids(capsysbinary, qdir):
    code, out, err = run_binary(capsysbinary, qdir, "cat", ID2)
    assert (code, out) == (os.EX_NOINPUT, b"") and f"open queue file {ID2}" in err
    code, _, err = run_binary(capsysbinary, qdir, "cat", "-q", "not-an-id")
    assert code == os.EX_USAGE and "bad mail queue ID: not-an-id" in err
    code, _, err = run_binary(capsysbinary, qdir, "cat", "/no/such/file")
    assert code == os.EX_NOINPUT and "/no/such/file" in err


def test_cat_looks_again_when_the_queue_manager_moves_the_file(capsysbinary, qdir, monkeypatch):
    put(qdir, "deferred", ID1)
    real_show, calls = cat_command.show, []

    def moved_first(path, label, out, **flags):
        calls.append(label)
        if len(calls) == 1:
            os.rename(qdir / "deferred" / ID1, qdir / "active" / ID1)
        return real_show(path, label, out, **flags)

    monkeypatch.setattr(cat_command, "show", moved_first)
    code, out, err = run_binary(capsysbinary, qdir, "cat", "-e", ID1)
    assert (code, err) == (0, "") and calls == [f"deferred/{ID1}", f"active/{ID1}"]
    assert out.startswith(f"*** ENVELOPE RECORDS active/{ID1} ***\n".encode())


def test_cat_several_files_returns_the_first_failure(capsysbinary, qdir):
    put(qdir, "hold", ID1)
    (qdir / "deferred" / ID2).write_bytes(b"junk")
    code, out, err = run_binary(capsysbinary, qdir, "cat", "-h", ID2, ID3, ID1)
    assert code == 1 and out == b"Subject: hello\r\nFrom: s@example.com\r\n folded\r\n"
    assert "bad magic" in err and f"open queue file {ID3}" in err


# --- postclient/queue/manage.py ---------------------------------------------------------
def test_move_message_is_one_rename_that_never_replaces(qdir):
    put(qdir, "deferred", ID1)
    os.rmdir(qdir / "hold")
    assert manage.move_message(str(qdir), ID1, "deferred", "hold", mtime=2000) is True
    assert files(qdir, "hold") == [ID1] and os.stat(qdir / "hold" / ID1).st_mtime == 2000
    assert manage.move_message(str(qdir), ID1, "deferred", "hold") is False
    put(qdir, "deferred", ID1)
    with pytest.raises(FileExistsError):
        manage.move_message(str(qdir), ID1, "deferred", "hold")
    with pytest.raises(ValueError):
        manage.move_message(str(qdir), "../x", "deferred", "hold")
    with pytest.raises(ValueError):
        manage.move_message(str(qdir), ID1, "deferred", "defer")


@pytest.mark.parametrize("renameat2", ["kernel", "missing"])
def test_a_move_keeps_the_file_it_would_replace(qdir, monkeypatch, renameat2):
    """renameat2(RENAME_NOREPLACE) where there is one, an lstat first where not."""
    ctypes, found = _fileio_py._renameat2()
    if renameat2 == "missing":
        monkeypatch.setattr(_fileio_py, "_libc", (ctypes, None))
    else:
        assert found is not None          # glibc >= 2.28 has it
    put(qdir, "hold", ID1)
    (qdir / "deferred" / ID1).write_bytes(b"the other copy")
    mover = manage.QueueMover(str(qdir))
    try:
        with pytest.raises(FileExistsError, match=f"deferred/{ID1} already exists"):
            mover.move(ID1, "hold", "deferred")
        assert mover.move(ID2, "hold", "deferred") is False
        put(qdir, "hold", ID2)
        assert mover.move(ID2, "hold", "deferred") is True
    finally:
        mover.close()
    assert (qdir / "deferred" / ID1).read_bytes() == b"the other copy"
    assert files(qdir, "hold") == [ID1] and files(qdir, "deferred") == [ID1, ID2]


def test_queue_mover_fsyncs_each_directory_once_after_many_moves(qdir, monkeypatch):
    for queue_id in (ID1, ID2, ID3):
        put(qdir, "hold", queue_id)
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}"))
                        or real_fsync(fd))
    mover = manage.QueueMover(str(qdir))
    try:
        assert [mover.move(i, "hold", "deferred", mtime=3000) for i in (ID1, ID2, ID3, ID4)] == [
            True, True, True, False]
        assert synced == []                     # not durable yet: nothing may be reported
        mover.sync()
        assert sorted(synced) == [str(qdir / "deferred"), str(qdir / "hold")]
        put(qdir, "hold", ID1)
        with pytest.raises(FileExistsError):
            mover.move(ID1, "hold", "deferred")
        os.rmdir(qdir / "incoming")
        assert mover.move(ID4, "incoming", "deferred") is False     # no such queue directory
    finally:
        mover.close()
    assert files(qdir, "deferred") == [ID1, ID2, ID3] and files(qdir, "hold") == [ID1]
    assert {os.stat(qdir / "deferred" / i).st_mtime for i in (ID1, ID2, ID3)} == {3000}

def test_find_message_and_walk(qdir):
    put(qdir, "deferred", ID2)
    put(qdir, "active", ID1)
    put(qdir, "corrupt", ID3)
    (qdir / "incoming" / f".{ID4}.tmp").write_bytes(b"")
    assert manage.find_message(str(qdir), ID2) == ("deferred", str(qdir / "deferred" / ID2))
    assert manage.find_message(str(qdir), ID3)[0] == "corrupt"
    assert manage.find_message(str(qdir), ID4) is None
    assert manage.find_message(str(qdir), "..") is None
    assert [(q, i) for q, i, _ in manage.walk(str(qdir))] == [("active", ID1), ("deferred", ID2)]
