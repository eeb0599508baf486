"""``postclient map`` (postclient.maps.postmap.main): build, query, exit codes."""

import io
import os

import pytest

from postclient.maps import open_table, postmap
from postclient.maps.postmap import main


def source(tmp_path, text, name="map"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def stdin(monkeypatch, data):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data.encode())))


def test_build_and_query(tmp_path, capsys):
    path = source(tmp_path, "Alice@Example.com  relay:[mx.example.com]\n")
    assert main([f"hash:{path}"]) == 0
    assert os.path.exists(path + ".db")
    assert main(["-q", "alice@EXAMPLE.com", f"hash:{path}"]) == 0
    assert capsys.readouterr().out == "relay:[mx.example.com]\n"


def test_bare_file_means_hash(tmp_path, capsys):
    path = source(tmp_path, "a b\n")
    assert main([path]) == 0
    assert main(["-q", "a", path]) == 0
    assert capsys.readouterr().out == "b\n"


def test_query_not_found_exits_1(tmp_path, capsys):
    path = source(tmp_path, "a b\n")
    assert main([f"hash:{path}"]) == 0
    assert main(["-q", "zzz", f"hash:{path}"]) == 1
    assert capsys.readouterr().out == ""


def test_query_any_table_type_and_first_table_wins(tmp_path, capsys):
    regexp = source(tmp_path, "/^(.*)@example\\.com$/ user $1\n", "re")
    assert main(["-q", "Bob@example.com", f"regexp:{regexp}"]) == 0
    assert main(["-q", "x", "inline:{y=1}", "static:{two words}"]) == 0
    assert main(["-q", "192.0.2.9", "cidr:{ {192.0.2.0/24 doc} }"]) == 0
    assert capsys.readouterr().out == "user Bob\ntwo words\ndoc\n"


def test_query_keys_from_stdin(tmp_path, capsys, monkeypatch):
    path = source(tmp_path, "a 1\nb 2\n")
    main([f"hash:{path}"])
    stdin(monkeypatch, "A\nnothing\nb\n")
    assert main(["-q", "-", f"hash:{path}", "static:fallback"]) == 0
    assert capsys.readouterr().out == "A\t1\nnothing\tfallback\nb\t2\n"
    stdin(monkeypatch, "x\ny\n")
    assert main(["-q", "-", "inline:{a=b}"]) == 1
    assert capsys.readouterr().out == ""


def test_sequence_lists_entries(tmp_path, capsys):
    path = source(tmp_path, "b 2\na 1\n")
    main([f"hash:{path}"])
    assert main(["-s", f"hash:{path}"]) == 0
    assert capsys.readouterr().out == "a\t1\nb\t2\n"
    assert main(["-s", "regexp:{ {/a/ b} }"]) == 64


def test_incremental_from_stdin(tmp_path, monkeypatch):
    path = str(tmp_path / "map")
    stdin(monkeypatch, "# added\nKey one\n  continued\nother two\n")
    assert main(["-i", f"hash:{path}"]) == 0
    table = open_table(f"hash:{path}")
    assert table.lookup("key") == "one  continued" and table.lookup("OTHER") == "two"
    stdin(monkeypatch, "good 1\nbad\n")
    assert main(["-i", f"hash:{path}"]) == 78
    assert table.lookup("good") is None


def test_duplicate_options(tmp_path, caplog):
    path = source(tmp_path, "a 1\na 2\n")
    assert main([f"hash:{path}"]) == 0
    assert open_table(f"hash:{path}").lookup("a") == "1"
    assert f'{path}:2: duplicate entry: "a"' in caplog.text
    assert main(["-r", f"hash:{path}"]) == 0
    assert open_table(f"hash:{path}").lookup("a") == "2"
    caplog.clear()
    assert main(["-w", f"hash:{path}"]) == 0
    assert "duplicate" not in caplog.text


@pytest.mark.parametrize("argv", [
    [],
    ["-q"],
    ["-q", "key"],
    ["-x", "hash:/tmp/x"],
    ["-q", "a", "-s", "hash:/tmp/x"],
    ["-i", "-q", "a", "hash:/tmp/x"],
    ["-i", "hash:/tmp/a", "hash:/tmp/b"],
    ["regexp:/etc/whatever"],
    ["-i", "cidr:/etc/whatever"],
])
def test_usage_errors_exit_64(argv, capsys):
    assert main(argv) == 64
    assert "usage: postclient map" in capsys.readouterr().err


def test_syntax_error_exits_78_with_file_and_line(tmp_path, capsys):
    path = source(tmp_path, "ok value\n\nbroken\n")
    assert main([f"hash:{path}"]) == 78
    assert f"{path}:3: expected format: key whitespace value" in capsys.readouterr().err
    assert not os.path.exists(path + ".db")
    regexp = source(tmp_path, "/ok/ fine\n/(/ broken\n", "re")
    assert main(["-q", "x", f"regexp:{regexp}"]) == 78
    assert f"{regexp}:2: bad regular expression" in capsys.readouterr().err


def test_unknown_type_and_missing_files_exit_78(tmp_path, capsys):
    assert main(["-q", "x", "nosuch:/tmp/x"]) == 78
    assert "nosuch:/tmp/x: unsupported lookup table type" in capsys.readouterr().err
    missing = str(tmp_path / "absent")
    assert main([f"hash:{missing}"]) == 78
    assert f"{missing}: cannot open hash table" in capsys.readouterr().err
    assert main(["-q", "x", f"hash:{missing}"]) == 78
    assert f"{missing}.db: cannot open hash table" in capsys.readouterr().err


def test_unwritable_index_exits_73(tmp_path, capsys):
    path = source(tmp_path, "a 1\n")
    os.mkdir(path + ".db")   # cannot be replaced by a file
    assert main([f"hash:{path}"]) == 73
    assert f"cannot write {path}.db" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["map", "map.db"]


def test_rebuild_replaces_old_index_atomically(tmp_path, capsys):
    path = source(tmp_path, "a old\n")
    assert main([f"hash:{path}"]) == 0
    before = os.stat(path + ".db")
    reader = open_table(f"hash:{path}")
    source(tmp_path, "a new\n")
    assert main([f"hash:{path}"]) == 0
    after = os.stat(path + ".db")
    assert after.st_ino != before.st_ino
    assert sorted(os.listdir(tmp_path)) == ["map", "map.db"]
    assert reader.lookup("a") == "old" and reader.changed()
    assert main(["-q", "a", f"hash:{path}"]) == 0
    assert capsys.readouterr().out == "new\n"


def test_warnings_go_to_stderr_without_logging_setup(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(postmap.logger, "hasHandlers", lambda: False)
    path = source(tmp_path, "a 1\nA 2\n")
    assert main([f"hash:{path}"]) == 0
    err = capsys.readouterr().err
    assert f'postclient map: warning: {path}:2: duplicate entry: "a"' in err
    assert not postmap.logger.handlers


def test_config_dir_option_is_accepted(tmp_path):
    path = source(tmp_path, "a 1\n")
    assert main(["-c", str(tmp_path), f"hash:{path}"]) == 0


def test_options_after_operands(tmp_path, capsys):
    path = source(tmp_path, "a 1\n")
    assert main([f"hash:{path}"]) == 0
    assert main([f"hash:{path}", "-q", "A"]) == 0
    assert capsys.readouterr().out == "1\n"
