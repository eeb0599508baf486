"""``postclient sendmail`` and the pickup service under a real master.

A master runs pickup (public/pickup) and, standing in for the queue manager,
an echo service named qmgr (public/qmgr) whose log shows each wakeup it
gets.  Submissions run as separate processes: as root through the real
``python -m postclient`` entry point, and as the unprivileged user "nobody"
in a forked child that has dropped its privileges (the interpreter itself
lives where nobody may not exec it), which must go through maildrop/ and
the pickup service.
"""

import io
import os
import signal
import subprocess
import sys
import time

import pytest

from postclient import ipc
from postclient.queue import queuefile, submit
from postclient.queue.qid import new_queue_id
from tests.integration.master_harness import master_instance, wait_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

MASTER_CF = ["pickup unix n - n 60 1 pickup",
             "qmgr unix n - n - 1 echo"]          # stand-in: logs "wakeup request"
MAIN_CF = "myhostname = relay.example\nmyorigin = origin.example\n"
NOBODY = 65534
MESSAGE = b"Subject: integration\n\nhello\n"


@pytest.fixture
def master(master_instance):
    instance = master_instance(MASTER_CF, MAIN_CF)
    os.chmod(instance.root, 0o755)        # let "nobody" read main.cf and reach the queue
    return instance


def queue_files(master, queue):
    return sorted(n for n in os.listdir(os.path.join(master.queue_directory, queue)))


def sendmail(master, *args, stdin=MESSAGE):
    return subprocess.run([sys.executable, "-m", "postclient", "-c", master.config_dir, "sendmail", *args],
                          input=stdin, capture_output=True, timeout=30)


def sendmail_as_nobody(master, argv, stdin=MESSAGE):
    """Run sendmail.main() in a child that is uid/gid nobody; returns its exit status.

    Whatever the child will import is imported first, as root: this machine's
    Python may live where nobody cannot read (a pyenv under /root), while a
    real ``postclient sendmail`` run by nobody starts as nobody from an
    installed, readable Python.  queuefile loads ctypes only for the maildrop
    fsync fallback (syncfs), so it is named here.
    """
    import ctypes  # noqa: F401
    from postclient.cli import sendmail as sendmail_command
    pid = os.fork()
    if pid == 0:
        status = 70
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
            status = sendmail_command.main(argv, ["-c", master.config_dir])
        except BaseException as error:   # report, never return into pytest
            os.write(2, f"child: {error!r}\n".encode())
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_root_submits_into_incoming_and_wakes_the_queue_manager(master):
    before = len(master.log_lines(r"pctest/qmgr\[\d+\]: wakeup request"))
    done = sendmail(master, "-oi", "-f", "me@origin.example", "rcpt@example.net", "local")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"" and done.stderr == b""
    (queue_id,) = queue_files(master, "incoming")
    queued = queuefile.read_queue_file(os.path.join(master.queue_directory, "incoming", queue_id))
    assert [r.address for r in queued.recipients] == ["rcpt@example.net", "local@origin.example"]
    master.wait_for_log(rf"pctest/sendmail\[\d+\]: {queue_id}: message-id=<{queue_id}@relay.example>")
    master.wait_for_log(r"pctest/qmgr\[\d+\]: wakeup request", count=before + 1)
    assert queue_files(master, "maildrop") == []


def test_nobody_goes_through_maildrop_and_pickup(master):
    assert os.stat(os.path.join(master.queue_directory, "maildrop")).st_mode & 0o7777 == 0o1733
    wakeups = len(master.log_lines(r"pctest/qmgr\[\d+\]: wakeup request"))
    status = sendmail_as_nobody(master, ["-f", "nobody@origin.example", "rcpt@example.net"])
    assert status == 0
    wait_until(lambda: not queue_files(master, "maildrop"), 15, what="pickup to empty maildrop/")
    (queue_id,) = queue_files(master, "incoming")
    path = os.path.join(master.queue_directory, "incoming", queue_id)
    assert os.stat(path).st_uid == os.getuid()        # pickup's private copy, not nobody's file
    queued = queuefile.read_queue_file(path)
    assert queued.sender == "nobody@origin.example"
    with queuefile.open_content(queued) as handle:
        assert handle.read().startswith(b"Received: by relay.example (postclient, from userid 65534)")
    master.wait_for_log(rf"pctest/pickup\[\d+\]: {queue_id}: uid={NOBODY} from=<nobody@origin.example>")
    master.wait_for_log(r"pctest/qmgr\[\d+\]: wakeup request", count=wakeups + 1)


