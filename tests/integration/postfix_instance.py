"""A real Postfix smtpd, in its own temporary instance, relaying into smtp-sink.

Exports PostfixInstance, SmtpSink, Dump and the helpers postfix_available()
and free_tcp_port().  Test modules build an instance in a module-scoped
fixture:

    instance = PostfixInstance(services={"main": {}, "nopipe": {
        "smtpd_discard_ehlo_keywords": "pipelining"}}, main_cf={...})
    instance.start()            # skips (a failure under CI=true) without Postfix
    instance.port("main")       # the smtpd of service "main" on 127.0.0.1
    instance.wait_for_dumps(n)  # messages that Postfix relayed on to the sink
    instance.stop()

What runs: ``postfix -c DIR start`` with everything under one temporary
directory (mkdtemp, removed by stop()): config_directory DIR/etc (main.cf,
master.cf, lookup tables), queue_directory DIR/queue, data_directory
DIR/data, maillog_file DIR/maillog (through postlogd).  The system's
/etc/postfix is only read for meta_directory (postfix-files, which says how
to lay out a queue directory) and nothing is written there; nothing
listens on port 25.  Every service has chroot=n so no /var/spool/postfix
copy of /etc files is needed.  As root, Postfix needs mail_owner=postfix and
setgid_group=postdrop, which the Debian package creates.

Each entry of ``services`` becomes one smtpd listener on 127.0.0.1:<free
port> with its ``-o name=value`` overrides.  Mail that the smtpd accepts
goes through cleanup and qmgr to the smtp client, and relayhost sends it to
an smtp-sink (``SmtpSink``) on 127.0.0.1:<free port> that dumps each
message, envelope included (X-Mail-Args, X-Rcpt-Args), into DIR/sink.
The defaults (``BASE_MAIN_CF``) are a relay for 127.0.0.0/8 with
compatibility_level=3.6, mydestination empty, no local delivery, and no DNS
(relayhost is a bracketed address).

Teardown is ``postfix -c DIR stop``, a wait for the master's pid to go,
then SIGKILL to anything left in the master's session (found by session id
in /proc, so only processes of this instance), then the sink, then the
directory.
"""

import dataclasses
import os
import re
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
POSTFIX_DAEMON_DIRECTORY = "/usr/lib/postfix/sbin"

BASE_MAIN_CF = {
    "compatibility_level": "3.6",
    "mail_owner": "postfix",
    "setgid_group": "postdrop",
    "myhostname": "smtpd.postfix.test",
    "mydomain": "postfix.test",
    "myorigin": "$myhostname",
    "mydestination": "",
    "local_recipient_maps": "",
    "alias_maps": "",
    "alias_database": "",
    "inet_interfaces": "127.0.0.1",
    "inet_protocols": "ipv4",
    "mynetworks": "127.0.0.0/8",
    "smtpd_peername_lookup": "no",
    "biff": "no",
    "smtputf8_enable": "no",
    # Postfix's own client: straight to the sink, no DNS, no delay.
    "smtp_dns_support_level": "disabled",
    "queue_run_delay": "1s",
    "minimal_backoff_time": "1s",
    "maximal_backoff_time": "2s",
    "delay_warning_time": "0",
    "in_flow_delay": "0",
}

MASTER_CF_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postfix_available():
    """The postfix command (skips, a failure under CI=true, when Postfix is missing)."""
    postfix = need_program("postfix")
    need_program("smtp-sink")
    need_program("postconf")
    if not os.path.exists(os.path.join(POSTFIX_DAEMON_DIRECTORY, "master")):
        pytest.skip(f"{PEER_MISSING} {POSTFIX_DAEMON_DIRECTORY}/master (install the postfix "
                    f"package: make test-deps, as root)")
    return postfix


