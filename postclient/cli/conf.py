"""``postclient conf``: show and edit the configuration, like postconf(1).

  postclient conf                 every parameter: name = value (as written)
  postclient conf -d [name...]    defaults
  postclient conf -n              only what main.cf sets
  postclient conf -x              values with $name expanded
  postclient conf -h name...      values only
  postclient conf -e name=value   edit main.cf in place, keeping comments
  postclient conf -X name...      remove settings from main.cf
  postclient conf -M [svc[/type]] master.cf, normalised

An unknown name is warned about and skipped, as postconf does.  ``-e``
checks each new value against the parameter's type before main.cf is
touched, so a bad value leaves the file as it was.
"""

import os
import sys

from ..config import maincf, mastercf, registry
from ..config.config import Config
from .common import UsageError, load_config, warn


def add_arguments(parser):
    parser.add_argument("-d", dest="defaults", action="store_true", help="show default values")
    parser.add_argument("-n", dest="non_default", action="store_true", help="show only what main.cf sets")
    parser.add_argument("-h", dest="values_only", action="store_true", help="show values only, not names")
    parser.add_argument("-x", dest="expand", action="store_true", help="expand $name in values")
    parser.add_argument("-e", dest="edit", action="store_true", help="edit main.cf: arguments are name=value")
    parser.add_argument("-X", dest="remove", action="store_true", help="remove the named settings from main.cf")
    parser.add_argument("-M", dest="master", action="store_true", help="show master.cf services")
    parser.add_argument("names", nargs="*", metavar="NAME")


def _conflicting(args):
    modes = [flag for flag, on in (("-e", args.edit), ("-X", args.remove), ("-M", args.master),
                                   ("-d", args.defaults), ("-n", args.non_default)) if on]
    if len(modes) > 1:
        raise UsageError(f"postclient conf: {' and '.join(modes)} cannot be combined")


def run(args):
    _conflicting(args)
    if args.edit:
        return _edit(args)
    if args.remove:
        return _remove(args)
    if args.master:
        return _show_master(args)
    config = load_config(args, "conf", require_main_cf=not args.defaults)
    if args.names:
        names = []
        for name in args.names:
            if registry.lookup(name) is None and not config.is_set(name):
                warn("conf", f"{name}: unknown parameter")
            else:
                names.append(name)
    elif args.non_default:
        names = sorted(config.settings)
    else:
        names = sorted(set(registry.REGISTRY) | set(config.settings) | set(config.overrides))
    for name in names:
        if args.defaults:
            value = config.default(name) or ""
        elif args.expand:
            value = config.expand(name)
        else:
            value = config.raw(name)
        _print(name, value, args.values_only)
    return 0


def _print(name, value, values_only):
    sys.stdout.write(f"{value}\n" if values_only else (f"{name} = {value}\n" if value else f"{name} =\n"))


def _edit(args):
    if not args.names:
        raise UsageError("postclient conf -e: expected name=value arguments")
    config = load_config(args, "conf", require_main_cf=False)
    assignments = []
    for text in args.names:
        setting = maincf.parse_assignment(text, "command line", None)
        if registry.lookup(setting.name) is None:
            warn("conf", f"{setting.name}: unknown parameter")
        assignments.append((setting.name, setting.value))
    # Check the new values in the context of the whole new configuration.
    trial = Config(config.config_dir,
                   {**config.settings, **{n: maincf.Setting(n, v, "command line") for n, v in assignments}},
                   config.overrides.values(), main_cf_path=config.main_cf_path)
    for name, _value in assignments:
        trial.get(name)
    maincf.edit_main_cf(config.main_cf_path, assignments=assignments)
    return 0


def _remove(args):
    if not args.names:
        raise UsageError("postclient conf -X: expected parameter names")
    config = load_config(args, "conf")
    for name in args.names:
        if not config.is_set(name):
            warn("conf", f"{name}: not set in {config.main_cf_path}")
    maincf.edit_main_cf(config.main_cf_path, removals=args.names)
    return 0


def _show_master(args):
    config = load_config(args, "conf", require_main_cf=False)
    services, warnings = mastercf.read_master_cf(os.path.join(config.config_dir, "master.cf"))
    for warning in warnings:
        warn("conf", str(warning))
    wanted = set(args.names)
    for service in services:
        if wanted and service.name not in wanted and service.key not in wanted:
            continue
        sys.stdout.write(mastercf.format_service(service) + "\n")
    return 0
