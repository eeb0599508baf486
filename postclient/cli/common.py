"""Helpers shared by the subcommands: usage errors, warnings, loading main.cf.

Exports UsageError, warn(), fatal(), load_config(), printable(),
os_error_status() and QMGR_TIMEOUT.  Light to import: postclient/cli/main.py
imports it for every command.
"""

import functools
import os
import re
import sys

QMGR_TIMEOUT = 30           # seconds a queue tool waits for the queue manager; less when ipc_timeout is shorter


class UsageError(Exception):
    """Bad command-line usage; main() prints the message and exits 64."""


def warning_text(command, text):
    """A warning line as warn() prints it (for callers that print it later)."""
    return f"postclient/{command}: warning: {text}"


def warn(command, text):
    print(warning_text(command, text), file=sys.stderr)


def fatal(command, text):
    print(f"postclient/{command}: fatal: {text}", file=sys.stderr)


def load_config(args, command, require_main_cf=True):
    """main.cf of ``-c DIR`` with ``-o`` overrides; warnings go to stderr."""
    from ..config.config import Config     # not for --help or usage errors
    config = Config.load(getattr(args, "config_dir", None), getattr(args, "overrides", None) or (),
                         process_name=command, require_main_cf=require_main_cf)
    for warning in config.warnings:
        warn(command, str(warning))
    return config


def printable(text):
    """Control characters and undecodable bytes become "?" (Postfix's printable())."""
    return _unprintable().sub("?", text)


@functools.cache
def _unprintable():
    """Compiled at its first use: 1.2 ms (the surrogate range) that most commands never spend."""
    return re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def os_error_status(error):
    """The exit status for an OSError that stops a queue tool."""
    return os.EX_NOPERM if isinstance(error, PermissionError) else os.EX_IOERR