def test_nobody_cannot_get_a_bad_file_past_pickup(master):
    """A hand-made maildrop file from nobody: garbage and a forged 'done' recipient."""
    def write_as_nobody(name, data):
        pid = os.fork()
        if pid == 0:
            try:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                with open(os.path.join(master.queue_directory, "maildrop", name), "wb") as handle:
                    handle.write(data)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)

    garbage = new_queue_id()
    write_as_nobody(garbage, b"PCQ1\nnot really\n")
    forged = new_queue_id()
    scratch = os.path.join(master.root, "scratch")
    os.mkdir(scratch)
    made = queuefile.write_queue_file(scratch, forged, sender="x@example.com", recipients=["a@example.net"],
                                      content=b"\n", arrival_time=time.time(), client={"ADDR": "10.0.0.1"})
    with open(made, "rb") as handle:
        write_as_nobody(forged, handle.read())
    still_writing = f".{new_queue_id()}.tmp"
    write_as_nobody(still_writing, b"PCQ1\n")
    assert submit.wake(master.queue_directory, "pickup")
    wait_until(lambda: len(queue_files(master, "corrupt")) == 2, 15, what="two files in corrupt/")
    assert sorted(queue_files(master, "corrupt")) == sorted([garbage, forged])
    assert queue_files(master, "maildrop") == [still_writing]
    assert queue_files(master, "incoming") == []
    master.wait_for_log(rf"pctest/pickup\[\d+\]: warning: {forged}: corrupt queue file .*client attributes")


def test_the_pickup_socket_announces_its_protocol(master):
    deadline = time.monotonic() + 10
    sock = ipc.connect_unix(master.socket_path("pickup", public=True), deadline)
    try:
        assert ipc.receive_message(sock, deadline) == {"protocol": "pickup", "version": 1}
        ipc.send_message(sock, {"request": "wakeup"}, deadline)
        with pytest.raises(ipc.IpcClosed):      # no reply: pickup scans and hangs up
            ipc.receive_message(sock, deadline)
    finally:
        sock.close()


def test_without_a_master_the_mail_waits_in_incoming(master_instance):
    idle = master_instance(MASTER_CF, MAIN_CF, start=False)
    for name in ("incoming", "maildrop", "public"):
        os.makedirs(os.path.join(idle.queue_directory, name))
    done = sendmail(idle, "-f", "me@origin.example", "rcpt@example.net")
    assert done.returncode == 0 and done.stderr == b""
    assert len(queue_files(idle, "incoming")) == 1


def test_a_killed_sendmail_leaves_nothing_to_deliver(master):
    command = [sys.executable, "-m", "postclient", "-c", master.config_dir, "sendmail", "-f",
               "me@origin.example", "rcpt@example.net"]
    for how in (signal.SIGKILL, signal.SIGTERM):
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        process.stdin.write(b"Subject: half\n\nfirst half of the body\n")
        process.stdin.flush()
        time.sleep(1.0)                 # it is reading standard input by now
        process.send_signal(how)
        _, stderr = process.communicate(timeout=15)
        if how == signal.SIGTERM:
            assert process.returncode == 75 and b"nothing was queued" in stderr
        assert queue_files(master, "incoming") == [] and queue_files(master, "maildrop") == []


def test_the_queue_manager_takes_submissions_as_soon_as_they_are_made(master_instance):
    """With the real qmgr: each submission is activated at once, not at the next queue run."""
    relay = master_instance(["pickup unix n - n 60 1 pickup", "qmgr unix n - n 300 1 qmgr",
                             "smtp unix - - n - 1 smtp"],
                            MAIN_CF + "relayhost = [127.0.0.1]:1\nqueue_run_delay = 3600s\n")
    os.chmod(relay.root, 0o755)
    time.sleep(1)                  # the queue manager has made its start-up scan
    done = sendmail(relay, "-f", "me@origin.example", "root@example.net")
    assert done.returncode == 0, done.stderr
    assert sendmail_as_nobody(relay, ["-f", "nobody@origin.example", "nobody@example.net"]) == 0
    for sender in ("me@origin.example", "nobody@origin.example"):
        relay.wait_for_log(rf"pctest/qmgr\[\d+\]: [0-9A-F]+: from=<{sender}>, size=\d+, nrcpt=1 "
                           r"\(queue active\)", timeout=10)


def test_bad_input_exit_codes_through_the_entry_point(master):
    done = sendmail(master, "-f", "me@origin.example")
    assert done.returncode == 64
    assert b"Recipient addresses must be specified" in done.stderr
    done = sendmail(master, "-t", stdin=b"To: <broken\n\nbody\n")
    assert done.returncode == 65 and b"malformed address in the To: header" in done.stderr
    done = subprocess.run([sys.executable, "-m", "postclient", "-c", master.config_dir,
                           "-o", "message_size_limit=100", "sendmail", "rcpt@example.net"],
                          input=b"\n" + b"x" * 200, capture_output=True, timeout=30)
    assert done.returncode == 69 and b"message file too big" in done.stderr
    assert queue_files(master, "incoming") == []
