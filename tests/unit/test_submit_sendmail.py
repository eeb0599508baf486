"""``postclient sendmail`` in-process: options, queue files, errors and exit codes.

Runs postclient.cli.sendmail.main() (and the postclient entry point) on a
temporary queue with a fake standard input.  Unprivileged submission through
maildrop/ and the pickup service under a real master: tests/integration/test_sendmail.py.
"""

import io
import os
import sys

import pytest

from postclient.cli import main as cli_main
from postclient.cli import sendmail
from postclient.queue import queuefile, submit


class Queue:
    def __init__(self, root, main_cf=""):
        self.root = root
        self.config_dir = os.path.join(root, "etc")
        self.queue_directory = os.path.join(root, "q")
        self.maillog = os.path.join(root, "maillog")
        os.makedirs(self.config_dir)
        for name, mode in (("incoming", 0o700), ("maildrop", 0o1733), ("public", 0o755)):
            os.makedirs(os.path.join(self.queue_directory, name))
            os.chmod(os.path.join(self.queue_directory, name), mode)
        with open(os.path.join(self.config_dir, "main.cf"), "w") as handle:
            handle.write(f"queue_directory = {self.queue_directory}\nmaillog_file = {self.maillog}\n"
                         f"myhostname = host.example\nmyorigin = origin.example\n{main_cf}\n")

    def files(self, queue="incoming"):
        return sorted(os.listdir(os.path.join(self.queue_directory, queue)))

    def only(self, queue="incoming"):
        (name,) = self.files(queue)
        return queuefile.read_queue_file(os.path.join(self.queue_directory, queue, name))

    def read(self, name, queue="incoming"):
        return queuefile.read_queue_file(os.path.join(self.queue_directory, queue, name))

    def content(self, queued):
        with queuefile.open_content(queued) as handle:
            return handle.read()

    def log(self):
        with open(self.maillog) as handle:
            return handle.read()


@pytest.fixture
def queue(tmp_path, monkeypatch):
    monkeypatch.delenv("NAME", raising=False)
    return Queue(str(tmp_path))


def run(queue, argv, stdin=b"Subject: test\n\nbody\n", monkeypatch=None, entry=False):
    fake = io.TextIOWrapper(io.BytesIO(stdin))
    saved = sys.stdin
    sys.stdin = fake
    try:
        if entry:
            return cli_main.main(["-c", queue.config_dir, "sendmail", *argv])
        return sendmail.main(argv, ["-c", queue.config_dir])
    finally:
        sys.stdin = saved


def test_a_message_is_queued_in_incoming(queue, capsys):
    status = run(queue, ["-f", "me@x.org", "a@y.org", "Bee <b@y.org>, c"])
    assert status == 0, capsys.readouterr().err
    queued = queue.only()
    assert queued.sender == "me@x.org"
    assert [(r.address, r.original, r.notify) for r in queued.recipients] == [
        ("a@y.org", "a@y.org", ""), ("b@y.org", "b@y.org", ""), ("c@origin.example", "c", "")]
    assert (queued.encoding, queued.smtputf8, queued.envid, queued.ret) == ("7bit", False, "", "")
    content = queue.content(queued)
    assert content.startswith(f"Received: by host.example (postclient, from userid {os.getuid()})\n"
                              f"\tid {queued.queue_id}; ".encode())
    assert f"Message-ID: <{queued.queue_id}@host.example>".encode() in content
    assert content.endswith(b"\n\nbody\n")
    assert f"postclient/sendmail[{os.getpid()}]: {queued.queue_id}: message-id=<{queued.queue_id}" \
           f"@host.example>" in queue.log()
    assert capsys.readouterr() == ("", "")
    assert queue.files("maildrop") == []


def test_the_entry_point_hands_sendmail_options_over_untouched(queue, capsys):
    # -oi, -v and -odi would be postclient's own -o/-v without the hand-over
    status = run(queue, ["-oi", "-odi", "-oem", "-v", "-f", "me@x.org", "a@y.org"],
                 stdin=b"Subject: s\n\n.\nstill body\n", entry=True)
    assert status == 0, capsys.readouterr().err
    assert queue.content(queue.only()).endswith(b"\n\n.\nstill body\n")


def test_global_overrides_before_sendmail_reach_main_cf(queue):
    fake = io.TextIOWrapper(io.BytesIO(b"Subject: s\n\nbody\n"))
    saved, sys.stdin = sys.stdin, fake
    try:
        status = cli_main.main(["-c", queue.config_dir, "-o", "myorigin=other.example",
                                "sendmail", "bob"])
    finally:
        sys.stdin = saved
    assert status == 0
    assert queue.only().recipients[0].address == "bob@other.example"


