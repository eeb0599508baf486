"""Which master.cf services the master runs.

Exports read_services(config) and master_cf_path(config).  Reads master.cf
from the configuration directory.

The master runs services of type ``unix`` (a UNIX stream listen socket under
``$queue_directory/private`` or ``public``).  Entries of another type (inet,
fifo, pass, unix-dgram) parse, but this master does not run them: it warns
and skips them instead of refusing to start, so that a master.cf shared with
newer tools still works.  A command that names no known service is not
checked here: the child fails at start and the service is throttled, as
with Postfix.
"""

import os

from ..config import mastercf


def master_cf_path(config):
    return os.path.join(config.config_dir, "master.cf")


def read_services(config):
    """([Service] of type unix, [warning text]); ConfigError when master.cf is bad."""
    services, warnings = mastercf.read_master_cf(master_cf_path(config))
    notes = [str(warning) for warning in warnings]
    runnable = []
    for service in services:
        if service.type != "unix":
            notes.append(f"{service.source}:{service.line}: service {service.name} type "
                         f"{service.type}: not supported by this master -- skipped")
            continue
        runnable.append(service)
    return runnable, notes
