"""Postfix-format log lines to maillog_file, with the pid of the writing process."""

import logging
import os
import re

import pytest

from postclient import log
from postclient.config.config import Config
from postclient.config.errors import ConfigError

LINE = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ (\S+)\[(\d+)\]: (.*)$")


def config_for(tmp_path, text):
    (tmp_path / "main.cf").write_text(text)
    return Config.load(str(tmp_path))


def lines(path):
    return [LINE.match(line).groups() for line in path.read_text().splitlines()]


def test_maillog_file_lines_in_postfix_format(tmp_path):
    logfile = tmp_path / "maillog"
    logger = log.setup_logging(config_for(tmp_path, f"maillog_file = {logfile}\nsyslog_name = relay1\n"), "smtp")
    logger.info("4Xy9z: to=<a@example.com>, status=sent (250 ok)")
    logger.warning("no MX host for example.net has a valid address record")
    logger.error("something broke")
    logger.critical("cannot go on")
    pid = str(os.getpid())
    assert lines(logfile) == [
        ("relay1/smtp", pid, "4Xy9z: to=<a@example.com>, status=sent (250 ok)"),
        ("relay1/smtp", pid, "warning: no MX host for example.net has a valid address record"),
        ("relay1/smtp", pid, "error: something broke"),
        ("relay1/smtp", pid, "fatal: cannot go on"),
    ]


def test_service_name_and_pid_follow_a_fork(tmp_path):
    logfile = tmp_path / "maillog"
    logger = log.setup_logging(config_for(tmp_path, f"maillog_file = {logfile}\n"), "master")
    child = os.fork()
    if child == 0:
        try:
            log.set_service("scache")
            logger.info("started")
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    assert lines(logfile) == [("postclient/scache", str(child), "started")]



def test_cached_prefix_follows_the_service_and_bytes_that_are_not_utf8_are_escaped(tmp_path):
    logfile = tmp_path / "maillog"
    logger = log.setup_logging(config_for(tmp_path, f"maillog_file = {logfile}\n"), "pickup")
    logger.info("first")
    log.set_service("qmgr")             # within the same second: the prefix is not reused
    logger.info("to=<a\udcff@example.com>")
    pid = str(os.getpid())
    assert lines(logfile) == [("postclient/pickup", pid, "first"),
                              ("postclient/qmgr", pid, "to=<a\\udcff@example.com>")]

def test_line_writes_what_logger_info_writes(tmp_path):
    logfile = tmp_path / "maillog"
    logger = log.setup_logging(config_for(tmp_path, f"maillog_file = {logfile}\n"), "smtp")
    child = logging.getLogger(log.LOGGER_NAME + ".smtp")
    child.info("%s", "Q1: to=<a@example.com>, status=sent (250 2.0.0 ok)")
    log.line(child, "Q2: to=<b\udcff@example.com>, status=sent (250 2.0.0 ok)")
    pid = str(os.getpid())
    assert lines(logfile) == [
        ("postclient/smtp", pid, "Q1: to=<a@example.com>, status=sent (250 2.0.0 ok)"),
        ("postclient/smtp", pid, "Q2: to=<b\\udcff@example.com>, status=sent (250 2.0.0 ok)")]
    logger.setLevel(logging.WARNING)            # info lines are not wanted: none is written
    log.line(child, "Q3: removed")
    assert len(lines(logfile)) == 2


def test_lines_write_several_lines_in_one_write(tmp_path, monkeypatch):
    logfile = tmp_path / "maillog"
    log.setup_logging(config_for(tmp_path, f"maillog_file = {logfile}\n"), "qmgr")
    child = logging.getLogger(log.LOGGER_NAME + ".qmgr")
    writes = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(data) or real_write(fd, data))
    log.lines(child, ["Q1: removed", "Q2: removed", "Q3: removed"])
    log.lines(child, [])
    pid = str(os.getpid())
    assert lines(logfile) == [("postclient/qmgr", pid, f"Q{n}: removed") for n in (1, 2, 3)]
    assert len(writes) == 1
    seen = []
    extra = logging.Handler()
    extra.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger(log.LOGGER_NAME).addHandler(extra)    # another listener: through logging
    log.lines(child, ["Q4: removed", "Q5: removed"])
    assert seen == ["Q4: removed", "Q5: removed"] and len(lines(logfile)) == 5


def test_line_goes_through_logging_where_others_listen(tmp_path, caplog):
    child = logging.getLogger(log.LOGGER_NAME + ".qmgr")
    with caplog.at_level(logging.INFO):
        log.line(child, "Q1: removed")          # no setup_logging(): records, as in tests
    assert [r.getMessage() for r in caplog.records] == ["Q1: removed"]
    logfile = tmp_path / "maillog"
    logger = log.setup_logging(config_for(tmp_path, f"maillog_file = {logfile}\n"), "qmgr")
    seen = []
    extra = logging.Handler()
    extra.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(extra)                    # a handler added since: it hears the line too
    log.line(child, "Q2: removed")
    assert seen == ["Q2: removed"] and lines(logfile)[0][2] == "Q2: removed"


def test_unwritable_maillog_file_is_a_config_error(tmp_path):
    config = config_for(tmp_path, f"# x\nmaillog_file = {tmp_path}/missing/dir/log\n")
    with pytest.raises(ConfigError, match=r"main.cf:2: maillog_file: cannot open .*No such file"):
        log.setup_logging(config, "smtp")


def test_syslog_is_the_default(tmp_path):
    logger = log.setup_logging(config_for(tmp_path, "syslog_facility = local3\n"), "smtp")
    (handler,) = logger.handlers
    assert isinstance(handler, log.SyslogHandler)
    import syslog
    assert handler.facility == syslog.LOG_LOCAL3


@pytest.fixture(autouse=True)
def reset_logging():
    yield
    logger = logging.getLogger(log.LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = True                     # as before setup_logging()
    logger.setLevel(logging.NOTSET)
