"""The queue directories and the services' listen sockets.

Exports QUEUE_DIRECTORIES, make_queue_directories(), socket_path(),
open_listen_socket() and close_listen_socket().  Reads queue_directory
(through its callers).

At start the master creates whatever queue subdirectory is missing (DESIGN.md
"Queue"), with Postfix-like modes: private/ is 0700 and its sockets 0600,
public/ is 0755 and its sockets 0666, maildrop/ is 1733 so that
unprivileged submitters can drop files there.  Existing directories keep
their modes: the operator's choice wins.  A listen socket is created only
after the master holds the pid-file lock, so a stale socket file left by a
dead master can safely be removed; a file that is not a socket is never
removed.  Listen sockets are non-blocking: the master only polls them (to
see a client waiting) and the children that share them race to accept.
"""

import errno
import os
import socket
import stat

QUEUE_DIRECTORIES = (
    ("incoming", 0o700), ("active", 0o700), ("deferred", 0o700), ("hold", 0o700),
    ("corrupt", 0o700), ("maildrop", 0o1733), ("bounce", 0o700), ("defer", 0o700),
    ("trace", 0o700), ("private", 0o700), ("public", 0o755), ("pid", 0o755),
)
LISTEN_BACKLOG = 128


def make_queue_directories(queue_directory):
    os.makedirs(queue_directory, mode=0o755, exist_ok=True)
    for name, mode in QUEUE_DIRECTORIES:
        path = os.path.join(queue_directory, name)
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            continue
        os.chmod(path, mode)   # mkdir's mode is filtered by the umask


def socket_path(queue_directory, spec):
    return os.path.join(queue_directory, "private" if spec.private else "public", spec.name)


def open_listen_socket(path, private):
    """A listening, non-blocking UNIX stream socket at ``path``."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(info.st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        os.unlink(path)
    mode = 0o600 if private else 0o666
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    sock.setblocking(False)
    return sock


def close_listen_socket(sock, path):
    """Stop listening; clients that try later are refused instead of left waiting."""
    if sock is not None:
        sock.close()
    if path:
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        except OSError:
            pass
