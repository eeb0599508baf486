"""Postfix-format logging: ``postclient/smtp[1234]: 4Xy9z...: to=<...>, ...``.

Exports setup_logging(config, service), set_service(name), log_tag(),
line(logger, text) and the handlers.  Reads syslog_name, syslog_facility and maillog_file.

Everything in postclient logs through the standard ``logging`` module under
the ``postclient`` logger; this module only decides where the lines go and how
they look, so that pflogsumm and admins' scripts work as with Postfix:
  - to syslog with ident ``$syslog_name/<service>``, the pid and
    ``$syslog_facility`` (the default), or
  - to ``maillog_file`` when it is set (``/dev/stdout`` or ``/dev/stderr`` for
    containers and ``start-fg``), as ``Mon DD HH:MM:SS host tag[pid]: text``.
Warnings, errors and fatal errors get Postfix's ``warning: ``, ``error: ``
and ``fatal: `` prefixes.  The pid is read when a line is written, so forked
children log their own.
"""

import logging
import os
import socket
import sys
import syslog
import time

from .config.errors import ConfigError
from .pid import current as current_pid

LOGGER_NAME = "postclient"
_PREFIX = {logging.WARNING: "warning: ", logging.ERROR: "error: ", logging.CRITICAL: "fatal: "}
_PRIORITY = {logging.DEBUG: syslog.LOG_DEBUG, logging.INFO: syslog.LOG_INFO,
             logging.WARNING: syslog.LOG_WARNING, logging.ERROR: syslog.LOG_ERR,
             logging.CRITICAL: syslog.LOG_CRIT}

_state = {"syslog_name": "postclient", "service": "postclient"}
_direct = {"logger": None, "handler": None}     # what setup_logging() installed, for line()


def set_service(name):
    """Name the service whose lines follow (after fork, in each child)."""
    _state["service"] = name
    for handler in logging.getLogger(LOGGER_NAME).handlers:
        if isinstance(handler, SyslogHandler):
            handler.reopen()
        elif isinstance(handler, MaillogFileHandler):
            handler.forget_prefix()


def log_tag():
    return f"{_state['syslog_name']}/{_state['service']}"


def line(logger, text):
    """``logger.info("%s", text)`` for the lines logged for every message (a
    delivery, an activation, a removal): straight to the handler that
    setup_logging() installed, with no LogRecord and no trip through the
    logging machinery: in a delivery agent that machinery cost more CPU than
    formatting and writing the line (5% of the agent against 3%, sampled
    with py-spy).  Anywhere else (setup_logging() not called, as in tests that
    capture records, or handlers added since) it is logger.info()."""
    handler = _direct_handler(logger)
    if handler is not None:
        handler.emit_text(logging.INFO, text)
    else:
        logger.info("%s", text)


def _direct_handler(logger):
    """The handler setup_logging() installed, while it is the only one and info
    lines are wanted; else None (line() and lines() go through logging)."""
    handler = _direct["handler"]
    if handler is None:
        return None
    handlers = _direct["logger"].handlers
    if len(handlers) != 1 or handlers[0] is not handler or not logger.isEnabledFor(logging.INFO):
        return None
    return handler


def lines(logger, texts):
    """line() for several lines at once, in one write(2) (the queue manager's
    "removed" lines of a batch: each write from a worker thread costs a
    hand-off of the GIL, postclient/queue/fileio.py)."""
    if not texts:
        return
    handler = _direct_handler(logger)
    if handler is not None:
        handler.emit_text(logging.INFO, *texts)
    else:
        for text in texts:
            logger.info("%s", text)


def _text(record):
    message = record.getMessage()
    prefix = _PREFIX.get(record.levelno, "")
    if record.levelno >= logging.CRITICAL and "fatal:" in message[:10]:
        prefix = ""
    return prefix + message


