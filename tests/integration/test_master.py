"""The master and the child skeleton, with real processes.

Each test runs ``postclient start-fg`` (or ``start``) on its own temporary
configuration and queue, talks to the built-in "echo" service over the
service sockets, and reads the maillog and /proc.  Timings are kept short
through main.cf and master.cf ``-o`` (max_idle, service_throttle_time ...).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tests.integration.master_harness import (alive, ask, ask_in_background, cmdline,
                                              master_instance, process_stat, wait_until)

ECHO = "echo unix - - n - 1 echo"


def test_each_process_shows_its_service_title(master_instance):
    master = master_instance([ECHO, "other unix - - n - 1 echo"])
    echo_pid = ask(master.socket_path("echo"), {})["pid"]
    other_pid = ask(master.socket_path("other"), {})["pid"]
    assert cmdline(master.master_pid) == "pctest/master"
    assert cmdline(echo_pid) == "pctest/echo"
    assert cmdline(other_pid) == "pctest/other"
    ps = subprocess.run(["ps", "-o", "pid=,args=", "-s", str(master.session)],
                        capture_output=True, text=True).stdout
    titles = {int(pid): args for pid, args in (line.split(None, 1) for line in ps.splitlines())}
    assert titles[master.master_pid] == "pctest/master"
    assert titles[echo_pid] == "pctest/echo"


def test_a_child_serves_exactly_max_use_clients_and_is_replaced(master_instance):
    master = master_instance(["echo unix - - n - 1 echo -o max_use=3"])
    replies = [ask(master.socket_path("echo"), {"echo": n}) for n in range(7)]
    pids = [reply["pid"] for reply in replies]
    assert [reply["echo"] for reply in replies] == list(range(7))
    assert pids[0] == pids[1] == pids[2]
    assert pids[3] == pids[4] == pids[5]
    assert len({pids[0], pids[3], pids[6]}) == 3
    # A client may send several requests: max_use counts clients, not requests.
    wait_until(lambda: not alive(pids[3]), 5, what="the second child to exit")


def test_an_idle_child_exits_after_max_idle(master_instance):
    master = master_instance(["echo unix - - n - 1 echo -o max_idle=1s"])
    first = ask(master.socket_path("echo"), {})["pid"]
    assert alive(first)
    started = time.monotonic()
    wait_until(lambda: not alive(first), 5, what="the idle child to exit")
    assert 0.5 <= time.monotonic() - started <= 3
    assert master.children("echo") == []
    # An idle exit is normal: no warning, no throttle, the next client gets a new child.
    assert master.log_lines("warning") == []
    assert ask(master.socket_path("echo"), {})["pid"] not in (first, master.master_pid)


def test_a_service_that_fails_at_start_is_throttled_not_fork_looped(master_instance):
    master = master_instance([ECHO, "broken unix - - n - - nosuchcommand"],
                             "service_throttle_time = 2s")
    waiting = socket.socket(socket.AF_UNIX)
    waiting.connect(master.socket_path("broken"))      # a client the service never serves
    try:
        time.sleep(5)
        # The master and its other services carry on meanwhile.
        assert ask(master.socket_path("echo"), {"echo": "still here"})["echo"] == "still here"
    finally:
        waiting.close()
    fatal = master.log_lines(r"pctest/broken\[\d+\]: fatal: unknown service command: nosuchcommand")
    exits = master.log_lines(r"pctest/master\[\d+\]: warning: process pctest/broken pid \d+ "
                             r"exit status 1")
    throttles = master.log_lines(r"warning: pctest/broken: bad command startup -- throttling")
    # Spawned at about 0, 2 and 4 seconds: a fork loop would have made hundreds.
    assert 2 <= len(fatal) <= 4, master.log()
    assert len(exits) == len(fatal) == len(throttles)
    assert alive(master.master_pid)


@pytest.mark.parametrize("service, line, parameter", [
    ("svc", "svc unix - - n - - echo -o max_idle=soon", "max_idle"),
    # the master sizes the smtp children by it: the child checks it too
    ("smtp", "smtp unix - - n - - smtp -o smtp_agent_threads=0", "smtp_agent_threads"),
])
def test_a_bad_setting_for_one_service_is_a_bad_start(master_instance, service, line, parameter):
    # The child re-reads main.cf with its -o overrides; a bad value there is
    # fatal before the first client, and the service is throttled.
    master = master_instance([ECHO, line], "service_throttle_time = 60s")
    waiting = socket.socket(socket.AF_UNIX)
    waiting.connect(master.socket_path(service))
    try:
        master.wait_for_log(rf"warning: pctest/{service}: bad command startup -- throttling")
    finally:
        waiting.close()
    assert master.log_lines(rf"pctest/{service}\[\d+\]: fatal: .*master.cf:2: {parameter}")
    assert ask(master.socket_path("echo"), {"echo": 1})["echo"] == 1


def test_reload_reaches_new_children_without_cutting_a_client_in_flight(master_instance):
    master = master_instance(["echo unix - - n - 2 echo", "gone unix - - n - 1 echo"],
                             "myhostname = before.example")
    path = master.socket_path("echo")
    before = ask(path, {"parameters": ["myhostname"]})
    assert before["parameters"] == {"myhostname": "before.example"}
    gone_pid = ask(master.socket_path("gone"), {})["pid"]
    # A slow request is in flight when the configuration changes.
    thread, slow = ask_in_background(path, {"echo": "slow", "sleep": 2,
                                            "parameters": ["myhostname"]})
    wait_until(lambda: len(master.children("echo")) >= 1, 5)
    time.sleep(0.3)
    master.write_main_cf("myhostname = after.example")
    master.write_master_cf(["echo unix - - n - 2 echo -o max_use=5", "added unix - - n - 1 echo"])
    master.reload()
    fresh = ask(path, {"parameters": ["myhostname", "max_use"]})
    assert fresh["parameters"] == {"myhostname": "after.example", "max_use": "5"}
    assert fresh["generation"] == 2
    thread.join(10)
    assert "error" not in slow, slow
    assert slow["reply"]["echo"] == "slow"
    assert slow["reply"]["parameters"] == {"myhostname": "before.example"}
    assert slow["reply"]["generation"] == 1
    assert fresh["pid"] != slow["reply"]["pid"]
    # The old child exits once its client is done; the new one stays.
    wait_until(lambda: not alive(slow["reply"]["pid"]), 5, what="the old child to exit")
    assert alive(fresh["pid"])
    # Removed service: socket gone, its idle child gone.  Added service: serves.
    wait_until(lambda: not alive(gone_pid), 5, what="the removed service's child to exit")
    assert not os.path.exists(master.socket_path("gone"))
    assert ask(master.socket_path("added"), {"echo": 1})["service"] == "added"
    assert master.log_lines("warning") == []


def test_reload_with_a_broken_main_cf_keeps_the_running_configuration(master_instance):
    master = master_instance([ECHO], "myhostname = kept.example")
    before = ask(master.socket_path("echo"), {"parameters": ["myhostname"]})
    with open(os.path.join(master.config_dir, "main.cf"), "a") as handle:
        handle.write("myhostname = changed.example\nmax_use = lots\n")
    os.kill(master.master_pid, signal.SIGHUP)
    master.wait_for_log(r"error: reload: .*max_use.* -- keeping the current services")
    after = ask(master.socket_path("echo"), {"parameters": ["myhostname"]})
    assert after == before      # the same child, same generation, same settings
    assert alive(master.master_pid)


def test_stop_lets_the_current_client_finish_and_leaves_no_process(master_instance):
    master = master_instance([ECHO, "two unix - - n - 3 echo"], foreground=False)
    # Daemonised: not our child, in a session of its own, not its leader.
    _state, parent, _group, session = process_stat(master.master_pid)
    assert master.process is None and parent != os.getpid()
    assert session not in (os.getsid(0), master.master_pid)
    idle = ask(master.socket_path("two"), {})["pid"]
    thread, slow = ask_in_background(master.socket_path("echo"), {"echo": "last", "sleep": 1.5})
    wait_until(lambda: master.children("echo"), 5)
    time.sleep(0.3)
    seen = set(master.session_pids())
    assert {master.master_pid, idle} <= seen and len(seen) >= 3
    started = time.monotonic()
    done = master.stop()
    assert done.returncode == 0, done.stderr
    assert "stopping the postclient mail system" in done.stdout
    # stop waited for the master, which waited for the slow client.
    assert time.monotonic() - started >= 1.0
    thread.join(5)
    assert slow.get("reply", {}).get("echo") == "last", slow
    assert master.session_pids() == []
    assert not any(alive(pid) for pid in seen)
    assert master.log_lines(r"pctest/master\[\d+\]: terminating on signal 15")
    assert not os.path.exists(master.socket_path("echo"))
    assert master.cli("status").returncode == 1


def test_stop_kills_children_that_outlive_the_stop_timeout(master_instance):
    master = master_instance([ECHO], args=("--stop-timeout", "1"))
    thread, stuck = ask_in_background(master.socket_path("echo"), {"sleep": 30})
    pid = wait_until(lambda: master.children("echo"), 5)[0]
    time.sleep(0.3)
    started = time.monotonic()
    os.kill(master.master_pid, signal.SIGTERM)
    assert master.process.wait(timeout=10) == 0
    assert 0.8 <= time.monotonic() - started <= 5
    assert not alive(pid)
    assert master.session_pids() == []
    assert master.log_lines(r"warning: killing 1 process\(es\) still running 1 seconds after")
    thread.join(5)
    assert "error" in stuck


def test_children_exit_when_the_master_is_gone(master_instance):
    master = master_instance(["echo unix - - n - 2 echo -o max_idle=100s"])
    pid = ask(master.socket_path("echo"), {})["pid"]
    os.kill(master.master_pid, signal.SIGKILL)
    master.process.wait(timeout=5)
    wait_until(lambda: not alive(pid), 5, what="the orphaned child to exit")


def test_a_second_master_on_the_same_queue_is_refused(master_instance):
    master = master_instance([ECHO])
    second = master.cli("start-fg", timeout=20)
    assert second.returncode == 75
    assert f"the master is already running as pid {master.master_pid}" in second.stderr
    again = master.cli("start", timeout=20)
    assert again.returncode == 75
    assert "already running" in again.stderr
    status = master.cli("status")
    assert status.returncode == 0
    assert f"is running: PID: {master.master_pid}" in status.stdout
    # The first master is untouched: same sockets, still serving.
    assert ask(master.socket_path("echo"), {"echo": 1})["echo"] == 1


def test_commands_when_no_master_runs(master_instance):
    master = master_instance([ECHO], start=False)
    for command in ("status", "stop", "reload"):
        done = master.cli(command)
        assert done.returncode == 1, (command, done)
        assert "is not running" in done.stdout + done.stderr


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_sd_notify_ready_and_stopping(master_instance, kind):
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    directory = tempfile.mkdtemp(prefix="pcn", dir="/tmp")
    if kind == "path":
        address = os.path.join(directory, "notify")
        receiver.bind(address)
        name = address
    else:
        name = f"@postclient-test-{os.getpid()}-{time.monotonic_ns()}"
        receiver.bind("\0" + name[1:])
    receiver.settimeout(15)
    try:
        env = dict(os.environ, NOTIFY_SOCKET=name)
        master = master_instance([ECHO], env=env, start=False)
        master.start(env=env, wait=False)
        message = receiver.recv(4096)
        assert message == b"READY=1"
        # READY comes after the sockets are up.
        assert os.path.exists(master.socket_path("echo"))
        assert ask(master.socket_path("echo"), {"echo": 1})["echo"] == 1
        os.kill(master.master_pid, signal.SIGTERM)
        assert receiver.recv(4096) == b"STOPPING=1"
        assert master.process.wait(timeout=10) == 0
    finally:
        receiver.close()
        if kind == "path":
            os.unlink(address)
        os.rmdir(directory)


def test_wakeup_timers(master_instance):
    master = master_instance(["every unix - - n 1 1 echo", "used unix - - n 1? 1 echo"])
    master.wait_for_log(r"pctest/every\[\d+\]: wakeup request", count=2, timeout=5)
    # "1?": nothing until the service is used.
    assert master.log_lines(r"pctest/used\[") == []
    assert master.children("used") == []
    ask(master.socket_path("used"), {})
    master.wait_for_log(r"pctest/used\[\d+\]: wakeup request", count=2, timeout=5)


def test_the_watchdog_kills_a_client_that_takes_too_long(master_instance):
    master = master_instance(["echo unix - - n - 1 echo -o daemon_timeout=1s"])
    started = time.monotonic()
    with pytest.raises(Exception):
        ask(master.socket_path("echo"), {"sleep": 10}, timeout=8)
    assert time.monotonic() - started < 5
    master.wait_for_log(r"pctest/echo\[\d+\]: fatal: watchdog timeout")
    master.wait_for_log(r"warning: process pctest/echo pid \d+ exit status 1")


def test_an_exception_in_a_service_is_logged_and_the_child_keeps_serving(master_instance):
    master = master_instance([ECHO])
    first = ask(master.socket_path("echo"), {})["pid"]
    with pytest.raises(Exception):
        ask(master.socket_path("echo"), {"request": "fail"})
    master.wait_for_log(r"pctest/echo\[\d+\]: error: echo: error while serving a client: "
                        r"RuntimeError: failure requested by the client")
    assert ask(master.socket_path("echo"), {})["pid"] == first


def test_the_shipped_configuration_starts():
    """What ``make run`` does: postclient init, then start-fg on it."""
    root = tempfile.mkdtemp(prefix="pcr", dir="/tmp")
    config_dir, queue = os.path.join(root, "etc"), os.path.join(root, "spool")
    log_path = os.path.join(root, "maillog")
    base = [sys.executable, "-m", "postclient", "-c", config_dir]
    subprocess.run(base + ["init", "--queue-directory", queue, "--maillog-file", log_path],
                   check=True, capture_output=True)
    process = subprocess.Popen(base + ["start-fg"], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def read_log():
            with open(log_path) as handle:
                return handle.read()
        wait_until(lambda: os.path.exists(log_path) and "daemon started" in read_log(),
                   15, what="the master to start")
        for name in ("smtp", "relay", "lmtp", "scache"):
            assert os.path.exists(os.path.join(queue, "private", name))
        for name in ("incoming", "active", "deferred", "hold", "corrupt", "maildrop", "bounce",
                     "defer", "trace", "private", "public", "pid"):
            assert os.path.isdir(os.path.join(queue, name))
        assert oct(os.stat(os.path.join(queue, "private", "smtp")).st_mode & 0o777) == "0o600"
        assert "warning" not in read_log()
    finally:
        process.send_signal(signal.SIGINT)       # Ctrl-C in "make run"
        _, stderr = process.communicate(timeout=15)
        assert process.returncode == 0, stderr
        shutil.rmtree(root, ignore_errors=True)
