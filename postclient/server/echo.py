"""The "echo" service: a health check for the master and the skeleton.

Exports serve(), PROTOCOL and VERSION.  Reads ipc_timeout (from the
context) and, on request, any parameter named in a request.

Add it to master.cf to see that the master spawns, the skeleton serves and
the configuration children read is the one you expect:

    echo      unix  -       -       n       -       2       echo

Protocol (postclient/ipc.py framing): on accept the service announces
``{"protocol": "echo", "version": 1}``; then, until the client closes, each
request is answered with one reply:

  {"echo": ANY}                       -> {"pid": N, "service": NAME,
                                          "generation": G, "echo": ANY}
  {..., "parameters": [NAME, ...]}    adds "parameters": {NAME: expanded value}
                                      as this child sees main.cf and -o
  {..., "sleep": SECONDS}             answers after that long (at most
                                      ipc_timeout): a slow request, to see
                                      that reload and stop let it finish
  {"request": "fail"}                 raises inside the service: the skeleton
                                      logs it, closes the client, and the same
                                      process goes on serving
  {"request": "wakeup"}               (the master's wakeup timer) logged, no reply

At most 100 parameter names per request.  A malformed request ends the
connection with a warning.
"""

import logging
import os
import time

from .. import ipc
from ..log import LOGGER_NAME

PROTOCOL = "echo"
VERSION = 1
MAX_PARAMETERS = 100
logger = logging.getLogger(LOGGER_NAME)


def _reply(request, context):
    reply = {"pid": os.getpid(), "service": context.name, "generation": context.generation,
             "echo": request.get("echo")}
    names = request.get("parameters")
    if names is not None:
        if not isinstance(names, list) or len(names) > MAX_PARAMETERS \
                or not all(isinstance(name, str) for name in names):
            raise ipc.IpcError(f"bad parameters list (expected at most {MAX_PARAMETERS} names)")
        reply["parameters"] = {name: context.config.expand(name) for name in names}
    return reply


def serve(conn, context):
    def deadline():
        return time.monotonic() + context.ipc_timeout

    try:
        ipc.announce(conn, PROTOCOL, VERSION, deadline())
    except ipc.IpcError:
        pass      # a wakeup trigger sends its request and closes without reading
    while True:
        try:
            request = ipc.receive_message(conn, deadline())
        except ipc.IpcError as error:
            if str(error) != "connection closed":
                logger.warning("echo: %s", error)
            return
        kind = request.get("request", "echo")
        if kind == "wakeup":
            logger.info("wakeup request")
            continue
        if kind == "fail":
            raise RuntimeError("failure requested by the client")
        try:
            reply = _reply(request, context)
        except ipc.IpcError as error:
            logger.warning("echo: %s", error)
            return
        delay = request.get("sleep", 0)
        if isinstance(delay, (int, float)) and delay > 0:
            time.sleep(min(float(delay), context.ipc_timeout))
        try:
            ipc.send_message(conn, reply, deadline())
        except ipc.IpcError as error:
            logger.warning("echo: %s", error)
            return
