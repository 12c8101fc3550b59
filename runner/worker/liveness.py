"""Whether a worker process is still alive, as far as this machine can tell. No I/O beyond
asking the kernel about a pid; imported by the pool and by the store's checks before a move."""

from __future__ import annotations

import os
import socket


def pid_is_dead(pid: int) -> bool:
    """Whether no process with this pid runs on this machine (never true for ourselves)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def owner_is_dead(owner: str, me: str) -> bool:
    """Whether a lease owner is a process on this host that no longer runs."""
    if owner == me:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, _token = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine: its lease expires on its own
    pid = int(pid_text)
    # Our own pid under another owner name: an earlier process that had this pid is gone.
    return pid == os.getpid() or pid_is_dead(pid)