def test_the_sender_defaults_to_the_user_at_myorigin(queue):
    import pwd
    assert run(queue, ["a@y.org"]) == 0
    assert queue.only().sender == pwd.getpwuid(os.getuid()).pw_name + "@origin.example"


def test_null_and_unqualified_senders(queue):
    assert run(queue, ["-f", "<>", "a@y.org"]) == 0
    assert run(queue, ["-fme", "a@y.org"]) == 0
    assert run(queue, ["-r", "Me <me@x.org>", "a@y.org"]) == 0
    senders = [queue.read(name).sender for name in queue.files()]
    assert senders == ["", "me@origin.example", "me@x.org"]


def test_a_null_sender_gets_a_mailer_daemon_from_header(queue):
    assert run(queue, ["-f", "", "a@y.org"]) == 0
    assert b"\nFrom: MAILER-DAEMON@origin.example\n" in queue.content(queue.only())


def test_full_name_from_F_then_NAME(queue, monkeypatch):
    assert run(queue, ["-F", "Jo Example", "-f", "jo@x.org", "a@y.org"]) == 0
    monkeypatch.setenv("NAME", "From Env")
    assert run(queue, ["-f", "jo@x.org", "a@y.org"]) == 0
    first, second = [queue.content(queue.read(name)) for name in queue.files()]
    assert b"\nFrom: Jo Example <jo@x.org>\n" in first
    assert b"\nFrom: From Env <jo@x.org>\n" in second


def test_extract_recipients_adds_to_the_arguments(queue):
    message = b"To: t@y.org\nCc: Cee <c@y.org>\nBcc: hidden@y.org\nSubject: s\n\nbody\n"
    assert run(queue, ["-t", "-f", "me@x.org", "arg@y.org", "t@y.org"], stdin=message) == 0
    queued = queue.only()
    assert [r.address for r in queued.recipients] == ["arg@y.org", "t@y.org", "c@y.org", "hidden@y.org"]
    assert b"hidden" not in queue.content(queued)


def test_dsn_options_and_encoding(queue):
    argv = ["-N", "success,delay", "-R", "hdrs", "-V", "env-42", "-B", "8BITMIME", "-f", "me@x.org",
            "a@y.org", "b@y.org"]
    assert run(queue, argv) == 0
    queued = queue.only()
    assert [r.notify for r in queued.recipients] == ["SUCCESS,DELAY", "SUCCESS,DELAY"]
    assert (queued.ret, queued.envid, queued.encoding) == ("HDRS", "env-42", "8bit")


def test_eight_bit_content_and_smtputf8(queue):
    assert run(queue, ["-f", "me@x.org", "a@y.org"], stdin="Subject: café\n\nçà\n".encode()) == 0
    assert run(queue, ["-f", "me@x.org", "jürgen@bücher.example"]) == 0
    assert run(queue, ["-B", "7BIT", "-f", "me@x.org", "a@y.org"], stdin="\n\né\n".encode()) == 0
    first, second, third = [queue.read(name) for name in queue.files()]
    assert (first.encoding, first.smtputf8) == ("8bit", False)
    assert (second.encoding, second.smtputf8) == ("7bit", True)
    assert second.recipients[0].address == "jürgen@bücher.example"
    assert third.encoding == "7bit"


def test_a_dot_line_ends_input_without_i(queue):
    assert run(queue, ["-f", "me@x.org", "a@y.org"], stdin=b"Subject: s\n\nkept\n.\nlost\n") == 0
    assert queue.content(queue.only()).endswith(b"\n\nkept\n")


def test_duplicate_recipients_are_queued_once(queue):
    assert run(queue, ["-f", "me@x.org", "a@y.org", "a@Y.ORG", "a@y.org, b@y.org"]) == 0
    assert [r.address for r in queue.only().recipients] == ["a@y.org", "b@y.org"]


def test_crlf_input_is_stored_as_it_came(queue):
    assert run(queue, ["-f", "me@x.org", "a@y.org"], stdin=b"Subject: s\r\n\r\nline\r\n") == 0
    content = queue.content(queue.only())
    assert content.endswith(b"\r\n\r\nline\r\n") and b"\n\n" not in content


