"""``postclient init``: write a working default main.cf and master.cf.

Used by ``make run`` to set up a relay under the working tree without root:
the queue directory and log destination are given on the command line and
mail_owner becomes the invoking user.  Existing files are left alone unless
``--force`` is given, so an operator's edits are never overwritten.
"""

import os
from importlib import resources

from ..config.config import config_directory, current_user


def add_arguments(parser):
    parser.add_argument("--queue-directory", default="/var/spool/postclient",
                        help="queue_directory to write into main.cf")
    parser.add_argument("--maillog-file", default="",
                        help="maillog_file to write into main.cf (empty: syslog)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")


def _template(name):
    return resources.files("postclient.config").joinpath("defaults", name).read_text()


def run(args):
    directory = config_directory(args.config_dir)
    os.makedirs(directory, exist_ok=True)
    queue_directory = os.path.abspath(args.queue_directory)
    values = {
        "@QUEUE_DIRECTORY@": queue_directory,
        "@MAIL_OWNER@": current_user(),
        "@MAILLOG_FILE@": args.maillog_file,
    }
    for name in ("main.cf", "master.cf"):
        path = os.path.join(directory, name)
        if os.path.exists(path) and not args.force:
            print(f"postclient/init: keeping existing {path}")
            continue
        text = _template(name)
        for key, value in values.items():
            text = text.replace(key, value)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        print(f"postclient/init: wrote {path}")
    os.makedirs(queue_directory, exist_ok=True)
    return 0
