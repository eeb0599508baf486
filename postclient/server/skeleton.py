"""The child skeleton: the one life every service process lives.

Exports ServiceContext, ChildStart, run_child(), serve_single(),
serve_threaded(), serve_one(), WatchdogTimeout and where().
Reads max_use, max_idle, daemon_timeout, ipc_timeout, syslog_name,
smtp_agent_threads or its lmtp mirror (a threaded command only; and
whatever logging reads) from main.cf with the service's master.cf ``-o``
overrides.

The master forks (no exec) and calls run_child() in the child, which never
returns.  In order, the child:
  1. puts back the signal dispositions the master changed (SIGTERM default,
     SIGHUP and SIGINT ignored -- a reload or a Ctrl-C reaches the master,
     which tells the children through their lifeline -- SIGCHLD default, no
     wake-up fd) and unblocks the signals the master blocked around fork;
  2. closes every descriptor of the master's that is not its own (other
     services' sockets and pipes, the master's self-pipe, the pid file);
  3. re-reads main.cf with its service's ``-o`` overrides and
     process_name = the service name, sets up logging and the process
     title ``$syslog_name/<service name>``;
  4. loads its module (registry.py) and calls its optional init(context);
  5. serves: "single" services get one accepted connection per serve() call
     (``ChildStart.threads`` > 1: several at once, serve_threaded()), then
     their optional shutdown(context); "multi" services get run(context) and
     their own event loop.
Anything that goes wrong before the first client is fatal (logged with
"fatal:", exit status 1), so the master throttles the service instead of
fork-looping.

Single-service rules (Postfix's single_server.c): accept in a loop on the
shared, non-blocking listen socket (another child may win the race: that is
fine); report "taken" to the master after accept and "available" after the
client is done; exit after max_use clients, after max_idle seconds without a
client, or when the lifeline reads EOF (the master is gone, reloaded, or
stopping) -- but never in the middle of a client.  Each client runs under
the daemon_timeout watchdog: a service stuck longer is killed with a fatal
log line.  An exception raised by serve() is logged, the client is closed,
and the child goes on serving: a bad request must not take the service down.
A threaded child (smtp_agent_threads) keeps these rules for the process as a
whole: see serve_threaded().
"""

import dataclasses
import logging
import os
import select
import signal
import socket
import threading
import time
import traceback

import setproctitle

from .. import log
from ..pid import current as current_pid
from ..config.config import Config
from ..config.errors import ConfigError
from ..master.proto import AVAILABLE, TAKEN, encode_status
from .registry import ServiceLoadError, load_service, threads_wanted

logger = logging.getLogger(log.LOGGER_NAME)
EXIT_FATAL = 1
_WATCHDOG_GRACE = 5   # seconds between the watchdog exception and the hard kill


class WatchdogTimeout(BaseException):
    """daemon_timeout ran out: not an Exception, so a service cannot swallow it."""


@dataclasses.dataclass
class ServiceContext:
    """What a service gets from the skeleton (see registry.py for the entry points)."""

    name: str                    # master.cf service name ("relay")
    command: str                 # master.cf command ("smtp")
    arguments: list              # master.cf arguments after the command (not -o)
    config: Config               # main.cf + this service's -o, process_name = name
    queue_directory: str
    listen_socket: socket.socket
    lifeline_fd: int             # readable (EOF) when the master is gone or reloaded
    max_use: int
    max_idle: int                # seconds
    ipc_timeout: int             # seconds
    daemon_timeout: int = 18000  # seconds
    generation: int = 0
    status_socket: socket.socket = dataclasses.field(default=None, repr=False)
    master_gone: bool = False    # a status report failed: the master is not listening
    lifeline_watched: bool = False   # a threaded child's main thread watches the lifeline
    lifeline_gone: bool = False      # ... and has seen it close

    def _report(self, status):
        if self.status_socket is None or self.master_gone:
            return False
        try:
            self.status_socket.send(encode_status(current_pid(), self.generation, status))
        except OSError:
            self.master_gone = True
            return False
        return True

    def report_available(self):
        """Tell the master this process can take another client; False if the master is gone."""
        return self._report(AVAILABLE)

    def report_taken(self):
        """Tell the master this process is busy with a client; False if the master is gone."""
        return self._report(TAKEN)

    def lifeline_closed(self):
        """True when the master has gone away or reloaded: finish up and return.

        In a threaded child the main thread watches the lifeline and sets
        lifeline_gone at once (_Pool.watch()), so the workers, which ask before
        each message of a batch, need no poll() of their own: in a delivery
        agent each system call can mean a handoff of the GIL between threads
        (bench/RESULTS.md, "Session 8")."""
        if self.master_gone or self.lifeline_gone:
            return True
        if self.lifeline_watched:
            return False
        return _readable(self.lifeline_fd, 0)


