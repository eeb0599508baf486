"""The queue tools start quickly: what `postclient queue` and `postclient super` load.

An operator (and every script that watches a queue) waits for these
commands; before this was looked at, ``postclient queue -f`` took 115 ms,
five sixths of it importing and building what it did not use.  These tests
keep the heavy modules out, so that a later change that pulls one back in
fails here rather than quietly costing every invocation.
"""

import json
import os
import subprocess
import sys

import pytest

from postclient.cli import main as cli_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# dataclasses (with inspect, ast, dis) and shutil (with bz2, lzma, zlib) were
# most of the avoidable start-up; ctypes and logging are loaded where needed.
HEAVY = ("dataclasses", "inspect", "shutil", "ctypes", "logging", "getpass", "postclient.smtp")


def loaded_after(tmp_path, *argv, heavy=HEAVY, message=""):
    """Run ``postclient -c DIR argv`` in a fresh interpreter; which ``heavy`` modules it loaded."""
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}/queue\n")
    for name in ("incoming", "active", "deferred", "hold", "public", "maildrop"):
        os.makedirs(tmp_path / "queue" / name, exist_ok=True)
    probe = ("import json, sys\n"
             "from postclient.cli.main import main\n"
             f"code = main({['-c', str(tmp_path), *argv]!r})\n"
             f"print(json.dumps([code, [m for m in {heavy!r} if m in sys.modules]]))\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                            input=message, timeout=60)
    code, loaded = json.loads(result.stdout.strip().splitlines()[-1])
    return code, loaded, result.stderr


@pytest.mark.parametrize("argv, expected_code", [
    (("queue", "-f"), 75),              # no queue manager runs: try again later
    (("queue",), 0),
    (("queue", "-j"), 0),
    (("super", "-H", "ALL"), 0),
])
def test_queue_tools_do_not_load_what_they_do_not_use(tmp_path, argv, expected_code):
    code, loaded, stderr = loaded_after(tmp_path, *argv)
    assert code == expected_code, stderr
    assert loaded == []


def test_sendmail_does_not_load_the_email_package(tmp_path):
    """Every submitted message pays for sendmail's start-up; the email package
    (with datetime, urllib.parse, random) was a sixth of it, for one Date header."""
    heavy = ("email", "email.utils", "email.header", "datetime", "dataclasses", "shutil")
    code, loaded, stderr = loaded_after(tmp_path, "sendmail", "-f", "a@example.org", "b@example.org",
                                        heavy=heavy, message="Subject: hi\n\nhello\n")
    assert code == 0, stderr
    assert loaded == []
    (queued,) = os.listdir(tmp_path / "queue" / "incoming")     # and the message is queued
    assert b"\nDate: " in (tmp_path / "queue" / "incoming" / queued).read_bytes()


def test_a_known_command_gets_only_its_own_subparser():
    parser = cli_main.build_parser("queue")
    (commands,) = [action for action in parser._actions if action.dest == "command"]
    assert list(commands.choices) == ["queue"]
    args = parser.parse_args(["-c", "/etc/x", "queue", "-f"])
    assert args.command == "queue" and args.mode == "flush"


def test_help_and_unknown_commands_still_see_every_command(capsys):
    parser = cli_main.build_parser(None)
    (commands,) = [action for action in parser._actions if action.dest == "command"]
    assert list(commands.choices) == [*cli_main.COMMANDS, "map"]
    assert cli_main.main(["no-such-command"]) == os.EX_USAGE
    message = capsys.readouterr().err
    assert "invalid choice: 'no-such-command'" in message and "'super'" in message and "'map'" in message


@pytest.mark.parametrize("columns, one_line", [("40", False), ("200", True)])
def test_help_wraps_at_the_width_in_columns(monkeypatch, capsys, columns, one_line):
    """The width is asked for once per process, and still follows $COLUMNS."""
    monkeypatch.setattr(cli_main, "_columns", None)
    monkeypatch.setenv("COLUMNS", columns)
    with pytest.raises(SystemExit):
        cli_main.main(["queue", "--help"])
    summary = cli_main.COMMANDS["queue"][2]
    lines = capsys.readouterr().out.splitlines()
    assert (summary in lines) is one_line
    assert "like postqueue(1)" in "\n".join(lines)
