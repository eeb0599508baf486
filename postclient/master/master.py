"""The master process: start, main loop, signals, reload, stop.

Exports Master, MasterStartError, STOP_TIMEOUT and EX_ALREADY_RUNNING.
Reads queue_directory, syslog_name, maillog_file (logging),
service_throttle_time and default_process_limit (service.py), and master.cf.

Start: read main.cf and master.cf, create the queue directories, chdir to
$queue_directory (as Postfix does), set up logging, take the pid-file lock
(a second master on the same queue stops here with EX_TEMPFAIL, 75), create
every service's listen socket, log "daemon started", tell systemd READY=1.

The loop has one shape (gunicorn's): wait -> reap -> manage.
  wait    poll() on the self-pipe (signal.set_wakeup_fd), the status channels,
          and the listen sockets of services that want a child (avail.py);
          the timeout is the nearest timer (throttle, wakeup, stop bound).
  reap    waitpid(-1, WNOHANG) until nothing is left (spawn.py).
  manage  apply status reports (status.py), spawn where a client waits and no
          child is available, release throttles, fire wakeup timers, and
          when stopping, kill what outlived the stop bound.
Signal handlers only record the signal; handle_hup() and handle_term() run
in the loop.

Reload (SIGHUP): main.cf and master.cf are read again; when either has an
error it is logged and the services are left as they are (running children
go on; a child spawned later reads main.cf itself and fails until it is
fixed, which throttles its service).  Every kept service gets a new
generation: the write end of its old lifeline is closed, so its children
finish their current client and exit, and new children (which read the new
main.cf) take over on the same listen socket -- no client is refused and
nothing in flight is cut.  Removed services stop the same way and lose
their socket; added services start.

Stop (SIGTERM, SIGINT): STOPPING=1 to systemd, listen sockets closed and
removed (new clients are refused at once), lifelines closed; children finish
their current client and exit; whatever still runs after the stop bound
(``--stop-timeout``, 60 s) is killed with SIGKILL; then the master exits 0.
A second stop signal kills the children at once.
"""

import logging
import os
import select
import signal
import socket

import setproctitle

from .. import __version__, log
from ..config.config import Config, config_directory
from ..config.errors import ConfigError
from ..server import registry, skeleton
from . import avail, conf, listen, notify, status, wakeup
from .pidfile import AlreadyRunning, PidFile, pid_file_path
from .service import MasterService
from .spawn import Spawner
from .system import MASTER_SIGNALS, System

logger = logging.getLogger(log.LOGGER_NAME)
STOP_TIMEOUT = 60
EX_ALREADY_RUNNING = os.EX_TEMPFAIL
_MAX_POLL_MS = 60_000


class MasterStartError(Exception):
    """The master cannot start; ``status`` is the exit status to use."""

    def __init__(self, status, message):
        self.status = status
        super().__init__(message)