def free_tcp_port(address="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def wait_for_listener(address, port, timeout, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _main_cf_value(value):
    """A main.cf value on one line (lists may be given as Python lists)."""
    if isinstance(value, (list, tuple)):
        value = ", ".join(value)
    value = str(value)
    if "\n" in value:
        raise ValueError(f"newline in a main.cf value: {value!r}")
    return value


# --- the sink behind Postfix -------------------------------------------------------------

@dataclasses.dataclass
class Dump:
    """One message as smtp-sink dumped it."""

    path: str
    text: str

    @property
    def headers(self):
        return self.text.split("\n\n", 1)[0]

    def field(self, name):
        return [line.split(":", 1)[1].strip() for line in self.headers.split("\n")
                if line.lower().startswith(name.lower() + ":")]

    @property
    def mail_args(self):
        (args,) = self.field("X-Mail-Args")
        return args

    @property
    def rcpt_args(self):
        return self.field("X-Rcpt-Args")

    @property
    def recipients(self):
        return [re.match(r"<([^>]*)>", args).group(1) for args in self.rcpt_args]

    @property
    def content(self):
        """The message as received (after smtp-sink's own header block)."""
        match = re.search(r"^Received: from .*\n\tby .*\n\t.*\n", self.text, re.M)
        return self.text[match.end():] if match else self.text


class SmtpSink:
    """``smtp-sink -u nobody -d DIR/%s.`` on address:port (a free port by default).

    smtp-sink runs as nobody, so ``directory`` (made world-writable) must be
    reachable by nobody; without one, a temporary directory is made (and
    removed by stop()).  A sink that cannot write its dump dies at MAIL FROM.
    """

    def __init__(self, directory=None, address="127.0.0.1", port=None, options=(),
                 hostname=None, program=None):
        self.own_directory = None
        if directory is None:
            self.own_directory = tempfile.mkdtemp(prefix="postclient-sink-")
            os.chmod(self.own_directory, 0o755)
            directory = os.path.join(self.own_directory, "dumps")
        self.directory = directory
        self.address = address
        self.port = port
        self.options = list(options)
        self.hostname = hostname
        self.program = program or need_program("smtp-sink")
        self.process = None
        self.log_path = None

    def command(self):
        command = [self.program, "-u", "nobody", "-d", os.path.join(self.directory, "%s."),
                   "-t", "20"]
        if self.hostname:
            command += ["-h", self.hostname]
        return command + self.options + [f"{self.address}:{self.port}", "64"]

    def start(self):
        os.makedirs(self.directory, exist_ok=True)
        os.chmod(self.directory, 0o777)
        name = f"smtp-sink-{self.address}-{os.path.basename(self.directory)}.log"
        self.log_path = os.path.join(os.path.dirname(self.directory.rstrip("/")), name)
        chosen = self.port is None
        for _ in range(3):                      # a chosen free port may be taken meanwhile
            if chosen:
                self.port = free_tcp_port(self.address)
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=subprocess.STDOUT)
            if wait_for_listener(self.address, self.port, 10, self.process):
                return self
            self._terminate()
        log = self.log()
        self.stop()
        raise RuntimeError(f"smtp-sink did not start on {self.address}:{self.port}: {log}")

    def log(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return log.read()
        except (OSError, TypeError):
            return ""

    def dumps(self):
        """Every message dumped so far, oldest first."""
        found = []
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return found
        for name in names:
            path = os.path.join(self.directory, name)
            try:
                with open(path, encoding="utf-8", errors="replace") as dump:
                    found.append(Dump(path, dump.read()))
            except OSError:
                continue
        found.sort(key=lambda dump: (os.path.getmtime(dump.path), dump.path))
        return found

    def _terminate(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def stop(self):
        """Stop smtp-sink; remove the directory it made for itself, if any."""
        self._terminate()
        if self.own_directory is not None:
            shutil.rmtree(self.own_directory, ignore_errors=True)
            self.own_directory = None


# --- the Postfix instance ----------------------------------------------------------------

class PostfixInstance:
    """A temporary Postfix instance: smtpd listeners relaying into an smtp-sink."""

    def __init__(self, services=None, main_cf=None, tables=None):
        self.services = dict(services or {"main": {}})
        self.main_cf = dict(main_cf or {})
        self.tables = dict(tables or {})        # file name under etc/ -> content
        self.root = None
        self.ports = {}
        self.sink = None
        self.postfix = None
        self.master_pid = None

    # layout
    def path(self, *parts):
        return os.path.join(self.root, *parts)

    @property
    def config_directory(self):
        return self.path("etc")

    def port(self, service="main"):
        return self.ports[service]

    def nexthop(self, service="main"):
        """The --nexthop for postclient: ``[127.0.0.1]:PORT``."""
        return f"[127.0.0.1]:{self.ports[service]}"

    def _write_config(self):
        settings = dict(BASE_MAIN_CF)
        settings.update(queue_directory=self.path("queue"), data_directory=self.path("data"),
                        maillog_file=self.path("maillog"),
                        maillog_file_prefixes=os.path.dirname(self.root),
                        relayhost=f"[127.0.0.1]:{self.sink.port}")
        settings.update(self.main_cf)
        for name, content in self.tables.items():
            with open(self.path("etc", name), "w", encoding="utf-8") as table:
                table.write(content)
        with open(self.path("etc", "main.cf"), "w", encoding="utf-8") as main_cf:
            for name, value in settings.items():
                value = _main_cf_value(value).replace("$CONFIG", self.config_directory)
                main_cf.write(f"{name} = {value}\n")
        lines = []
        for service, overrides in self.services.items():
            lines.append(f"127.0.0.1:{self.ports[service]} inet n - n - - smtpd")
            lines.append(f"  -o syslog_name=postfix/{service}")
            for name, value in overrides.items():
                value = _main_cf_value(value).replace("$CONFIG", self.config_directory)
                lines.append(f"  -o {{ {name} = {value} }}" if re.search(r"\s", value)
                             else f"  -o {name}={value}")
        with open(self.path("etc", "master.cf"), "w", encoding="utf-8") as master_cf:
            master_cf.write("\n".join(lines) + "\n" + MASTER_CF_SERVICES)

    def start(self):
        self.postfix = postfix_available()
        self.root = tempfile.mkdtemp(prefix="postclient-postfix-")
        os.chmod(self.root, 0o755)
        try:
            for directory in ("etc", "queue", "data"):
                os.makedirs(self.path(directory), mode=0o755)
            shutil.chown(self.path("data"), "postfix", "postfix")
            self.sink = SmtpSink(self.path("sink"), hostname="sink.postfix.test").start()
            used = {self.sink.port}
            for service in self.services:
                port = free_tcp_port()
                while port in used:
                    port = free_tcp_port()
                used.add(port)
                self.ports[service] = port
            self._write_config()
            result = subprocess.run([self.postfix, "-c", self.config_directory, "start"],
                                    stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    timeout=START_TIMEOUT)
            if result.returncode != 0:
                raise RuntimeError(f"postfix start failed ({result.returncode}):\n"
                                   f"{result.stdout}{result.stderr}\n{self.maillog()}")
            self.master_pid = self._read_master_pid()
            for service, port in self.ports.items():
                if not wait_for_listener("127.0.0.1", port, START_TIMEOUT):
                    raise RuntimeError(f"Postfix smtpd {service} is not listening on {port}:\n"
                                       f"{self.maillog()}")
        except BaseException:
            self.stop()
            raise
        return self

    def _read_master_pid(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with open(self.path("queue", "pid", "master.pid"), encoding="ascii") as pid:
                    return int(pid.read().split()[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.05)
        raise RuntimeError(f"Postfix master wrote no pid file:\n{self.maillog()}")

    # looking at what happened
    def maillog(self):
        try:
            with open(self.path("maillog"), encoding="utf-8", errors="replace") as log:
                return log.read()
        except (OSError, TypeError):
            return ""

    def wait_for_log(self, pattern, timeout=10.0):
        """The first maillog match of ``pattern`` (a regex), waiting for it to appear."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.maillog(), re.M)
            if match or time.monotonic() >= deadline:
                return match
            time.sleep(0.05)

    def session_commands(self, queue_id, timeout=10.0):
        """The command counts smtpd logged at the end of the session that queued ``queue_id``.

        E.g. "ehlo=1 mail=1 rcpt=2/3 data=1 quit=1 commands=6/7" (accepted/received).
        """
        deadline = time.monotonic() + timeout
        while True:
            log = self.maillog()
            start = re.search(rf"postfix/([\w-]+)/smtpd\[(\d+)\]: {queue_id}: client=", log)
            if start:
                end = re.compile(rf"postfix/{start.group(1)}/smtpd\[{start.group(2)}\]: "
                                 rf"disconnect from \S+ (.*)$", re.M).search(log, start.end())
                if end:
                    return end.group(1)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def dumps(self):
        return self.sink.dumps()

    def wait_for_dumps(self, predicate, timeout=15.0):
        """Dumps for which ``predicate(dump)`` holds, once there is at least one."""
        deadline = time.monotonic() + timeout
        while True:
            found = [dump for dump in self.sink.dumps() if predicate(dump)]
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)

    def queue_is_empty(self):
        """No message left in Postfix's incoming/active/deferred queues."""
        for queue in ("incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(self.path("queue", queue)):
                if files:
                    return False
        return True

    # teardown
    def _session_members(self):
        if not self.master_pid:
            return []
        members = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # after the command: state ppid pgrp session ...
            if len(fields) > 3 and int(fields[3]) == self.master_pid:
                members.append(int(entry))
        return members

    def stop(self):
        """Stop Postfix and the sink, remove the directory; safe to call twice."""
        if self.root is None:
            return
        try:
            if self.postfix and os.path.exists(self.path("etc", "main.cf")):
                try:
                    subprocess.run([self.postfix, "-c", self.config_directory, "stop"],
                                   stdin=subprocess.DEVNULL, capture_output=True,
                                   timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    pass
            deadline = time.monotonic() + STOP_TIMEOUT
            while self._session_members() and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in self._session_members():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            if self.sink is not None:
                self.sink.stop()
            if os.environ.get("POSTCLIENT_KEEP_TEST_DIRS"):
                print(f"kept {self.root}")
            else:
                shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
