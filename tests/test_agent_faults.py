"""`llmtop agent` as an operator runs it (a subprocess against a real llama-server), under the
faults of issue 10: kill -9 mid-write, a reader holding the database open, a full disk.

Every agent is started by a fixture that kills it by PID at teardown; waits are on conditions
with deadlines, never a sleep before an assertion.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.realserver import RunningServer

pytestmark = [pytest.mark.real_server]

ROOT = Path(__file__).resolve().parent.parent
INTERVAL_S = 0.25


def wait_for(what: str, cond: Callable[[], object], timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def rows(db: Path) -> tuple[int, float | None]:
    """(server samples, last sample time) with a fresh read-only connection (0 while absent)."""
    if not db.exists():
        return 0, None
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            n, last = c.execute("SELECT count(*), max(time) FROM server_samples").fetchone()
        finally:
            c.close()
    except sqlite3.Error:
        return 0, None
    return int(n), last


@pytest.fixture
def agents() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(argv: list[str], stderr_path: Path) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("LLAMA_API_KEY", "LLMTOP_API_KEY")}
        err = stderr_path.open("w")
        p = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
                             text=True, start_new_session=True)  # fmt: skip
        err.close()
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
        p.wait(10)


def agent_argv(url: str, db: Path) -> list[str]:
    return [sys.executable, "-m", "llmtop", "agent", "--url", url, "--db", str(db),
            "--interval", str(INTERVAL_S)]  # fmt: skip


def test_kill_9_loses_at_most_one_interval_and_a_reader_never_blocks_the_writer(
    llama_server: RunningServer, agents: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    db = tmp_path / "history.sqlite"
    agent = agents(agent_argv(llama_server.url, db), tmp_path / "agent.err")
    wait_for("10 samples", lambda: rows(db)[0] >= 10)

    # a reader in a long read transaction: the agent goes on committing meanwhile
    reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    reader.execute("BEGIN")
    held = reader.execute("SELECT count(*) FROM server_samples").fetchone()[0]
    n_before = rows(db)[0]
    wait_for("commits while a reader holds a transaction", lambda: rows(db)[0] >= n_before + 8)
    assert reader.execute("SELECT count(*) FROM server_samples").fetchone()[0] == held
    reader.execute("COMMIT")
    reader.close()

    # kill -9 in the middle of writing: everything committed survives
    time.sleep(INTERVAL_S * 0.6)  # land between two ticks' commits, not on one
    killed_at = time.time()
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait(10)
    assert agent.returncode == -signal.SIGKILL
    c = sqlite3.connect(db)
    assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    n, last = c.execute("SELECT count(*), max(time) FROM server_samples").fetchone()
    c.close()
    assert killed_at - last <= INTERVAL_S + 0.2, (killed_at, last)
    assert "cannot write" not in (tmp_path / "agent.err").read_text()

    # the next agent appends to the same file
    again = agents(agent_argv(llama_server.url, db), tmp_path / "again.err")
    wait_for("the restarted agent's samples", lambda: rows(db)[0] >= n + 4)
    again.send_signal(signal.SIGTERM)
    assert again.wait(15) == 0


_COUNT = (
    "import sqlite3, sys\n"
    "c = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True, timeout=1)\n"
    "n, last = c.execute('SELECT count(*), max(time) FROM server_samples').fetchone()\n"
    "ok = c.execute('PRAGMA integrity_check').fetchone()[0]\n"
    "ts = [t for (t,) in c.execute('SELECT time FROM server_samples ORDER BY time')]\n"
    "print(n, ok, max((b - a for a, b in zip(ts, ts[1:])), default=0))\n"
)


def rows_in(pid: int, db: Path) -> tuple[int, str, float]:
    """(samples, integrity, largest gap) read inside the agent's mount namespace: SQLite
    resolves /proc/PID/root to this namespace's /, so it cannot open the file from out here."""
    p = subprocess.run(["nsenter", "-t", str(pid), "-m", sys.executable, "-c", _COUNT, str(db)],
                       capture_output=True, text=True, timeout=20)  # fmt: skip
    if p.returncode != 0:
        return 0, p.stderr.strip()[-200:], 0.0
    n, ok, gap = p.stdout.split()
    return int(n), ok, float(gap)


def _unshare_ok() -> bool:
    if os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


def test_disk_full_one_line_keeps_sampling_and_resumes(
    llama_server: RunningServer, agents: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    if not _unshare_ok():
        from tests.conftest import missing_component

        missing_component("a mount namespace (root and unshare -m) for the tiny tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    err = tmp_path / "agent.err"
    # the agent's own mount namespace with a 2 MiB tmpfs on mnt; paths go in as arguments
    script = 'mount -t tmpfs -o size=2m,mode=0700 llmtop-test "$1" && shift && exec "$@"'
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(mnt),
            *agent_argv(llama_server.url, mnt / "history.sqlite")]  # fmt: skip
    agent = agents(argv, err)
    # the agent's view of the tmpfs, from outside its namespace
    inside = Path(f"/proc/{agent.pid}/root") / str(mnt).lstrip("/")
    db = mnt / "history.sqlite"
    wait_for("samples on the tmpfs", lambda: rows_in(agent.pid, db)[0] >= 5)

    filler = inside / "filler"
    with filler.open("wb") as f:  # fill the disk to the last block
        chunk = b"\0" * 65536
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        with contextlib.suppress(OSError):
            f.close()
    full_at = time.time()
    wait_for("the disk-full line", lambda: "cannot write" in err.read_text(), timeout=30)
    first_line = next(ln for ln in err.read_text().splitlines() if "cannot write" in ln)
    assert "full" in first_line and str(mnt) in first_line and "in memory" in first_line
    # it keeps sampling (in memory) for a while: still exactly one line about it
    n_full = rows_in(agent.pid, db)[0]
    wait_for("a few ticks in memory", lambda: time.time() > full_at + 10 * INTERVAL_S)
    assert agent.poll() is None
    assert err.read_text().count("cannot write") == 1

    filler.unlink()  # space returns
    wait_for("writing resumes", lambda: "again" in err.read_text(), timeout=30)
    wait_for("the kept samples are written", lambda: rows_in(agent.pid, db)[0] > n_full + 10)
    _, integrity, gap = rows_in(agent.pid, db)
    assert integrity == "ok"
    # no hole where the disk was full: the samples kept in memory filled it
    assert gap < INTERVAL_S * 4, gap
    assert "Traceback" not in err.read_text()
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(15) == 0
