"""A real Dovecot LMTP server in a temporary instance, with maildirs to read back.

Exports DovecotLmtp, maildir_messages() and dovecot_available().  A test
module starts one in a module-scoped fixture:

    server = DovecotLmtp(users=("alice", "bob")).start()
    server.unix_path            # the LMTP UNIX-domain socket
    server.port                 # LMTP on 127.0.0.1:port
    server.messages("alice")    # the messages in alice's maildir (bytes, oldest first)
    server.stop()

What runs: ``dovecot -F -c DIR/dovecot.conf`` (the master in the foreground,
in a session of its own), with base_dir, state_dir, the logs, the user list
and every user's home under one temporary directory (mkdtemp, removed by
stop()).  /etc/dovecot is not read.  Only the lmtp protocol is enabled; it
listens on the UNIX socket DIR/lmtp and on TCP 127.0.0.1:<free port>.

Users come from a passwd-file userdb (DIR/users): each test user maps to the
unprivileged uid/gid of ``nobody``/``nogroup`` and the home DIR/home/<user>,
with mail_location = maildir:~/Maildir.  auth_username_format = %Ln, so the
domain of a recipient is ignored: alice@anything is alice.  A recipient that
is not in the list is refused at RCPT with "550 5.1.1 ... User doesn't
exist".  A user in ``unwritable`` exists but its home belongs to root, so
Dovecot accepts it at RCPT and fails it after DATA with "451 4.2.0 ...
Internal error occurred" (a per-recipient temporary failure).  Dovecot's name in
its greeting and LHLO reply is ``lmtp.dovecot.test``.

Teardown sends SIGTERM to the master, waits, then SIGKILLs whatever is left
in its process group (its id is the master's pid: start_new_session).
"""

import os
import pwd
import grp
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from tests.peers import PEER_MISSING, need_program

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
LMTP_BINARY = "/usr/lib/dovecot/lmtp"
MAIL_USER = "nobody"
MAIL_GROUP = "nogroup"

CONFIG_TEMPLATE = """\
# postclient test instance (tests/integration/dovecot_lmtp.py)
instance_name = {instance}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
debug_log_path = {root}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
hostname = lmtp.dovecot.test
postmaster_address = postmaster@dovecot.test
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
auth_username_format = %Ln
first_valid_uid = 1
mail_location = maildir:~/Maildir
lmtp_save_to_detail_mailbox = no
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/users
}}
userdb {{
  driver = passwd-file
  args = {root}/users
}}
service lmtp {{
  unix_listener {root}/lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""


def dovecot_available():
    """The dovecot binary (skips, a failure under CI=true, when Dovecot LMTP is missing)."""
    program = need_program("dovecot")
    if not os.path.exists(LMTP_BINARY):
        pytest.skip(f"{PEER_MISSING} {LMTP_BINARY} (install dovecot-lmtpd: make test-deps, "
                    f"as root)")
    return program


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _lmtp_greets(connect, timeout=1.0):
    """True once the listener answers with a 220 greeting."""
    try:
        with connect() as sock:
            sock.settimeout(timeout)
            return sock.recv(512).startswith(b"220")
    except OSError:
        return False


def maildir_messages(maildir):
    """The messages (bytes) in a maildir's new/ and cur/, oldest first."""
    found = []
    for sub in ("new", "cur"):
        directory = os.path.join(maildir, sub)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as message:
                found.append((os.path.getmtime(path), name, message.read()))
    return [content for _, _, content in sorted(found)]


class DovecotLmtp:
    """``dovecot -F`` serving LMTP for ``users`` (see the module docstring)."""

    def __init__(self, users=("alice", "bob", "carol"), unwritable=()):
        self.users = list(users) + [user for user in unwritable if user not in users]
        self.unwritable = set(unwritable)
        self.root = None
        self.port = None
        self.process = None
        self.program = None

    @property
    def unix_path(self):
        return os.path.join(self.root, "lmtp")

    @property
    def config_path(self):
        return os.path.join(self.root, "dovecot.conf")

    def home(self, user):
        return os.path.join(self.root, "home", user)

    def maildir(self, user):
        return os.path.join(self.home(user), "Maildir")

    def messages(self, user):
        return maildir_messages(self.maildir(user))

    def log(self):
        try:
            with open(os.path.join(self.root, "dovecot.log"), encoding="utf-8",
                      errors="replace") as log:
                return log.read()
        except (OSError, TypeError):
            return ""

    def _write_users(self):
        uid = pwd.getpwnam(MAIL_USER).pw_uid
        gid = grp.getgrnam(MAIL_GROUP).gr_gid
        for directory in ("run", "state", "home"):
            os.makedirs(os.path.join(self.root, directory), mode=0o755)
        with open(os.path.join(self.root, "users"), "w", encoding="utf-8") as users:
            for user in self.users:
                os.makedirs(self.home(user), mode=0o700)
                if user in self.unwritable:
                    os.chmod(self.home(user), 0o755)        # root's: no Maildir can be made
                else:
                    os.chown(self.home(user), uid, gid)
                users.write(f"{user}:{{PLAIN}}secret-{user}:{uid}:{gid}::{self.home(user)}::\n")
        os.chmod(os.path.join(self.root, "users"), 0o644)

    def _write_config(self):
        with open(self.config_path, "w", encoding="utf-8") as config:
            config.write(CONFIG_TEMPLATE.format(root=self.root, port=self.port,
                                                instance=os.path.basename(self.root)))

    def start(self):
        self.program = dovecot_available()
        self.root = tempfile.mkdtemp(prefix="postclient-dovecot-")
        os.chmod(self.root, 0o755)
        try:
            self._write_users()
            for _ in range(3):                  # the free port may be taken meanwhile
                self.port = _free_port()
                self._write_config()
                with open(os.path.join(self.root, "stderr"), "ab") as stderr:
                    self.process = subprocess.Popen(
                        [self.program, "-F", "-c", self.config_path], stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
                if self._wait_ready():
                    return self
                self._terminate()
            raise RuntimeError(f"Dovecot LMTP did not start:\n{self.log()}\n{self._stderr()}")
        except BaseException:
            self.stop()
            raise

    def _stderr(self):
        try:
            with open(os.path.join(self.root, "stderr"), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def _wait_ready(self):
        def unix():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.unix_path)
            except OSError:
                sock.close()
                raise
            return sock

        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            if _lmtp_greets(lambda: socket.create_connection(("127.0.0.1", self.port), 1)) \
                    and _lmtp_greets(unix):
                return True
            time.sleep(0.05)
        return False

    def _terminate(self):
        if self.process is None:
            return
        group = self.process.pid
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(group, signal.SIGKILL)      # children left behind, if any
        except (ProcessLookupError, PermissionError):
            pass
        if self.process.poll() is None:
            self.process.wait()
        self.process = None

    def stop(self):
        """Stop Dovecot and remove the directory; safe to call twice."""
        if self.root is None:
            return
        try:
            self._terminate()
        finally:
            if os.environ.get("POSTCLIENT_KEEP_TEST_DIRS"):
                print(f"kept {self.root}")
            else:
                shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
