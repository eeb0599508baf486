"""master.cf commands -> service modules: what cannot run fails at start."""

import pytest

from postclient.server import registry
from postclient.server.registry import ServiceLoadError, load_service


def test_the_interface_the_services_code_against():
    assert registry.SERVICES["smtp"] == ("postclient.smtp.service", "single")
    assert registry.SERVICES["lmtp"] == ("postclient.smtp.service", "single")
    assert registry.SERVICES["scache"] == ("postclient.scache.server", "multi")
    assert registry.SERVICES["echo"] == ("postclient.server.echo", "single")


def test_echo_loads_as_a_single_service():
    module, mode = load_service("echo")
    assert mode == "single" and callable(module.serve)


def test_unknown_command():
    with pytest.raises(ServiceLoadError, match="unknown service command: nosuch"):
        load_service("nosuch")


def test_module_that_fails_to_import(monkeypatch):
    monkeypatch.setitem(registry.SERVICES, "ghost", ("postclient.no_such_module", "single"))
    with pytest.raises(ServiceLoadError, match="ghost: cannot load postclient.no_such_module: "
                                               "ModuleNotFoundError"):
        load_service("ghost")


def test_module_without_its_entry_point(monkeypatch):
    monkeypatch.setitem(registry.SERVICES, "wrong", ("postclient.server.echo", "multi"))
    with pytest.raises(ServiceLoadError, match=r"has no run\(\)"):
        load_service("wrong")


def test_preload_ignores_what_cannot_load(monkeypatch):
    monkeypatch.setitem(registry.SERVICES, "ghost", ("postclient.no_such_module", "single"))
    registry.preload({"ghost", "nosuch", "echo"})
