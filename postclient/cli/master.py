"""``postclient start / start-fg / stop / reload / status``: run the master, like postfix(1).

Exports the command objects start, start_fg, stop, reload and status (each
with add_arguments(parser) and run(args), as cli/main.py expects).  Reads
queue_directory (to find the pid file), mail_name and maillog_file.

  start-fg  run the master in the foreground (systemd Type=notify, containers,
            ``make run``) until SIGTERM/SIGINT; exit 0 after a clean stop.
  start     check the configuration, then run the master as a daemon; exit 0
            once it is ready (sockets up), otherwise with its reason.
  stop      SIGTERM to the master, then wait until it is gone (its children
            finish their current client first).
  reload    SIGHUP to the master: new main.cf/master.cf settings reach new
            children; nothing in flight is cut.
  status    exit 0 and say the pid when the master runs, exit 1 when not.

Exit statuses: 0 success; 1 the master is not running (stop, reload,
status); 73 (EX_CANTCREAT) the queue directory or a socket cannot be
created; 75 (EX_TEMPFAIL) another master already runs on this queue, or
stop timed out; 78 (EX_CONFIG) configuration error.  docs/master.md is the
operations guide.
"""

import os
import signal
import sys
import time

from ..master import daemon
from ..master.master import EX_ALREADY_RUNNING, STOP_TIMEOUT, Master, MasterStartError
from ..master.pidfile import master_pid, pid_file_path
from .common import fatal, load_config

NOT_RUNNING = 1
_STOP_WAIT = STOP_TIMEOUT + 30
_POLL = 0.05


class _Command:
    def __init__(self, add_arguments, run):
        self.add_arguments = add_arguments
        self.run = run


def _mail_system(config):
    return f"the {config.get('mail_name') or 'postclient'} mail system"


def _find_master(config):
    queue_directory = os.path.abspath(config.expand("queue_directory"))
    return master_pid(pid_file_path(queue_directory))


# --- start-fg / start ---------------------------------------------------------------
def _add_start_arguments(parser):
    parser.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT, metavar="SECONDS",
                        help="at stop, how long children may take to finish their current "
                             f"client before they are killed (default {STOP_TIMEOUT})")


def _run_start_fg(args):
    master = Master(args.config_dir, args.overrides, stop_timeout=args.stop_timeout,
                    verbose=args.verbose)
    try:
        return master.run()
    except MasterStartError as error:
        fatal("start-fg", str(error))
        return error.status


def _run_start(args):
    config = load_config(args, "start")
    # A configuration error is reported here, on the terminal, with exit status 78.
    Master(args.config_dir, args.overrides).load_configuration()
    pid = _find_master(config)
    if pid:
        fatal("start", f"{_mail_system(config)} is already running (pid {pid})")
        return EX_ALREADY_RUNNING
    maillog_file = config.get("maillog_file")

    def run_daemon(readiness):
        from ..config.errors import ConfigError

        master = Master(args.config_dir, args.overrides, stop_timeout=args.stop_timeout,
                        readiness=readiness, verbose=args.verbose)
        try:
            return master.run()
        except MasterStartError as error:
            readiness.report(error.status, str(error))
            return error.status
        except ConfigError as error:
            readiness.report(os.EX_CONFIG, str(error))
            return os.EX_CONFIG

    sys.stdout.flush()
    sys.stderr.flush()
    status, message = daemon.run_detached(run_daemon,
                                          keep_stdout=maillog_file in ("/dev/stdout", "-"),
                                          keep_stderr=maillog_file == "/dev/stderr")
    if status:
        fatal("start", message or f"the master exited with status {status}")
        return status
    print(f"postclient/start: started {_mail_system(config)}")
    return 0


# --- stop / reload / status ---------------------------------------------------------
def _add_stop_arguments(parser):
    parser.add_argument("--wait", type=float, default=_STOP_WAIT, metavar="SECONDS",
                        help=f"how long to wait for the master to exit (default {_STOP_WAIT})")


def _run_stop(args):
    config = load_config(args, "stop")
    pid = _find_master(config)
    if not pid or pid < 0:
        fatal("stop", f"{_mail_system(config)} is not running")
        return NOT_RUNNING
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        fatal("stop", f"{_mail_system(config)} is not running")
        return NOT_RUNNING
    print(f"postclient/stop: stopping {_mail_system(config)}")
    deadline = time.monotonic() + args.wait
    while _find_master(config):
        if time.monotonic() >= deadline:
            fatal("stop", f"the master (pid {pid}) is still running after {args.wait:g} seconds")
            return EX_ALREADY_RUNNING
        time.sleep(_POLL)
    return 0


def _run_signal(command, signum, verb):
    def run(args):
        config = load_config(args, command)
        pid = _find_master(config)
        if not pid or pid < 0:
            fatal(command, f"{_mail_system(config)} is not running")
            return NOT_RUNNING
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            fatal(command, f"{_mail_system(config)} is not running")
            return NOT_RUNNING
        print(f"postclient/{command}: {verb} {_mail_system(config)}")
        return 0
    return run


def _run_status(args):
    config = load_config(args, "status")
    pid = _find_master(config)
    if pid:
        shown = pid if pid > 0 else "unknown"
        print(f"postclient/status: {_mail_system(config)} is running: PID: {shown}")
        return 0
    print(f"postclient/status: {_mail_system(config)} is not running")
    return NOT_RUNNING


def _no_arguments(parser):
    pass


start = _Command(_add_start_arguments, _run_start)
start_fg = _Command(_add_start_arguments, _run_start_fg)
stop = _Command(_add_stop_arguments, _run_stop)
reload = _Command(_no_arguments, _run_signal("reload", signal.SIGHUP, "refreshing"))
status = _Command(_no_arguments, _run_status)
