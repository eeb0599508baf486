"""master.cf command names and the modules that implement them.

Exports SERVICES, MODES, THREADS, ServiceLoadError, load_service(),
threads_wanted() and preload().  Reads nothing itself.

SERVICES maps the command column of master.cf to (module, mode):
  - "single": the module exports ``serve(conn, context)``, called for ONE
    accepted client connection (which may carry several requests until the
    client closes); the skeleton owns accept, max_use, max_idle, the
    lifeline, the watchdog and exceptions.  Optional ``init(context)`` runs
    once when the child starts, optional ``shutdown(context)`` once before it
    exits normally.  A command in THREADS serves several clients at once,
    each in a thread of its own (skeleton.serve_threaded()).
  - "multi": the module exports ``run(context)`` and owns its event loop (one
    process, many clients); it returns when ``context.lifeline_fd`` reads EOF.
    Optional ``init(context)`` as above.
A command that is not listed here, or whose module fails to import or lacks
its entry point, is a service that fails at start: the child logs a fatal
error and exits non-zero before serving anyone, so the master throttles it.
"""

import importlib

SERVICES = {
    "smtp": ("postclient.smtp.service", "single"),
    "lmtp": ("postclient.smtp.service", "single"),
    "scache": ("postclient.scache.server", "multi"),
    "pickup": ("postclient.queue.pickup", "single"),
    "qmgr": ("postclient.queue.qmgr", "multi"),
    "echo": ("postclient.server.echo", "single"),   # health check, diagnostics, tests
}
MODES = {"single": "serve", "multi": "run"}
# "single" services whose serve() may run in several threads of one process at
# once, and the parameter that says how many (skeleton.serve_threaded()).
THREADS = {"smtp": "smtp_agent_threads", "lmtp": "lmtp_agent_threads"}


class ServiceLoadError(Exception):
    """The command cannot run: unknown, or its module is broken."""


def load_service(command):
    """(module, mode) for a master.cf command; ServiceLoadError when it cannot run."""
    entry = SERVICES.get(command)
    if entry is None:
        raise ServiceLoadError(f"unknown service command: {command} "
                               f"(expected one of: {', '.join(sorted(SERVICES))})")
    module_name, mode = entry
    try:
        module = importlib.import_module(module_name)
    except Exception as error:   # any import-time failure is a bad command startup
        raise ServiceLoadError(f"{command}: cannot load {module_name}: "
                               f"{type(error).__name__}: {error}") from None
    entry_point = MODES[mode]
    if not callable(getattr(module, entry_point, None)):
        raise ServiceLoadError(f"{command}: {module_name} has no {entry_point}() "
                               f"(a {mode} service must export one)")
    return module, mode


def threads_wanted(command, config):
    """Clients one process of ``command`` serves at once: 1, or for a threaded
    service its parameter in ``config`` (main.cf with the service's -o
    overrides).  ConfigError for a bad value."""
    name = THREADS.get(command)
    return config.get(name) if name else 1


def preload(commands):
    """Import the modules of ``commands`` in the master, so children start fast.

    Failures are ignored here: the child tries again and reports them.
    """
    for command in commands:
        try:
            load_service(command)
        except ServiceLoadError:
            pass
