"""``postclient check``: validate everything before it is used.

Checks main.cf (syntax and every parameter's value), master.cf (columns and
each service's ``-o`` overrides), opens every lookup table that main.cf or a
master.cf override names, and reports whether the compiled hot paths (the
codec, the queue manager's file I/O, the queue file scanner) or their pure-Python
versions are in use.  Prints every problem found, not only the first, and
exits 78 (EX_CONFIG) if there was any.
"""

import os
import sys

from ..config import mastercf, registry, types
from ..config.errors import ConfigError
from .common import load_config, warn


def add_arguments(parser):
    pass


def _table_parameters(config):
    """(name, value, setting) of every lookup-table parameter with a value."""
    for name, param in sorted(registry.REGISTRY.items()):
        if param.type is types.MAPS and config.raw(name):
            yield name, config.get(name), config.setting(name)


def _check_tables(config, errors, seen):
    from .. import maps

    for name, specs, setting in _table_parameters(config):
        for spec in specs:
            if spec in seen:
                continue
            seen.add(spec)
            try:
                maps.open_table(spec)
            except ConfigError as error:
                errors.append(error)
            except OSError as error:
                errors.append(ConfigError(setting.source, setting.line,
                                          f"{name}: {spec}: {error.strerror or error}"))


def run(args):
    errors = []
    config = load_config(args, "check")
    errors.extend(config.validate())
    master_path = os.path.join(config.config_dir, "master.cf")
    services = []
    try:
        services, warnings = mastercf.read_master_cf(master_path)
        for warning in warnings:
            warn("check", str(warning))
    except ConfigError as error:
        errors.append(error)
    seen_tables = set()
    if not errors:
        _check_tables(config, errors, seen_tables)
    for service in services:
        if not service.overrides:
            continue
        service_config = config.with_overrides(service.overrides)
        for setting in service.overrides:
            try:
                service_config.get(setting.name)
            except ConfigError as error:
                errors.append(error)
        if not errors:
            _check_tables(service_config, errors, seen_tables)
    queue_directory = config.raw("queue_directory") and config.expand("queue_directory")
    if queue_directory and not os.path.isdir(queue_directory):
        warn("check", f"queue_directory {queue_directory} does not exist yet")
    from .. import codec, extensions
    from ..queue import fileio, queuefile
    from ..smtp import protocol

    agent = "mypyc" if extensions.is_compiled(protocol) else "python"
    for name, implementation in (("codec", codec.IMPLEMENTATION),
                                 ("queue file I/O", fileio.IMPLEMENTATION),
                                 ("queue file scanner", queuefile.SCANNER),
                                 ("delivery agent", agent)):
        print(f"{name}: {implementation}" + (
            " (pure Python)" if implementation == "python" else " (compiled)"))
    print(f"main.cf: {config.main_cf_path}: {len(config.settings)} settings")
    print(f"master.cf: {master_path}: {len(services)} services")
    print(f"lookup tables: {len(seen_tables)} checked")
    for error in errors:
        print(f"postclient/check: error: {error}", file=sys.stderr)
    if errors:
        print(f"postclient/check: {len(errors)} error(s)", file=sys.stderr)
        return os.EX_CONFIG
    return 0
