"""A stand-in for the master around postclient.scache.server.run(), for tests.

Exports StandInContext, ScacheThread (run() in a thread of the test
process: unit tests) and ScacheProcess (run() in a subprocess, as the
master would run it: integration tests; it can be killed).

Both build what the child skeleton would hand the service: a listening
UNIX socket at $queue_directory/private/scache, a lifeline (a pipe whose
write end the "master" holds: closing it asks the service to finish) and
the configuration.  The subprocess is ``python -m tests.scache_standin
CONFIG_DIR``; its lifeline is its standard input, so it also ends when the
test process dies.
"""

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time

from postclient.config.config import Config

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class StandInContext:
    name: str
    command: str
    arguments: list
    config: object
    queue_directory: str
    listen_socket: socket.socket
    lifeline_fd: int
    max_idle: int = 0
    max_use: int = 100
    ipc_timeout: int = 3600
    taken: int = 0
    available: int = 0

    def report_taken(self):
        self.taken += 1
        return True

    def report_available(self):
        self.available += 1
        return True


def listen_socket(queue_directory):
    private = os.path.join(queue_directory, "private")
    os.makedirs(private, exist_ok=True)
    path = os.path.join(private, "scache")
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(100)
    return sock, path


def make_context(config_dir, lifeline_fd, max_idle=0):
    config = Config.load(str(config_dir), process_name="scache")
    queue_directory = config.get("queue_directory")
    sock, _ = listen_socket(queue_directory)
    return StandInContext(name="scache", command="scache", arguments=[], config=config,
                          queue_directory=queue_directory, listen_socket=sock,
                          lifeline_fd=lifeline_fd, max_idle=max_idle)


class ScacheThread:
    """run(context) in a daemon thread; stop() closes the lifeline and waits.

    With ``server_options`` (max_sessions=, max_clients=) the thread builds
    server.Server itself, as run() would, with those limits.
    """

    def __init__(self, config_dir, max_idle=0, **server_options):
        from postclient.scache import server
        self.read_end, self.write_end = os.pipe()
        self.context = make_context(config_dir, self.read_end, max_idle)
        self.path = os.path.join(self.context.queue_directory, "private", "scache")
        self.error = None
        context = self.context

        def main():
            try:
                if server_options:
                    server.Server(context.config, context.listen_socket, context.lifeline_fd,
                                  max_idle=max_idle, **server_options).serve()
                else:
                    server.run(context)
            except BaseException as error:      # reported by stop()
                self.error = error

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()

    def stop(self, timeout=10):
        if self.write_end is not None:
            os.close(self.write_end)
            self.write_end = None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "scache did not stop when its lifeline closed"
        if self.read_end is not None:
            os.close(self.read_end)
            self.read_end = None
        self.context.listen_socket.close()
        if self.error is not None:
            raise self.error


class ScacheProcess:
    """run(context) in a subprocess; stop() closes its lifeline, kill() kills it."""

    def __init__(self, config_dir, max_idle=0):
        config = Config.load(str(config_dir))
        self.path = os.path.join(config.get("queue_directory"), "private", "scache")
        env = dict(os.environ, PYTHONPATH=PROJECT_ROOT)
        self.process = subprocess.Popen([sys.executable, "-m", "tests.scache_standin",
                                         str(config_dir), str(max_idle)],
                                        stdin=subprocess.PIPE, cwd=PROJECT_ROOT, env=env)
        deadline = time.monotonic() + 10
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the stand-in scache did not start")
            time.sleep(0.02)

    @property
    def pid(self):
        return self.process.pid

    def _ready(self):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.path)
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def stop(self, timeout=10):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout)
        return self.process.returncode

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def main(argv):
    from postclient import log
    from postclient.scache import server
    config_dir, max_idle = argv[1], int(argv[2]) if len(argv) > 2 else 0
    context = make_context(config_dir, sys.stdin.fileno(), max_idle)
    log.setup_logging(context.config, "scache")
    server.run(context)


if __name__ == "__main__":
    main(sys.argv)