@dataclasses.dataclass
class ChildStart:
    """What the master hands the child at fork."""

    service: object              # config.mastercf.Service
    generation: int
    config_dir: str
    overrides: list              # the master's own -o overrides (command line)
    queue_directory: str
    syslog_name: str             # the master's, until the child has read main.cf
    listen_socket: socket.socket
    status_socket: socket.socket
    lifeline_fd: int
    close_fds: list              # the master's descriptors that are not this child's
    verbose: bool = False        # -v on the master's command line
    threads: int = 1             # clients served at once (a threaded service; see serve_threaded)


def _readable(fd, timeout):
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    try:
        return bool(poller.poll(timeout * 1000))
    except InterruptedError:
        return False


def _reset_signals():
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _close_master_fds(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _fatal(text):
    logger.critical(text)
    _exit(EXIT_FATAL)


def _exit(status):
    for handler in logger.handlers:
        try:
            handler.flush()
        except Exception:
            pass
    os._exit(status)


def where(error):
    """' (at file:line in function)' of the innermost frame of an exception."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    return f" (at {os.path.basename(frame.filename)}:{frame.lineno} in {frame.name})"


def _load_config(start):
    spec = start.service
    overrides = list(start.overrides) + list(spec.overrides)
    return Config.load(start.config_dir, overrides, process_name=spec.name)


def run_child(start):
    """The child's whole life; never returns."""
    status = EXIT_FATAL
    try:
        status = _child(start)
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else EXIT_FATAL
    except WatchdogTimeout:
        logger.critical("watchdog timeout -- %s did not finish within daemon_timeout",
                        start.service.name)
    except BaseException as error:  # a child must never fall back into master code
        try:
            logger.critical("%s: unexpected %s: %s%s", start.service.name, type(error).__name__,
                            error, where(error))
        except BaseException:
            pass
    _exit(status)


def _child(start):
    spec = start.service
    _reset_signals()
    _close_master_fds(start.close_fds)
    setproctitle.setproctitle(f"{start.syslog_name}/{spec.name}")
    log.set_service(spec.name)
    try:
        config = _load_config(start)
        log.setup_logging(config, spec.name, start.verbose)
        syslog_name = config.get("syslog_name") or "postclient"
        setproctitle.setproctitle(f"{syslog_name}/{spec.name}")
        context = ServiceContext(
            name=spec.name, command=spec.command, arguments=list(spec.arguments), config=config,
            queue_directory=start.queue_directory, listen_socket=start.listen_socket,
            lifeline_fd=start.lifeline_fd, max_use=config.get("max_use"),
            max_idle=config.get("max_idle"), ipc_timeout=config.get("ipc_timeout"),
            daemon_timeout=config.get("daemon_timeout"), generation=start.generation,
            status_socket=start.status_socket)
        threads_wanted(spec.command, config)    # the master's choice came from it: check it
    except ConfigError as error:
        _fatal(str(error))
    try:
        module, mode = load_service(spec.command)
    except ServiceLoadError as error:
        _fatal(str(error))
    init = getattr(module, "init", None)
    if init is not None:
        try:
            init(context)
        except Exception as error:
            _fatal(f"{spec.name}: init: {type(error).__name__}: {error}{where(error)}")
    if mode == "multi":
        module.run(context)
        return 0
    if start.threads > 1:
        status = serve_threaded(module.serve, context, start.threads)
    else:
        status = serve_single(module.serve, context)
    shutdown = getattr(module, "shutdown", None)
    if shutdown is not None:
        shutdown(context)
    return status


def _watchdog(signum, frame):
    # A second alarm with the default action kills the process even if the
    # exception below is swallowed somewhere it should not be.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(_WATCHDOG_GRACE)
    raise WatchdogTimeout()


def serve_one(serve, conn, context):
    """One client under the watchdog; exceptions are logged, never fatal."""
    signal.signal(signal.SIGALRM, _watchdog)
    signal.alarm(max(1, int(context.daemon_timeout)))
    try:
        conn.setblocking(True)
        serve(conn, context)
    except Exception as error:
        logger.error("%s: error while serving a client: %s: %s%s", context.name,
                     type(error).__name__, error, where(error))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        try:
            conn.close()
        except OSError:
            pass


def serve_single(serve, context):
    """The accept loop of a "single" service; returns the exit status."""
    listen = context.listen_socket
    poller = select.poll()
    poller.register(listen.fileno(), select.POLLIN)
    poller.register(context.lifeline_fd, select.POLLIN)
    uses = 0
    idle_deadline = time.monotonic() + context.max_idle
    while uses < context.max_use:
        left = idle_deadline - time.monotonic()
        if left <= 0:
            logger.debug("idle timeout -- exiting")
            break
        try:
            events = dict(poller.poll(left * 1000))
        except InterruptedError:
            continue
        if context.lifeline_fd in events:
            logger.debug("master disconnect -- exiting")
            break
        if not events:
            continue
        try:
            conn, _ = listen.accept()
        except (BlockingIOError, InterruptedError):
            continue     # another child took this client
        except OSError as error:
            logger.error("accept connection: %s", error.strerror or error)
            time.sleep(1)
            continue
        uses += 1
        context.report_taken()
        serve_one(serve, conn, context)
        if not context.report_available() or context.lifeline_closed():
            break
        idle_deadline = time.monotonic() + context.max_idle
    return 0


class _Pool:
    """serve_threaded()'s shared state: who is busy since when, how many clients so far."""

    def __init__(self, serve, context, threads):
        self.serve = serve
        self.context = context
        self.threads = threads
        self.lock = threading.Lock()
        self.busy = {}                  # thread ident -> time.monotonic() its client came
        self.uses = 0
        self.last_done = time.monotonic()
        self.stopping = False
        self.reported_taken = False
        self.stop_read, self.stop_write = os.pipe()

    def stop(self, why):
        """Accept no more clients; the workers finish the ones they have."""
        with self.lock:
            if self.stopping:
                return
            self.stopping = True
            logger.debug("%s -- exiting", why)
            if not self.reported_taken:
                # The master must not count on this process for the clients
                # still to come: it spawns another child when they wait.
                self.reported_taken = True
                self.context.report_taken()
        os.write(self.stop_write, b"x")

    def worker(self):
        listen, context = self.context.listen_socket, self.context
        poller = select.poll()
        poller.register(listen.fileno(), select.POLLIN)
        poller.register(self.stop_read, select.POLLIN)
        while True:
            try:
                events = dict(poller.poll())
            except InterruptedError:
                continue
            if self.stop_read in events or self.stopping:
                return
            try:
                conn, _ = listen.accept()
            except (BlockingIOError, InterruptedError):
                continue     # another thread or child took this client
            except OSError as error:
                logger.error("accept connection: %s", error.strerror or error)
                time.sleep(1)
                continue
            self._serve(conn)
            if context.lifeline_closed():
                self.stop("master disconnect")

    def _serve(self, conn):
        me = threading.get_ident()
        with self.lock:
            self.uses += 1
            last = self.uses >= self.context.max_use
            self.busy[me] = time.monotonic()
            if len(self.busy) == self.threads and not self.reported_taken:
                self.reported_taken = True
                self.context.report_taken()
        if last:
            self.stop("max_use reached")
        try:
            conn.setblocking(True)
            self.serve(conn, self.context)
        except Exception as error:
            logger.error("%s: error while serving a client: %s: %s%s", self.context.name,
                         type(error).__name__, error, where(error))
        finally:
            try:
                conn.close()
            except OSError:
                pass
            with self.lock:
                del self.busy[me]
                self.last_done = time.monotonic()
                available = self.reported_taken and not self.stopping
                if available:
                    self.reported_taken = False
            if available and not self.context.report_available():
                self.stop("master disconnect")

    def watch(self):
        """The main thread: lifeline, max_idle and the daemon_timeout watchdog."""
        context = self.context
        poller = select.poll()
        poller.register(context.lifeline_fd, select.POLLIN)
        poller.register(self.stop_read, select.POLLIN)
        context.lifeline_watched = True
        try:
            while not self.stopping:
                try:
                    events = dict(poller.poll(1000))
                except InterruptedError:
                    continue
                if context.lifeline_fd in events:
                    self.stop("master disconnect")      # reports "taken" first, as before
                    context.lifeline_gone = True
                    break
                now = time.monotonic()
                with self.lock:
                    idle = not self.busy and now - self.last_done >= context.max_idle
                    oldest = min(self.busy.values(), default=now)
                if now - oldest > context.daemon_timeout:
                    logger.critical("watchdog timeout -- %s did not finish within daemon_timeout",
                                    context.name)
                    _exit(EXIT_FATAL)
                if idle:
                    self.stop("idle timeout")
        finally:
            # Stopping for another reason (max_use, idle): the workers finishing
            # their clients ask the lifeline themselves again.
            context.lifeline_watched = False


def serve_threaded(serve, context, threads):
    """The accept loop of a threaded "single" service: ``threads`` clients at once.

    Each of ``threads`` threads accepts and serves clients as serve_single()
    does; the master is told "taken" only while every thread is busy, so it
    spawns another child only when this one cannot take a client.  max_use
    counts the clients of the whole process, max_idle runs while no thread
    has a client, and the watchdog (daemon_timeout) is a check by the main
    thread, which kills the process as the single loop's alarm does.  When
    the process stops accepting (max_use, max_idle, the lifeline) it reports
    "taken" first, then waits for its threads to finish their clients.
    Returns the exit status.
    """
    pool = _Pool(serve, context, threads)
    workers = [threading.Thread(target=pool.worker, name=f"serve-{number}", daemon=True)
               for number in range(threads)]
    for worker in workers:
        worker.start()
    try:
        pool.watch()
    finally:
        pool.stop("stopping")
        for worker in workers:
            worker.join()
        os.close(pool.stop_read)
        os.close(pool.stop_write)
    return 0


__all__ = ["ServiceContext", "ChildStart", "run_child", "serve_single", "serve_threaded",
           "serve_one", "WatchdogTimeout", "where"]
