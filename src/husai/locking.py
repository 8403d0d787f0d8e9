"""One workflow run per results directory: `results/.husai.lock` names the Snakemake process that owns it.

Why not only Snakemake's own lock: it locks the *files* of a DAG, so a second run with overlapping files is
refused, but a run with disjoint targets is let in, and when that run finishes it deletes the whole
`.snakemake/locks/` folder, including the first run's lock (snakemake 9.27, persistence/file.py
`_delete_locks`). From then on a third overlapping run is no longer refused. This lock is coarse on purpose:
one Snakemake run (not dry-run) per results folder, acquired in the Snakefile's `onstart` and released in
`onsuccess` / `onerror`.

A lock whose process is dead (same host, pid gone: a SIGKILLed run) is stale and taken over with a message;
a lock from another host is never guessed about: the error says which host and pid hold it and how to clear it.
The file is created complete and atomically (written beside, then hard-linked into place), so a crash can
never leave a half-written lock.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

LOCK_NAME = ".husai.lock"


class LockHeldError(RuntimeError):
    """Another live run holds the results directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return {}


def acquire(results_dir: str | os.PathLike = "results", pid: int | None = None) -> Path:
    """Create the lock for `pid` (default: this process); raise LockHeldError naming the holder if a live run
    has it. A stale lock (same host, dead pid) is replaced, and said so on stderr."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / LOCK_NAME
    me = {"pid": pid or os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
          "cwd": os.getcwd(), "argv": sys.argv}
    fd, tmp = tempfile.mkstemp(prefix=f"{LOCK_NAME}.", suffix=".tmp", dir=results_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        for _ in range(3):
            try:
                os.link(tmp, path)  # atomic: fails if a lock exists
                return path
            except FileExistsError:
                pass
            holder = _read(path)
            if holder is None:
                continue  # released meanwhile: try again
            if holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                return path  # re-entrant for the owner
            if holder and holder.get("host") == me["host"] and not _alive(int(holder.get("pid", -1))):
                print(f"husai: removing the stale lock {path} of pid {holder['pid']} (no longer running, "
                      f"started {holder.get('started')})", file=sys.stderr)
                path.unlink(missing_ok=True)
                continue
            raise LockHeldError(_held_message(path, holder, me["host"]))
        raise LockHeldError(f"{path}: could not acquire the lock (it keeps changing); is another run starting?")
    finally:
        os.unlink(tmp)


def _held_message(path: Path, holder: dict, host: str) -> str:
    if not holder:
        return (f"{path} exists but is unreadable; if no husai run uses {path.parent}, delete it and start again")
    where = "this host" if holder.get("host") == host else f"host {holder.get('host')}"
    cmd = " ".join(holder.get("argv") or [])
    return (f"{path.parent} is in use by another run: pid {holder.get('pid')} on {where}, started "
            f"{holder.get('started')} ({cmd}). Wait for it to finish; if it is gone (e.g. killed on another "
            f"host), delete {path} and start again.")


def release(results_dir: str | os.PathLike = "results", pid: int | None = None) -> bool:
    """Remove the lock if `pid` (default: this process) on this host owns it; returns whether it did."""
    path = Path(results_dir) / LOCK_NAME
    holder = _read(path)
    if holder and holder.get("pid") == (pid or os.getpid()) and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)
        return True
    return False


def holder(results_dir: str | os.PathLike = "results") -> dict | None:
    """Who holds the lock (None if nobody)."""
    return _read(Path(results_dir) / LOCK_NAME)