class MaillogFileHandler(logging.Handler):
    """Append Postfix-format lines to a file (or to standard output/error).

    Every delivery logs a line, so the path is lean: the prefix
    ``Mon DD HH:MM:SS host tag[pid]: `` is formatted once per second (and
    again after a fork or set_service()), and a line goes to a file as one
    bytes object in one write(2) on an O_APPEND descriptor: unbuffered (no
    flush) and atomic between processes.  Standard output/error stay Python
    streams (the caller's, which tests and wrappers may replace), written and
    flushed.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self._host = socket.gethostname().split(".")[0]
        self._prefix_key = None
        self._prefix = ""
        self._stream = self._descriptor = None
        if path in ("/dev/stdout", "-"):
            self._stream = sys.stdout
        elif path == "/dev/stderr":
            self._stream = sys.stderr
        else:
            self._descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def forget_prefix(self):
        """The service name changed: format the prefix afresh."""
        self._prefix_key = None

    def emit(self, record):
        try:
            self._write(record.created, _text(record))      # under the handler's lock (handle())
        except Exception:  # a logging failure must never take delivery down
            self.handleError(record)

    def emit_text(self, level, *texts):
        """Lines of ``level`` without a LogRecord (line(), lines()), in one write."""
        prefix = _PREFIX.get(level, "")
        if prefix:
            texts = [prefix + text for text in texts]
        with self.lock:
            try:
                self._write(time.time(), *texts)
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": texts[0], "levelno": level}))

    def _write(self, created, *texts):
        key = (int(created), current_pid())
        if key != self._prefix_key:
            stamp = time.strftime("%b %d %H:%M:%S", time.localtime(key[0]))
            self._prefix = f"{stamp} {self._host} {log_tag()}[{key[1]}]: "
            self._prefix_key = key
        if len(texts) == 1:
            line = f"{self._prefix}{texts[0]}\n"
        else:
            line = "".join(f"{self._prefix}{text}\n" for text in texts)
        if self._descriptor is None:
            self._stream.write(line)
            self._stream.flush()
            return
        data = line.encode("utf-8", "backslashreplace")
        written = os.write(self._descriptor, data)
        while written < len(data):          # a short write (a full disk, a signal)
            data = data[written:]
            written = os.write(self._descriptor, data)

    def close(self):
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
        super().close()


class SyslogHandler(logging.Handler):
    """Send lines to syslog with ident ``$syslog_name/<service>`` and the pid."""

    def __init__(self, facility):
        super().__init__()
        self.facility = facility
        self.reopen()

    def reopen(self):
        syslog.openlog(log_tag(), syslog.LOG_PID, self.facility)

    def emit(self, record):
        try:
            syslog.syslog(_PRIORITY.get(record.levelno, syslog.LOG_INFO), _text(record))
        except Exception:
            self.handleError(record)

    def emit_text(self, level, text):
        """One line of ``level`` without a LogRecord (line())."""
        try:
            syslog.syslog(_PRIORITY.get(level, syslog.LOG_INFO), _PREFIX.get(level, "") + text)
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": text, "levelno": level}))


def facility_code(name):
    return getattr(syslog, "LOG_" + name.upper())


def setup_logging(config, service, verbose=False):
    """Route the ``postclient`` logger per main.cf; returns the logger."""
    _state["syslog_name"] = config.get("syslog_name") or "postclient"
    _state["service"] = service
    # No postclient line shows the caller's file and line or the thread and
    # process fields of a LogRecord: not collecting them makes every logged
    # line a third cheaper (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    maillog_file = config.get("maillog_file")
    if maillog_file:
        try:
            handler = MaillogFileHandler(maillog_file)
        except OSError as error:
            setting = config.setting("maillog_file")
            raise ConfigError(setting.source, setting.line,
                              f"maillog_file: cannot open {maillog_file}: {error.strerror}") from None
    else:
        handler = SyslogHandler(facility_code(config.get("syslog_facility")))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    _direct["logger"], _direct["handler"] = logger, handler
    return logger