class Master:
    def __init__(self, config_dir=None, overrides=(), system=None, stop_timeout=STOP_TIMEOUT,
                 readiness=None, verbose=False):
        self.config_dir = os.path.abspath(config_directory(config_dir))
        self.verbose = verbose
        self.overrides = list(overrides)
        self.system = system or System()
        self.stop_timeout = stop_timeout
        self.readiness = readiness
        self.config = None
        self.queue_directory = None
        self.services = {}        # key -> MasterService, the running configuration
        self.retired = []         # removed at reload, children still finishing
        self.spawner = Spawner(self.system, self._child_main)
        self.pending_signals = []
        self.stopping = False
        self.stop_deadline = None
        self.self_pipe = None
        self.pid_file = None

    # --- configuration ------------------------------------------------------------
    def load_configuration(self):
        """(Config, [Service], [warning]) as they are on disk now.

        ConfigError for the first bad value in main.cf (every parameter is
        checked, not only the master's) or the first bad master.cf entry.
        """
        config = Config.load(self.config_dir, self.overrides, process_name="master")
        errors = config.validate()
        if errors:
            raise errors[0]
        specs, notes = conf.read_services(config)
        for spec in specs:
            spec.process_limit(config)
        return config, specs, notes

    def _title(self, name, config=None):
        return f"{(config or self.config).get('syslog_name') or 'postclient'}/{name}"

    # --- start ----------------------------------------------------------------------
    def run(self):
        """Run until stopped; returns the exit status.  MasterStartError, ConfigError."""
        config, specs, notes = self.load_configuration()
        self.config = config
        self.queue_directory = os.path.abspath(config.expand("queue_directory"))
        try:
            listen.make_queue_directories(self.queue_directory)
            os.chdir(self.queue_directory)
        except OSError as error:
            raise MasterStartError(os.EX_CANTCREAT,
                                   f"queue_directory {self.queue_directory}: "
                                   f"{error.strerror or error}") from None
        log.setup_logging(config, "master", self.verbose)
        for text in notes + [str(warning) for warning in config.warnings]:
            logger.warning("%s", text)
        try:
            self.pid_file = PidFile(pid_file_path(self.queue_directory)).acquire()
        except AlreadyRunning as error:
            logger.critical("%s", error)
            raise MasterStartError(EX_ALREADY_RUNNING, str(error)) from None
        try:
            setproctitle.setproctitle(self._title("master"))
            self._install_signals()
            now = self.system.monotonic()
            for spec in specs:
                try:
                    self._start_service(spec, now)
                except OSError as error:
                    logger.critical("%s: cannot create its socket: %s", spec.name,
                                    error.strerror or error)
                    raise MasterStartError(os.EX_CANTCREAT, f"{spec.name}: cannot create its "
                                                            f"socket: {error.strerror or error}")
            registry.preload({spec.command for spec in specs})
            logger.info("daemon started -- version %s, configuration %s", __version__,
                        self.config_dir)
            notify.notify("READY=1")
            if self.readiness is not None:
                self.readiness.ready()
            self._loop()
        except (MasterStartError, ConfigError):
            raise
        except Exception as error:
            # Children notice the master is gone through their lifelines.
            logger.critical("master: unexpected %s: %s%s", type(error).__name__, error,
                            skeleton.where(error))
            raise
        finally:
            self._cleanup()
        return 0

    def _install_signals(self):
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        self.self_pipe = (read_end, write_end)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        for signum in MASTER_SIGNALS:
            signal.signal(signum, self._record_signal)

    def _record_signal(self, signum, frame):
        self.pending_signals.append(signum)

    # --- services ---------------------------------------------------------------------
    def _start_service(self, spec, now):
        service = MasterService(spec, self.config, self._title(spec.name))
        path = listen.socket_path(self.queue_directory, spec)
        service.listen_socket = listen.open_listen_socket(path, spec.private)
        service.socket_path = path
        service.status_socket, service.status_child_socket = socket.socketpair(
            socket.AF_UNIX, socket.SOCK_DGRAM)
        service.status_socket.setblocking(False)
        self._new_lifeline(service)
        self.services[spec.key] = service
        wakeup.arm(service, now)
        return service

    def _new_lifeline(self, service):
        for fd in (service.lifeline_write, service.lifeline_read):
            if fd is not None:
                os.close(fd)
        service.lifeline_read, service.lifeline_write = os.pipe()

    def _cut_lifeline(self, service):
        """Old children see EOF: they finish their current client and exit."""
        if service.lifeline_write is not None:
            os.close(service.lifeline_write)
            service.lifeline_write = None

    def _restart_service(self, service, spec, now):
        old_path = service.socket_path
        service.configure(spec, self.config, self._title(spec.name))
        path = listen.socket_path(self.queue_directory, spec)
        if path != old_path:
            listen.close_listen_socket(service.listen_socket, old_path)
            service.listen_socket, service.socket_path = None, None
            service.listen_socket = listen.open_listen_socket(path, spec.private)
            service.socket_path = path
        service.new_generation()
        self._new_lifeline(service)
        service.wakeup_at = None
        wakeup.arm(service, now)

    def _stop_listening(self, service):
        listen.close_listen_socket(service.listen_socket, service.socket_path)
        service.listen_socket = None
        service.wakeup_at = None
        self._cut_lifeline(service)

    def _remove_service(self, service):
        service.removed = True
        self._stop_listening(service)
        del self.services[service.key]
        self.retired.append(service)

    def _close_service(self, service):
        self._stop_listening(service)
        for sock in (service.status_socket, service.status_child_socket):
            if sock is not None:
                sock.close()
        service.status_socket = service.status_child_socket = None
        if service.lifeline_read is not None:
            os.close(service.lifeline_read)
            service.lifeline_read = None

    def all_services(self):
        return list(self.services.values()) + self.retired

    # --- the child, right after fork ----------------------------------------------------
    def _master_fds(self):
        fds = []
        if self.self_pipe:
            fds.extend(self.self_pipe)
        if self.pid_file and self.pid_file.fd is not None:
            fds.append(self.pid_file.fd)
        if self.readiness is not None and self.readiness.fd is not None:
            fds.append(self.readiness.fd)
        for service in self.all_services():
            for sock in (service.listen_socket, service.status_socket, service.status_child_socket):
                if sock is not None:
                    fds.append(sock.fileno())
            fds.extend(fd for fd in (service.lifeline_read, service.lifeline_write)
                       if fd is not None)
        return fds

    def _child_main(self, service):
        own = {service.listen_socket.fileno(), service.status_child_socket.fileno(),
               service.lifeline_read}
        start = skeleton.ChildStart(
            service=service.spec, generation=service.generation, config_dir=self.config_dir,
            overrides=self.overrides, queue_directory=self.queue_directory,
            syslog_name=self.config.get("syslog_name") or "postclient",
            listen_socket=service.listen_socket, status_socket=service.status_child_socket,
            lifeline_fd=service.lifeline_read, verbose=self.verbose,
            # the state before fork, as in the parent's Spawner.spawn()
            threads=service.next_child_threads(),
            close_fds=[fd for fd in self._master_fds() if fd not in own])
        skeleton.run_child(start)

    # --- the loop ---------------------------------------------------------------------
    def _loop(self):
        while True:
            now = self.system.monotonic()
            self._timers(now)
            if self.stopping and not self.spawner.owner:
                return
            poller, listening, reporting = self._poll_set(now)
            try:
                events = poller.poll(self._poll_timeout(now))
            except InterruptedError:
                events = []
            self._drain_self_pipe()
            self._dispatch_signals()
            self.spawner.reap(self.system.monotonic())
            for fd, _mask in events:
                if fd in reporting:
                    self._read_status(reporting[fd])
            now = self.system.monotonic()
            for fd, _mask in events:
                service = listening.get(fd)
                if service is not None and avail.should_spawn(service, now, client_waiting=True):
                    self.spawner.spawn(service, now)
                    wakeup.arm(service, now)
            self._close_finished_services()

    def _poll_set(self, now):
        poller = select.poll()
        poller.register(self.self_pipe[0], select.POLLIN)
        listening, reporting = {}, {}
        for service in self.all_services():
            if service.status_socket is not None:
                fd = service.status_socket.fileno()
                poller.register(fd, select.POLLIN)
                reporting[fd] = service
            if avail.wants_listen(service, now):
                fd = service.listen_socket.fileno()
                poller.register(fd, select.POLLIN)
                listening[fd] = service
        return poller, listening, reporting

    def _poll_timeout(self, now):
        deadlines = [self.stop_deadline]
        for service in self.all_services():
            deadlines.append(service.throttled_until)
            deadlines.append(wakeup.next_deadline(service))
        deadlines = [deadline for deadline in deadlines if deadline is not None]
        if not deadlines:
            return _MAX_POLL_MS
        return max(0, min(_MAX_POLL_MS, int((min(deadlines) - now) * 1000) + 1))

    def _timers(self, now):
        for service in self.all_services():
            service.unthrottle_due(now)
            if not self.stopping:
                wakeup.arm(service, now)
                if wakeup.due(service, now):
                    wakeup.fire(service, now)
        if self.stop_deadline is not None and now >= self.stop_deadline:
            self.stop_deadline = None
            if self.spawner.owner:
                logger.warning("killing %d process(es) still running %d seconds after the stop "
                               "request", len(self.spawner.owner), self.stop_timeout)
                self.spawner.kill_all(signal.SIGKILL)

    def _drain_self_pipe(self):
        try:
            while os.read(self.self_pipe[0], 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _dispatch_signals(self):
        while self.pending_signals:
            signum = self.pending_signals.pop(0)
            if signum == signal.SIGHUP:
                self.handle_hup()
            elif signum in (signal.SIGTERM, signal.SIGINT):
                self.handle_term(signum)

    def _read_status(self, service):
        for pid, generation, state in status.read_reports(service):
            status.apply_report(service, pid, generation, state)

    def _close_finished_services(self):
        for service in list(self.retired):
            if not service.children:
                self._close_service(service)
                self.retired.remove(service)

    # --- signals ----------------------------------------------------------------------
    def handle_term(self, signum):
        if self.stopping:
            logger.warning("signal %d during stop -- killing %d remaining process(es)", signum,
                           len(self.spawner.owner))
            self.spawner.kill_all(signal.SIGKILL)
            return
        logger.info("terminating on signal %d", signum)
        notify.notify("STOPPING=1")
        self.stopping = True
        self.stop_deadline = self.system.monotonic() + self.stop_timeout
        for service in self.all_services():
            service.stopping = True
            self._stop_listening(service)

    def handle_hup(self):
        if self.stopping:
            return
        logger.info("reload -- version %s, configuration %s", __version__, self.config_dir)
        notify.notify("RELOADING=1")
        try:
            config, specs, notes = self.load_configuration()
            log.setup_logging(config, "master", self.verbose)
        except ConfigError as error:
            log.setup_logging(self.config, "master", self.verbose)
            logger.error("reload: %s -- keeping the current services", error)
            notify.notify("READY=1")
            return
        for text in notes + [str(warning) for warning in config.warnings]:
            logger.warning("%s", text)
        queue_directory = os.path.abspath(config.expand("queue_directory"))
        if queue_directory != self.queue_directory:
            logger.warning("queue_directory changed from %s to %s: stop and start the master "
                           "for that to take effect", self.queue_directory, queue_directory)
        self.config = config
        now = self.system.monotonic()
        wanted = {spec.key: spec for spec in specs}
        for key, service in list(self.services.items()):
            if key not in wanted:
                self._remove_service(service)
        for spec in specs:
            try:
                if spec.key in self.services:
                    self._restart_service(self.services[spec.key], spec, now)
                else:
                    self._start_service(spec, now)
            except OSError as error:
                logger.error("%s: cannot create its socket: %s -- service not started",
                             spec.name, error.strerror or error)
                if spec.key in self.services:
                    self._remove_service(self.services[spec.key])
        registry.preload({spec.command for spec in specs})
        setproctitle.setproctitle(self._title("master"))
        notify.notify("READY=1")

    # --- the end ----------------------------------------------------------------------
    def _cleanup(self):
        for service in self.all_services():
            self._close_service(service)
        self.services.clear()
        self.retired.clear()
        if self.self_pipe:
            signal.set_wakeup_fd(-1)
            for signum in MASTER_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            for fd in self.self_pipe:
                os.close(fd)
            self.self_pipe = None
        if self.pid_file:
            self.pid_file.release()
