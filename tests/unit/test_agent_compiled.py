"""The delivery agent's per-message modules, compiled by mypyc (setup.py).

test_agent_modules_are_compiled fails (it does not skip) when the build left
them pure Python, so a broken build cannot hide behind the sources; the
other tests show that POSTCLIENT_NO_EXTENSIONS=1 loads the sources instead,
and that the compiled modules behave as their source where mypyc could
differ: class constants, class-level tables, declared types.
"""

import importlib
import importlib.machinery
import os

import pytest

from postclient import extensions
from postclient.smtp import commands, driver, events, protocol, reuse
from tests.fresh_python import ROOT, run_python
from tests.stale_build import stale_modules
AGENT_MODULES = ("commands", "driver", "engine", "events", "protocol", "reply", "reuse",
                 "service", "trouble")


def _setup_py_modules():
    """AGENT_MODULES as setup.py lists them (read, not imported: setup.py builds)."""
    namespace = {}
    with open(os.path.join(ROOT, "setup.py")) as handle:
        source = handle.read()
    start = source.index("AGENT_MODULES = ")
    end = source.index(")]", start) + 2
    exec(source[start:end], namespace)
    return tuple(path.rsplit("/", 1)[1][:-3] for path in namespace["AGENT_MODULES"])


def test_the_list_here_is_the_list_setup_py_compiles():
    assert _setup_py_modules() == AGENT_MODULES


def test_agent_modules_are_compiled():
    """Fails (does not skip) when `make build` did not compile them."""
    if extensions.disabled():
        pytest.skip("POSTCLIENT_NO_EXTENSIONS is set: the sources are in use")
    for name in AGENT_MODULES:
        module = importlib.import_module(f"postclient.smtp.{name}")
        assert extensions.is_compiled(module), (
            f"{module.__name__} comes from {module.__file__}: run `make build` (needs mypy)")


def test_a_compiled_module_older_than_its_source_is_found(tmp_path):
    """What tests/conftest.py stops the run for: a stale build would run old code."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for name, built_at, source_at in (("fresh", 200, 100), ("same", 100, 100),
                                      ("stale", 100, 200)):
        (tmp_path / f"{name}{suffix}").write_bytes(b"")
        (tmp_path / f"{name}.py").write_text("")
        os.utime(tmp_path / f"{name}{suffix}", (built_at, built_at))
        os.utime(tmp_path / f"{name}.py", (source_at, source_at))
    (tmp_path / f"alone{suffix}").write_bytes(b"")         # no source beside it: a pyx build
    os.utime(tmp_path / f"alone{suffix}", (1, 1))
    assert stale_modules(str(tmp_path)) == [(str(tmp_path / f"stale{suffix}"),
                                             str(tmp_path / "stale.py"))]


def test_no_extensions_loads_the_agent_modules_from_source():
    code = ("import postclient.smtp.engine as e, postclient.smtp.protocol as p, "
            "postclient.smtp.reuse as r; print(e.__file__, p.__file__, r.__file__)")
    files = run_python(code, no_extensions=True)
    assert [os.path.basename(f) for f in files] == ["engine.py", "protocol.py", "reuse.py"]


def test_use_sources_loads_the_rest_from_source_without_the_variable():
    """bench/transaction_cpu.py --python-agent: the agent from source, the codec compiled."""
    code = ("import postclient.smtp, postclient.codec as c; from postclient import extensions;"
            "extensions.use_sources(postclient.smtp.__path__);"
            "import postclient.smtp.driver as d; print(d.__file__, c.IMPLEMENTATION)")
    driver_file, codec = run_python(code, no_extensions=False)
    assert os.path.basename(driver_file) == "driver.py"
    assert [codec] == run_python("import postclient.codec as c; print(c.IMPLEMENTATION)", False)


def test_without_the_variable_the_build_is_used():
    if not all(extensions.is_compiled(importlib.import_module(f"postclient.smtp.{name}"))
               for name in AGENT_MODULES):
        pytest.skip("not compiled: see test_agent_modules_are_compiled")
    (engine_file,) = run_python("import postclient.smtp.engine as e; print(e.__file__)", False)
    assert not engine_file.endswith(".py")


# --- where compiled code could differ from its source --------------------------------------

def test_state_constants_are_class_attributes():
    assert protocol.State.READY == "READY" and protocol.State.CLOSED == "CLOSED"
    assert protocol.STATES[protocol.State.READY].timeout is None


def test_class_level_table_of_an_exception():
    error = commands.UnsafeValueError("helo_name", "a\r\nb")
    assert (error.field, error.dsn) == ("helo_name", "4.3.5")
    assert commands.UnsafeValueError("sender", "x\n").dsn == "5.1.7"
    assert commands.UnsafeValueError("something else", "x\n").dsn == "5.5.4"


def test_fields_take_what_python_would():
    """Declared Any: a list where a tuple is usual, None where a string is usual,
    an int for a flag - as the pure-Python dataclasses accept them."""
    envelope = commands.Envelope(sender="a@example.com", recipients=[commands.Rcpt("b@example.com")],
                                 envid=None, smtputf8=1)
    assert [r.address for r in envelope.recipients] == ["b@example.com"]
    assert envelope.envid is None and envelope.smtputf8 == 1
    failure = events.Failure("rcpt", "recipient", "5.1.1", "no such user", reply=None,
                             protocol_error=0)
    assert failure.hard and not failure.soft and failure.diagnostic == ""
    options = driver.SessionOptions(line_length_limit=500, pix_delay=3).for_message(7)
    assert (options.line_length_limit, options.pix_delay, options.message_age) == (500, 3, 7)


def test_singletons_stay_single():
    assert events._NeedData() is events.NEED_DATA and events._Paused() is events.PAUSED


def test_reuse_reads_its_module_variables_when_it_runs(monkeypatch):
    """Compiled, reuse.py must still see HOLD_IDLE and _held replaced at run time (the
    shutdown test relies on both), an int where the source has a float included."""
    class Kept:
        since, ttl = 10.0, 3600

    monkeypatch.setattr(reuse, "HOLD_IDLE", 5)
    assert reuse._hand_over_at(Kept()) == 15
    monkeypatch.setattr(reuse, "HOLD_IDLE", 7200.5)
    assert reuse._hand_over_at(Kept()) == 3610.0            # min(HOLD_IDLE, ttl)
    mine = {}
    monkeypatch.setattr(reuse, "_held", mine)
    kept = Kept()
    kept.pid = os.getpid()
    kept.hand_over = lambda: None
    monkeypatch.setattr(reuse, "HOLD_IDLE", 3600)
    reuse._publish(kept)
    assert list(mine.values()) == [kept] and isinstance(kept.since, float)
    assert reuse._claim() is kept and mine == {}
