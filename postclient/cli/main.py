"""The ``postclient`` command: one entry point, Postfix-like subcommands.

Exports main(argv).  Every subcommand takes ``-c DIR`` (configuration
directory; else $POSTCLIENT_CONFIG_DIR, else /etc/postclient) and
``-o name=value`` (main.cf overrides), before or after its name.  Exit codes
follow sysexits: 64 usage, 69 unavailable, 75 temporary failure, 78
configuration error.

Subcommands live in their own modules and export ``add_arguments(parser)``
and ``run(args) -> int``; ``map`` hands its arguments to postmap.main() and
``sendmail`` (whose -o, -v and -c are sendmail's) to sendmail.main().
"""

import argparse
import os
import sys

from ..config.errors import ConfigError
from . import cat, check, conf, deliver, init, master, queue, sendmail
from . import super as super_  # not to shadow the builtin
from .common import UsageError, fatal

COMMANDS = {
    "conf": (conf, "show and edit the configuration, like postconf(1)"),
    "check": (check, "validate main.cf, master.cf and every lookup table they name"),
    "deliver": (deliver, "deliver one message from standard input now, without the queue"),
    "init": (init, "write a default main.cf and master.cf into the configuration directory"),
    "start": (master.start, "start the master as a daemon, like postfix start"),
    "start-fg": (master.start_fg, "run the master in the foreground (systemd, containers, make run)"),
    "stop": (master.stop, "stop the master; children finish their current client first"),
    "reload": (master.reload, "make the master re-read main.cf and master.cf"),
    "status": (master.status, "say whether the master runs (exit 0) or not (exit 1)"),
    "queue": (queue, "list the mail queue (-p, -j) or flush it (-f, -s site), like postqueue(1)"),
    "super": (super_, "delete, hold, release or requeue queued mail, like postsuper(1)"),
    "cat": (cat, "show a queue file: envelope, header and body, like postcat(1)"),
    "sendmail": (sendmail, "submit a message from standard input, like sendmail(1)"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def _common_options(parser, suppress_defaults):
    default = argparse.SUPPRESS if suppress_defaults else None
    parser.add_argument("-c", dest="config_dir", metavar="DIR", default=default,
                        help="configuration directory (default: $POSTCLIENT_CONFIG_DIR or /etc/postclient)")
    # Separate lists before and after the command name: argparse would let the
    # subcommand's list replace the main one; main() joins them.
    parser.add_argument("-o", dest="command_overrides" if suppress_defaults else "overrides",
                        metavar="NAME=VALUE", action="append", default=[],
                        help="override a main.cf parameter")
    parser.add_argument("-v", dest="verbose", action="store_true",
                        default=argparse.SUPPRESS if suppress_defaults else False,
                        help="verbose logging")


def build_parser():
    parser = _Parser(prog="postclient", description="postclient: outbound SMTP/LMTP relay")
    _common_options(parser, suppress_defaults=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, summary) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary, add_help=False)
        sub.add_argument("--help", action="help", help="show this help and exit")
        _common_options(sub, suppress_defaults=True)
        module.add_arguments(sub)
    commands.add_parser("map", help="build or query a lookup table, like postmap(1)", add_help=False)
    return parser


def _command_position(argv):
    """Index of the subcommand name: the first word that is not a global option or its value."""
    position = 0
    while position < len(argv):
        if argv[position] in ("-c", "-o"):
            position += 2
        elif argv[position].startswith("-"):
            position += 1
        else:
            return position
    return None


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "map" in argv:
        # postmap's options (-q, -i ...) are its own: pass everything after "map".
        position = argv.index("map")
        if all(arg.startswith("-") or argv[i - 1] in ("-c", "-o") for i, arg in enumerate(argv[:position])):
            from ..maps import postmap
            return postmap.main(argv[position + 1:])
    position = _command_position(argv)
    if position is not None and argv[position] == "sendmail":
        return sendmail.main(argv[position + 1:], argv[:position])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        print(error, file=sys.stderr)
        return os.EX_USAGE
    if not args.command:
        parser.print_help(sys.stderr)
        return os.EX_USAGE
    args.overrides = list(args.overrides) + list(getattr(args, "command_overrides", []))
    module = COMMANDS[args.command][0]
    try:
        return module.run(args)
    except ConfigError as error:
        fatal(args.command, str(error))
        return os.EX_CONFIG
    except UsageError as error:
        print(error, file=sys.stderr)
        return os.EX_USAGE
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
