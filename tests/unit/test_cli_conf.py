"""``postclient conf`` behaves like postconf(1); ``init`` and exit codes."""

import os
import subprocess
import sys

import pytest

from postclient.cli.main import main
from postclient.config import registry

MAIN_CF = """\
# Relay settings -- keep this comment
relayhost = [relay.example]:587

# timeouts
smtp_connect_timeout = 10s
smtp_helo_name =
    $myhostname
myhostname = mx.example.org
"""


@pytest.fixture
def confdir(tmp_path):
    (tmp_path / "main.cf").write_text(MAIN_CF)
    (tmp_path / "master.cf").write_text("smtp unix - - n - - smtp\nrelay unix - - n - 3 smtp -o smtp_helo_timeout=5s\n")
    return tmp_path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_default_of_line_length_limit(capsys):
    code, out, _ = run(capsys, "conf", "-d", "smtp_line_length_limit")
    assert (code, out) == (0, "smtp_line_length_limit = 990\n")


def test_every_manpage_parameter_is_known_to_conf_d(capsys):
    names = open(os.path.join(os.path.dirname(__file__), "..", "fixtures", "manpage-parameters.txt")).read().split()
    code, out, err = run(capsys, "conf", "-d", *names)
    assert code == 0 and "unknown" not in err
    printed = [line.split(" =")[0] for line in out.splitlines()]
    assert printed == names


def test_all_parameters_listed_sorted_in_postconf_form(capsys, confdir):
    code, out, _ = run(capsys, "conf", "-c", str(confdir))
    lines = out.splitlines()
    assert code == 0
    assert len(lines) == len(registry.REGISTRY)
    assert [line.split(" =")[0] for line in lines] == sorted(registry.REGISTRY)
    assert "relayhost = [relay.example]:587" in lines
    assert "smtp_helo_name = $myhostname" in lines
    assert "debug_peer_list =" in lines


def test_n_shows_only_main_cf(capsys, confdir):
    code, out, _ = run(capsys, "conf", "-n", "-c", str(confdir))
    assert out == ("myhostname = mx.example.org\nrelayhost = [relay.example]:587\n"
                   "smtp_connect_timeout = 10s\nsmtp_helo_name = $myhostname\n")


def test_names_h_and_x(capsys, confdir):
    _, out, _ = run(capsys, "conf", "-c", str(confdir), "-h", "relayhost", "smtp_connect_timeout")
    assert out == "[relay.example]:587\n10s\n"
    _, out, _ = run(capsys, "conf", "-c", str(confdir), "-x", "smtp_helo_name")
    assert out == "smtp_helo_name = mx.example.org\n"


def test_config_dir_from_environment(capsys, confdir, monkeypatch):
    monkeypatch.setenv("POSTCLIENT_CONFIG_DIR", str(confdir))
    _, out, _ = run(capsys, "conf", "-h", "relayhost")
    assert out == "[relay.example]:587\n"


def test_unknown_name_warns_like_postconf(capsys, confdir):
    code, out, err = run(capsys, "conf", "-c", str(confdir), "no_such_thing", "relayhost")
    assert code == 0
    assert out == "relayhost = [relay.example]:587\n"
    assert "warning: no_such_thing: unknown parameter" in err


def test_edit_keeps_comments_and_replaces_in_place(capsys, confdir):
    code, _, _ = run(capsys, "conf", "-c", str(confdir), "-e", "smtp_helo_name=helo.example", "relayhost=",
                     "smtp_mx_address_limit=3")
    assert code == 0
    text = (confdir / "main.cf").read_text()
    assert text == MAIN_CF.replace("relayhost = [relay.example]:587", "relayhost =") \
        .replace("smtp_helo_name =\n    $myhostname", "smtp_helo_name = helo.example") + "smtp_mx_address_limit = 3\n"


def test_edit_with_bad_value_leaves_main_cf_alone(capsys, confdir):
    code, _, err = run(capsys, "conf", "-c", str(confdir), "-e", "smtp_connect_timeout=3x")
    assert code == 78
    assert 'smtp_connect_timeout: bad time value "3x" (expected e.g. 30s, 5m)' in err
    assert (confdir / "main.cf").read_text() == MAIN_CF


def test_remove(capsys, confdir):
    code, _, _ = run(capsys, "conf", "-c", str(confdir), "-X", "smtp_helo_name")
    assert code == 0
    assert "smtp_helo_name" not in (confdir / "main.cf").read_text()
    assert "# timeouts" in (confdir / "main.cf").read_text()


def test_master_listing(capsys, confdir):
    code, out, _ = run(capsys, "conf", "-c", str(confdir), "-M")
    assert code == 0
    assert out.splitlines()[1].split() == ["relay", "unix", "-", "-", "n", "-", "3", "smtp", "-o",
                                           "smtp_helo_timeout=5s"]
    _, out, _ = run(capsys, "conf", "-c", str(confdir), "-M", "smtp/unix")
    assert out.split() == ["smtp", "unix", "-", "-", "n", "-", "-", "smtp"]


def test_config_error_exits_78_with_location(capsys, tmp_path):
    (tmp_path / "main.cf").write_text("\n\nsmtp_connect_timeout 30s\n")
    code, _, err = run(capsys, "conf", "-c", str(tmp_path))
    assert code == 78
    assert "main.cf:3: missing \"=\"" in err


def test_usage_errors_exit_64(capsys):
    assert run(capsys, "conf", "--bogus")[0] == 64
    assert run(capsys, "no-such-command")[0] == 64
    assert run(capsys, "conf", "-e")[0] == 64
    assert run(capsys, "conf", "-e", "-M", "a=b")[0] == 64


def test_init_writes_a_config_that_checks(capsys, tmp_path):
    etc = tmp_path / "etc"
    code, out, _ = run(capsys, "-c", str(etc), "init", "--queue-directory", str(tmp_path / "spool"),
                       "--maillog-file", "/dev/stdout")
    assert code == 0 and "wrote" in out
    assert (tmp_path / "spool").is_dir()
    _, out, _ = run(capsys, "conf", "-c", str(etc), "-h", "queue_directory", "maillog_file")
    assert out == f"{tmp_path / 'spool'}\n/dev/stdout\n"
    (etc / "main.cf").write_text((etc / "main.cf").read_text() + "relayhost = [kept]\n")
    run(capsys, "-c", str(etc), "init")
    assert "relayhost = [kept]" in (etc / "main.cf").read_text()


def test_installed_command_runs_as_a_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "postclient", "conf", "-d", "-h", "lmtp_tcp_port"],
                            capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout) == (0, "24\n")
