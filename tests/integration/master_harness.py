"""A real master on a temporary configuration and queue, for integration tests.

Exports MasterInstance, EchoClient helpers (ask(), ask_in_background()),
process helpers (process_stat(), cmdline(), alive()) and the fixture
``master_instance``.  Other test modules reuse it with
``from tests.integration.master_harness import master_instance``.

``master_instance(master_cf, main_cf="", start=True, foreground=True)``
writes ``main.cf`` (queue_directory, maillog_file and syslog_name = "pctest"
under a short temporary directory -- UNIX socket paths are limited to 107
bytes -- plus the ``main_cf`` text) and ``master.cf`` (the ``master_cf``
lines, e.g. "echo unix - - n - 2 echo -o max_use=3"), then runs
``python -m postclient -c DIR start-fg`` in its own session (or ``start``,
which daemonises) and waits for "daemon started" in the maillog.  After the
test every instance is stopped, and any process still in its session is
killed by pid, so that a failing test leaves nothing behind.

A MasterInstance gives: ``ask(service, request)`` (the echo protocol),
``log()``/``wait_for_log(pattern, count)``, ``cli(*args)`` (runs a postclient
subcommand on this configuration), ``reload()``, ``stop()``,
``session_pids()`` (every live process in the master's session) and
``children(title)``.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from postclient import ipc

SYSLOG_NAME = "pctest"
STARTUP_TIMEOUT = 15


# --- processes ------------------------------------------------------------------
def process_stat(pid):
    """(state, ppid, pgid, sid) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            data = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def alive(pid):
    """True for a live process (a zombie is dead)."""
    stat = process_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


def all_pids():
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --- the echo protocol ------------------------------------------------------------
def ask(path, request, timeout=10.0):
    """Connect to an echo service, send one request, return its reply."""
    deadline = time.monotonic() + timeout
    sock = ipc.connect_unix(path, deadline)
    try:
        ipc.expect_protocol(sock, "echo", 1, deadline)
        ipc.send_message(sock, request, deadline)
        return ipc.receive_message(sock, deadline)
    finally:
        sock.close()


def ask_in_background(path, request, timeout=30.0):
    """Start ask() in a thread; returns (thread, result dict with "reply" or "error")."""
    result = {}

    def run():
        try:
            result["reply"] = ask(path, request, timeout)
        except Exception as error:   # reported by the test
            result["error"] = repr(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


# --- the master ---------------------------------------------------------------------
class MasterInstance:
    def __init__(self, root, master_cf, main_cf=""):
        self.root = root
        self.config_dir = os.path.join(root, "etc")
        self.queue_directory = os.path.join(root, "q")
        self.maillog = os.path.join(root, "maillog")
        self.process = None
        self.master_pid = None
        self.session = None
        self.seen = set()
        os.makedirs(self.config_dir)
        self.write_main_cf(main_cf)
        self.write_master_cf(master_cf)
        open(self.maillog, "w").close()

    # configuration
    def write_main_cf(self, extra=""):
        with open(os.path.join(self.config_dir, "main.cf"), "w") as handle:
            handle.write(f"queue_directory = {self.queue_directory}\n"
                         f"maillog_file = {self.maillog}\n"
                         f"syslog_name = {SYSLOG_NAME}\n"
                         f"{extra}\n")

    def write_master_cf(self, lines):
        text = lines if isinstance(lines, str) else "\n".join(lines)
        with open(os.path.join(self.config_dir, "master.cf"), "w") as handle:
            handle.write(text + "\n")

    def socket_path(self, service, public=False):
        return os.path.join(self.queue_directory, "public" if public else "private", service)

    # commands
    def command(self, *args):
        return [sys.executable, "-m", "postclient", "-c", self.config_dir, *args]

    def cli(self, *args, timeout=60, env=None):
        return subprocess.run(self.command(*args), capture_output=True, text=True,
                              timeout=timeout, env=env)

    def start(self, foreground=True, args=(), env=None, wait=True):
        if foreground:
            with open(os.path.join(self.root, "stdout"), "ab") as stdout, \
                    open(os.path.join(self.root, "stderr"), "ab") as stderr:
                self.process = subprocess.Popen(
                    self.command("start-fg", *args), env=env, start_new_session=True,
                    stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
            self.master_pid = self.process.pid
            self.session = self.process.pid
        else:
            done = self.cli("start", *args, env=env, timeout=STARTUP_TIMEOUT)
            assert done.returncode == 0, done.stderr
            self.master_pid = self.status_pid()
            self.session = process_stat(self.master_pid)[3]
        self.seen.add(self.master_pid)
        if wait:
            self.wait_for_log(r"pctest/master\[\d+\]: daemon started", timeout=STARTUP_TIMEOUT)
        return self

    def status_pid(self):
        done = self.cli("status")
        match = re.search(r"PID: (\d+)", done.stdout)
        return int(match.group(1)) if done.returncode == 0 and match else None

    def reload(self):
        before = self.log().count("reload -- version")
        done = self.cli("reload")
        assert done.returncode == 0, done.stderr
        self.wait_for_log(r"pctest/master\[\d+\]: reload -- version", count=before + 1)

    def stop(self, timeout=60):
        done = self.cli("stop", timeout=timeout)
        if self.process is not None:
            self.process.wait(timeout=timeout)
        return done

    # observation
    def log(self):
        with open(self.maillog, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def log_lines(self, pattern):
        return [line for line in self.log().splitlines() if re.search(pattern, line)]

    def wait_for_log(self, pattern, count=1, timeout=10):
        def enough():
            if self.process is not None and self.process.poll() is not None \
                    and len(self.log_lines(pattern)) < count:
                raise AssertionError(f"the master exited ({self.process.returncode}) before "
                                     f"logging {pattern!r}:\n{self.log()}\n{self.stderr()}")
            return len(self.log_lines(pattern)) >= count
        wait_until(enough, timeout, what=f"{count} log line(s) matching {pattern!r}")
        return self.log_lines(pattern)

    def stderr(self):
        try:
            with open(os.path.join(self.root, "stderr"), errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def session_pids(self):
        """Every live process in the master's session (its children included)."""
        if self.session is None:
            return []
        pids = []
        for pid in all_pids():
            stat = process_stat(pid)
            if stat and stat[3] == self.session and stat[0] not in ("Z", "X"):
                pids.append(pid)
        self.seen.update(pids)
        return pids

    def children(self, service):
        """Live pids whose title is pctest/<service>."""
        title = f"{SYSLOG_NAME}/{service}"
        return sorted(pid for pid in self.session_pids() if cmdline(pid) == title)

    def close(self):
        """Stop the master if it still runs; kill by pid whatever it left behind."""
        if self.master_pid and alive(self.master_pid):
            try:
                os.kill(self.master_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                wait_until(lambda: not alive(self.master_pid), 10)
            except AssertionError:
                pass
        for pid in set(self.session_pids()) | self.seen:
            if alive(pid) and process_stat(pid)[3] == self.session:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def master_instance():
    """Factory: master_instance(master_cf, main_cf="", start=True, foreground=True)."""
    instances = []

    def make(master_cf, main_cf="", start=True, foreground=True, args=(), env=None):
        root = tempfile.mkdtemp(prefix="pcm", dir="/tmp")
        instance = MasterInstance(root, master_cf, main_cf)
        instances.append(instance)
        if start:
            instance.start(foreground=foreground, args=args, env=env)
        return instance

    yield make
    for instance in instances:
        instance.close()
        shutil.rmtree(instance.root, ignore_errors=True)
