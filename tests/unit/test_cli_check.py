"""``postclient check``: every problem in main.cf, master.cf and the tables, in one run."""

import pytest

from postclient.cli.main import main

MASTER_CF = "smtp unix - - n - - smtp\nrelay unix - - n - - smtp -o smtp_generic_maps=regexp:{RELAY_TABLE}\n"


@pytest.fixture
def confdir(tmp_path):
    generic = tmp_path / "generic"
    generic.write_text("user@example.com  other@example.net\n")
    (tmp_path / "header_checks").write_text("/^Subject: secret/  REPLACE Subject: (removed)\n")
    (tmp_path / "relay.regexp").write_text("/^(.*)@old\\.example$/  $1@new.example\n")
    main(["map", f"hash:{generic}"])
    (tmp_path / "main.cf").write_text(
        f"queue_directory = {tmp_path}/spool\n"
        f"smtp_generic_maps = hash:{generic}\n"
        f"smtp_header_checks = regexp:{tmp_path}/header_checks\n"
        "smtp_pix_workaround_maps = inline:{ 192.0.2.1=disable_esmtp, { 192.0.2.2 = disable_esmtp, delay_dotcrlf } }\n")
    (tmp_path / "master.cf").write_text(MASTER_CF.format(RELAY_TABLE=tmp_path / "relay.regexp"))
    return tmp_path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_good_configuration_passes_and_reports_the_codec(capsys, confdir):
    code, out, err = run(capsys, "check", "-c", str(confdir))
    assert code == 0, err
    assert "codec: " in out
    assert "lookup tables: 4 checked" in out
    assert "master.cf: " in out and "2 services" in out


def test_codec_implementation_is_reported_truthfully(capsys, confdir):
    from postclient import codec
    from postclient.queue import fileio, queuefile
    _, out, _ = run(capsys, "check", "-c", str(confdir))
    assert f"codec: {codec.IMPLEMENTATION}" in out
    assert f"queue file I/O: {fileio.IMPLEMENTATION}" in out
    assert f"queue file scanner: {queuefile.SCANNER}" in out
    from postclient import extensions
    from postclient.smtp import protocol
    agent = "mypyc (compiled)" if extensions.is_compiled(protocol) else "python (pure Python)"
    assert f"delivery agent: {agent}\n" in out


def test_every_error_is_reported_with_its_location(capsys, confdir):
    (confdir / "header_checks").write_text("# fine\n/unterminated  REPLACE x\n")
    with open(confdir / "main.cf", "a") as handle:
        handle.write("smtp_connect_timeout = 3x\n")
    code, _, err = run(capsys, "check", "-c", str(confdir))
    assert code == 78
    assert 'main.cf:5: smtp_connect_timeout: bad time value "3x" (expected e.g. 30s, 5m)' in err
    # table errors are checked once the main.cf values themselves are sound
    (confdir / "main.cf").write_text((confdir / "main.cf").read_text().replace("3x", "30s"))
    code, _, err = run(capsys, "check", "-c", str(confdir))
    assert code == 78
    assert f"{confdir}/header_checks:2:" in err


def test_a_missing_table_is_an_error(capsys, confdir):
    (confdir / "relay.regexp").unlink()
    code, _, err = run(capsys, "check", "-c", str(confdir))
    assert code == 78
    assert "relay.regexp" in err


def test_bad_master_cf_override_is_reported(capsys, confdir):
    (confdir / "master.cf").write_text("smtp unix - - n - - smtp -o smtp_helo_timeout=forever\n")
    code, _, err = run(capsys, "check", "-c", str(confdir))
    assert code == 78
    assert 'master.cf:1: smtp_helo_timeout: bad time value "forever"' in err


def test_bad_master_cf_syntax_is_reported(capsys, confdir):
    (confdir / "master.cf").write_text("smtp unix - - n - - smtp\nbroken unix\n")
    code, _, err = run(capsys, "check", "-c", str(confdir))
    assert code == 78
    assert "master.cf:2: only 2 of 8 columns" in err


def test_missing_main_cf(capsys, tmp_path):
    code, _, err = run(capsys, "check", "-c", str(tmp_path))
    assert code == 78
    assert "main.cf: cannot read" in err