# --- refusals ------------------------------------------------------------------------------
def refused(queue, capsys, argv, status, text, stdin=b"Subject: s\n\nbody\n"):
    assert run(queue, argv, stdin=stdin) == status
    err = capsys.readouterr().err
    assert text in err, err
    assert err.startswith("postclient/sendmail: fatal: ")
    for name in ("incoming", "maildrop"):
        if os.path.isdir(os.path.join(queue.queue_directory, name)):
            assert queue.files(name) == []      # not even a temporary file


def test_no_recipients(queue, capsys):
    refused(queue, capsys, ["-f", "me@x.org"], 64,
            "Recipient addresses must be specified on the command line or via the -t option")
    refused(queue, capsys, ["-t", "-f", "me@x.org"], 64,
            "No recipient addresses found in message header", stdin=b"Subject: s\n\nbody\n")
    refused(queue, capsys, ["-t", "-f", "me@x.org"], 64,
            "No recipient addresses found in message header",
            stdin=b"To: undisclosed-recipients:;\n\nbody\n")


@pytest.mark.parametrize("argv, text", [
    (["a@y.org>"], "malformed recipient"),
    (["<a@y.org"], "malformed recipient"),
    (["john doe@y.org"], "malformed recipient"),
    (["a@y.org\r\nDATA"], "CR, LF or NUL"),
    (["-f", "me@x.org\nRCPT TO:<x@y>", "a@y.org"], "CR, LF or NUL"),
    (["-f", "a@x.org, b@x.org", "a@y.org"], "more than one sender"),
    (["-F", "Name\r\nBcc: x@y.org", "a@y.org"], "CR, LF or NUL"),
    (["-V", "env\nid", "a@y.org"], "-V envelope ID"),
    (["-N", "sometimes", "a@y.org"], "bad -N value"),
    (["-R", "most", "a@y.org"], "bad -R value"),
    (["-B", "BINARYMIME", "a@y.org"], "-B option needs 8BITMIME or 7BIT"),
    (["-n", "a@y.org"], "-n option not supported"),
    (["-XV", "a@y.org"], "VERP"),
    (["-bd"], "not supported"),
    (["-bs"], "not supported"),
    (["-bz"], "unsupported: -bz"),
    (["-I"], "alias"),
    (["-K", "a@y.org"], "invalid option"),
    (["-f"], "option requires an argument -- f"),
    (["-bp", "a@y.org"], "requires no recipient"),
    (["-t", "-bp"], "-t can be used only in delivery mode"),
])
def test_bad_command_lines_exit_64(queue, capsys, argv, text):
    refused(queue, capsys, argv, 64, text)


def test_a_malformed_header_address_with_t_exits_65(queue, capsys):
    refused(queue, capsys, ["-t", "-f", "me@x.org"], 65, "malformed address in the To: header",
            stdin=b"To: a@y.org, <b@y.org\n\nbody\n")


def test_an_oversize_message_exits_69(queue, capsys):
    small = Queue(os.path.join(queue.root, "small"), "message_size_limit = 1000")
    refused(small, capsys, ["-f", "me@x.org", "a@y.org"], 69, "message file too big",
            stdin=b"Subject: s\n\n" + b"x" * 2000)
    # within the limit as input, over it once our headers are added
    refused(small, capsys, ["-f", "me@x.org", "a@y.org"], 69, "message file too big",
            stdin=b"Subject: s\n\n" + b"x" * 900)
    assert "fatal: " in small.log() and "message file too big" in small.log()
    unlimited = Queue(os.path.join(queue.root, "unlimited"), "message_size_limit = 0")
    assert run(unlimited, ["-f", "me@x.org", "a@y.org"], stdin=b"\n" + b"x" * 20_000_000) == 0


def test_too_many_hops_exits_69(queue, capsys):
    hops = Queue(os.path.join(queue.root, "hops"), "hopcount_limit = 2")
    refused(hops, capsys, ["-f", "me@x.org", "a@y.org"], 69, "too many hops",
            stdin=b"Received: from elsewhere\n\nbody\n")


def test_an_unwritable_queue_exits_75_and_leaves_nothing(queue, capsys, monkeypatch):
    missing = Queue(os.path.join(queue.root, "missing"))
    os.rmdir(os.path.join(missing.queue_directory, "incoming"))
    refused(missing, capsys, ["-f", "me@x.org", "a@y.org"], 75, "queue file write error")

    def no_space(directory, queue_id, **fields):
        path = os.path.join(directory, f".{queue_id}.tmp")
        open(path, "w").close()
        os.unlink(path)             # write_queue_file removes its temporary file on errors
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(submit.queuefile, "write_queue_file", no_space)
    refused(queue, capsys, ["-f", "me@x.org", "a@y.org"], 75, "No space left on device")


