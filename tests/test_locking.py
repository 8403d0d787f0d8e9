"""Two concurrent runs on one results directory: the second is refused.

Snakemake's own lock covers overlapping files only, and a finishing (or refused) run deletes every instance's
locks (`.snakemake/locks/` is removed whole), so husai adds `results/.husai.lock` (husai.locking), taken in the
Snakefile's onstart. The workflow test runs a tiny Snakefile wired the same way: an overlapping second run is
refused by Snakemake, a disjoint one by husai's lock, and after a SIGKILL the stale lock is taken over.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from husai import locking

REPO = Path(__file__).resolve().parents[1]

SNAKEFILE = """
from husai.locking import acquire, release


onstart:
    acquire("results")


onsuccess:
    release("results")


onerror:
    release("results")


rule slow:
    output: "results/a.txt"
    shell: "mkdir -p results && touch results/started && if [ -e hold ]; then sleep 60; fi && echo a > {output}"


rule other:
    output: "results/b.txt"
    shell: "echo b > {output}"
"""


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lock_names_its_live_holder_and_only_the_owner_releases(tmp_path):
    other = os.getppid()  # a live process that is not us
    path = locking.acquire(tmp_path, pid=other)
    held = json.loads(path.read_text())
    assert held["pid"] == other and held["host"] == socket.gethostname()
    with pytest.raises(locking.LockHeldError, match=rf"in use by another run: pid {other} on this host"):
        locking.acquire(tmp_path)
    assert not locking.release(tmp_path)  # not ours
    assert locking.release(tmp_path, pid=other) and locking.holder(tmp_path) is None
    locking.acquire(tmp_path)
    assert locking.acquire(tmp_path) == path  # re-entrant for its owner
    assert locking.release(tmp_path) and not path.exists()


def test_stale_lock_is_taken_over_but_another_hosts_lock_is_not(tmp_path, capsys):
    dead = _dead_pid()
    locking.acquire(tmp_path, pid=dead)
    locking.acquire(tmp_path)
    assert f"removing the stale lock {tmp_path / locking.LOCK_NAME} of pid {dead}" in capsys.readouterr().err
    assert locking.holder(tmp_path)["pid"] == os.getpid()
    locking.release(tmp_path)
    (tmp_path / locking.LOCK_NAME).write_text(json.dumps({"pid": dead, "host": "gpu-node-7", "started": "x"}))
    with pytest.raises(locking.LockHeldError, match=r"pid \d+ on host gpu-node-7.*delete .*\.husai\.lock"):
        locking.acquire(tmp_path)


def _smk(work: Path, *args):
    return [sys.executable, "-m", "snakemake", "-s", str(work / "Snakefile"), "--directory", str(work),
            "--cores", "1", *args]


def _run(work: Path, env, *args):
    res = subprocess.run(_smk(work, *args), capture_output=True, text=True, timeout=120, env=env)
    return res.returncode, res.stdout + res.stderr


def test_second_snakemake_run_on_the_same_results_is_refused(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "hold").touch()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    first = subprocess.Popen(_smk(tmp_path, "results/a.txt"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True, env=env)
    try:
        deadline = time.time() + 60
        while not (tmp_path / "results" / "started").exists():
            assert first.poll() is None and time.time() < deadline, "the first run did not start its job"
            time.sleep(0.2)
        assert locking.holder(tmp_path / "results")["pid"] == first.pid
        rc, out = _run(tmp_path, env, "results/a.txt")  # same files: Snakemake's lock refuses
        assert rc != 0 and "Directory cannot be locked" in out, out[-2000:]
        rc, out = _run(tmp_path, env, "results/b.txt")  # other files: husai's lock refuses
        assert rc != 0 and f"in use by another run: pid {first.pid}" in out, out[-2000:]
        assert not (tmp_path / "results" / "a.txt").exists() and not (tmp_path / "results" / "b.txt").exists()
        rc, out = _run(tmp_path, env, "results/b.txt", "-n")  # a dry run takes no lock
        assert rc == 0, out[-2000:]
        os.killpg(first.pid, signal.SIGKILL)  # the first run dies without releasing its lock
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
    (tmp_path / "hold").unlink()
    rc, out = _run(tmp_path, env, "results/a.txt")
    if rc != 0 and "--unlock" in out:  # Snakemake's own stale lock, if it survived, needs its documented step
        assert _run(tmp_path, env, "--unlock")[0] == 0
        rc, out = _run(tmp_path, env, "results/a.txt")
    assert rc == 0 and "removing the stale lock" in out, out[-2000:]
    assert (tmp_path / "results" / "a.txt").read_text() == "a\n"
    assert locking.holder(tmp_path / "results") is None  # released on success