def test_a_user_who_cannot_write_incoming_goes_through_maildrop(queue, monkeypatch):
    real = queuefile.write_queue_file

    def as_a_user(directory, queue_id, **fields):
        if directory.endswith("incoming"):
            raise PermissionError(13, "Permission denied")
        return real(directory, queue_id, **fields)
    monkeypatch.setattr(submit.queuefile, "write_queue_file", as_a_user)
    assert run(queue, ["-f", "me@x.org", "a@y.org"]) == 0
    assert queue.files("incoming") == []
    assert queue.only("maildrop").recipients[0].address == "a@y.org"


def test_no_login_name_exits_71_unless_f_is_given(queue, capsys, monkeypatch):
    monkeypatch.setattr(os, "getuid", lambda: 3999999)
    refused(queue, capsys, ["a@y.org"], 71, "no login name found for user ID 3999999")
    assert run(queue, ["-f", "me@x.org", "a@y.org"]) == 0
    assert b"from userid 3999999)" in queue.content(queue.only())


def test_a_configuration_error_exits_78(queue, capsys):
    with open(os.path.join(queue.config_dir, "main.cf"), "a") as handle:
        handle.write("message_size_limit = lots\n")
    refused(queue, capsys, ["-f", "me@x.org", "a@y.org"], 78, "message_size_limit")


def test_modes_that_do_nothing_exit_0_without_reading(queue):
    for argv in (["-bh"], ["-bH"], ["-q30m"], ["-q1h", "-bm"]):
        assert run(queue, argv, stdin=b"") == 0
    assert queue.files() == []


def test_ignored_legacy_flags_are_accepted(queue, capsys):
    argv = ["-Am", "-G", "-h", "17", "-L", "label", "-m", "-O", "x=y", "-U", "-x", "-e", "x",
            "-p", "smtp", "-o", "Q/var/spool", "-bm", "-f", "me@x.org", "--", "a@y.org"]
    assert run(queue, argv) == 0, capsys.readouterr().err
    assert queue.only().recipients[0].address == "a@y.org"


def test_options_end_at_the_first_recipient():
    options = sendmail.parse_options(["-i", "a@y.org", "-t"])
    assert options.recipients == ["a@y.org", "-t"] and not options.extract
    options = sendmail.parse_options(["-tif", "me@x.org", "-Cdir/main.cf", "a@y.org"])
    assert (options.extract, options.dot_ends, options.sender) == (True, False, "me@x.org")
    assert options.config_dir == "dir" and options.recipients == ["a@y.org"]


def test_maillog_on_standard_output_is_not_the_callers_output(queue, capsys):
    stdout = Queue(os.path.join(queue.root, "stdout"), "maillog_file = /dev/stdout")
    assert run(stdout, ["-f", "me@x.org", "a@y.org"]) == 0
    assert capsys.readouterr().out == ""


def test_queue_listing_modes_hand_over_to_postclient_queue(queue, capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(cli_main, "main", lambda argv: seen.append(argv) or 0)
    assert sendmail.main(["-bp"], ["-c", "/etc/x"]) == 0
    assert sendmail.main(["-q"], []) == 0
    assert sendmail.main(["-qRexample.com"], []) == 0
    assert seen == [["-c", "/etc/x", "queue", "-p"], ["queue", "-f"], ["queue", "-s", "example.com"]]


def test_a_signal_during_the_write_does_not_undo_a_queued_message(queue, monkeypatch):
    import signal
    real = queuefile.write_queue_file

    def interrupted_write(directory, queue_id, **fields):
        os.kill(os.getpid(), signal.SIGTERM)     # blocked: delivered, then ignored, once written
        return real(directory, queue_id, **fields)
    monkeypatch.setattr(submit.queuefile, "write_queue_file", interrupted_write)
    assert run(queue, ["-f", "me@x.org", "a@y.org"]) == 0
    assert len(queue.files()) == 1
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN     # restored for the caller


def test_a_signal_while_reading_input_queues_nothing(queue, capsys, monkeypatch):
    import signal

    def interrupted_read(stream, dot_ends=True, limit=0):
        os.kill(os.getpid(), signal.SIGTERM)
        return b""
    monkeypatch.setattr(submit, "read_message", interrupted_read)
    refused(queue, capsys, ["-f", "me@x.org", "a@y.org"], 75, "interrupted -- nothing was queued")
