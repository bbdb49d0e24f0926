"""Journal follower against the confined box's real journald: systemd-python and journalctl."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llmtop.sources.journal import JournalFollower, have_systemd_python
from llmtop.sources.logs import LogLine, LogStore
from llmtop.sources.unit_status import parse_timestamp
from tests.systemd_box.box import SystemdBox
from tests.systemd_box.fixtures import BoxUnit

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parent.parent

# One line every 0.2 s; line 3 carries a syslog priority prefix (<3> = err) that journald parses.
TICKER = [
    "/bin/sh", "-c",
    'i=0; while :; do i=$((i+1)); if [ $i = 3 ]; then echo "<3>tick $i boom"; '
    'else echo "tick $i"; fi; sleep 0.2; done',
]  # fmt: skip


def _require_systemd_python() -> None:
    if not have_systemd_python():
        from tests.conftest import missing_component

        missing_component("systemd-python not installed (pip install systemd-python)")


async def wait_for(cond: Callable[[], object], timeout: float, what: str) -> None:
    """Poll cond() every 20 ms until it holds; fail (saying what) at the deadline."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"within {timeout} s: {what}"
        await asyncio.sleep(0.02)


def _ticks(lines: list[LogLine]) -> list[str]:
    return [ln.text for ln in lines if ln.stream == "journal" and ln.text.startswith("tick ")]


def _start_time(unit: BoxUnit) -> float:
    ts = parse_timestamp(unit.show("ExecMainStartTimestamp")["ExecMainStartTimestamp"])
    assert ts is not None
    return ts


def _follower(box: SystemdBox, unit: BoxUnit, store: LogStore, backend: str) -> JournalFollower:
    return JournalFollower(
        unit.name,
        store,
        user=True,
        syslog_identifier=unit.name.removesuffix(".service"),
        since=_start_time(unit),
        directory=box.journal_dir,
        backend=backend,
    )


async def _collect_latencies(
    store: LogStore, n: int, started: float, timeout: float
) -> list[float]:
    """Poll the store every 10 ms; latency = time first seen − the journal's timestamp."""
    latencies: list[float] = []
    seq = 0
    deadline = time.monotonic() + timeout
    while len(latencies) < n and time.monotonic() < deadline:
        for line in store.since(seq):
            seq = line.seq
            if line.stream == "journal" and line.time > started:  # written after we attached
                latencies.append(time.time() - line.time)
        await asyncio.sleep(0.01)
    return latencies


@pytest.mark.parametrize("backend", ["python", "journalctl"])
async def test_journal_lines_reach_store_quickly(
    systemd_box: SystemdBox, unit_factory, backend: str, record_property
) -> None:  # type: ignore[no-untyped-def]
    if backend == "python":
        _require_systemd_python()
    unit = unit_factory(TICKER, prefix="llmtop-ticker")
    store = LogStore()
    follower = _follower(systemd_box, unit, store, backend)
    attached = time.time()
    await follower.start()
    try:
        latencies = await _collect_latencies(store, 10, attached, timeout=30)
    finally:
        await follower.stop()
    assert follower.error is None
    assert len(latencies) >= 10, f"only {len(latencies)} live lines arrived"
    worst = max(latencies)
    p50 = statistics.median(latencies)
    record_property(f"journal_latency_{backend}_p50_ms", round(p50 * 1000))
    record_property(f"journal_latency_{backend}_max_ms", round(worst * 1000))
    print(f"{backend}: journal→store latency p50 {p50 * 1000:.0f} ms, max {worst * 1000:.0f} ms")
    assert worst <= 5.0  # target: within 1 s (journald itself batches wake-ups every 250 ms)
    ticks = _ticks(store.lines())
    # backfill from the unit's start: nothing missing, in order
    assert ticks[:4] == ["tick 1", "tick 2", "tick 3 boom", "tick 4"]
    levels = {ln.text: ln.level for ln in store.lines()}
    assert levels["tick 3 boom"] == "error"  # journald PRIORITY=3 → error colour
    assert levels["tick 2"] == "info"


async def test_journalctl_fallback_gives_the_same_lines(
    systemd_box: SystemdBox, unit_factory
) -> None:  # type: ignore[no-untyped-def]
    _require_systemd_python()
    unit = unit_factory(TICKER, prefix="llmtop-ticker")
    stores = {"python": LogStore(), "journalctl": LogStore()}
    followers = [_follower(systemd_box, unit, s, b) for b, s in stores.items()]
    for f in followers:
        await f.start()
    try:
        await wait_for(
            lambda: all(len(_ticks(s.lines())) >= 8 for s in stores.values()),
            30,
            "8 ticks through both backends",
        )
    finally:
        for f in followers:
            await f.stop()
    a = stores["python"].lines()
    b = stores["journalctl"].lines()
    n = min(len(_ticks(a)), len(_ticks(b)))
    assert n >= 8
    assert _ticks(a)[:n] == _ticks(b)[:n]
    # same timestamps and levels, line for line
    key_a = [(ln.text, ln.time, ln.level) for ln in a if ln.text in _ticks(a)[:n]]
    key_b = [(ln.text, ln.time, ln.level) for ln in b if ln.text in _ticks(b)[:n]]
    assert key_a == key_b


async def test_follower_sees_restart_messages_and_new_process(
    systemd_box: SystemdBox, unit_factory
) -> None:  # type: ignore[no-untyped-def]
    """Lines of the next process after a restart arrive on the same follower."""
    _require_systemd_python()  # the dashboard's backend (journalctl is the fallback)
    unit = unit_factory(TICKER, prefix="llmtop-ticker")
    store = LogStore()
    follower = _follower(systemd_box, unit, store, "python")
    await follower.start()
    try:
        await wait_for(lambda: "tick 2" in _ticks(store.lines()), 20, "tick 2 of the first run")
        systemd_box.systemctl("restart", unit.name)
        # the new process starts counting again: a second "tick 1"
        await wait_for(
            lambda: _ticks(store.lines()).count("tick 1") >= 2, 20, "tick 1 after the restart"
        )
    finally:
        await follower.stop()
    assert _ticks(store.lines()).count("tick 1") == 2


def test_journal_permission_message_for_unprivileged_user(systemd_box: SystemdBox) -> None:
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    code = (
        "import asyncio\n"
        "from llmtop.sources.journal import JournalFollower, journal_access_problem\n"
        "class S:\n"
        "    def __init__(self): self.lines = []\n"
        "    def append(self, text, stream='stdout', time=None, **kw): self.lines.append(text)\n"
        "print('GROUPS:', journal_access_problem())\n"
        "async def main():\n"
        "    for backend in ('journalctl', 'python'):\n"
        "        s = S()\n"
        "        f = JournalFollower('x.service', s, directory='/run/log/journal', backend=backend)\n"
        "        await f.start()\n"
        "        for _ in range(1500):  # until the follower says what is wrong (30 s at most)\n"
        "            if f.error is not None: break\n"
        "            await asyncio.sleep(0.02)\n"
        "        await f.stop()\n"
        "        print(backend.upper() + ':', f.error)\n"
        "asyncio.run(main())\n"
    )
    # The test's interpreter may live under /root (mode 700): run a system python3 as nobody,
    # with our venv's site-packages (systemd-python) on the path when the versions agree.
    _require_systemd_python()
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        from tests.conftest import missing_component

        missing_component("no system python3 to run as an unprivileged user")
    site = sysconfig.get_paths()["platlib"]
    r = systemd_box.run(
        [*nobody, "env", f"PYTHONPATH={REPO}:{site}", str(python), "-c", code], check=False
    )
    assert r.returncode == 0, r.stderr
    out = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    assert "not in the systemd-journal (or adm) group" in out["GROUPS"]
    assert "usermod -aG systemd-journal" in out["GROUPS"]
    assert "systemd-journal" in out["JOURNALCTL"]
    assert "permission denied" in out["PYTHON"]


async def test_follower_built_from_the_unit_name_alone(
    systemd_box: SystemdBox, unit_factory
) -> None:  # type: ignore[no-untyped-def]
    """The dashboard builds JournalFollower(name, store, user=…): identifier and start time are
    read from systemd, so the backfill starts at the unit's current start."""
    unit = unit_factory(TICKER, prefix="llmtop-ticker")
    journal = ["journalctl", "--no-pager", "-o", "cat", f"_SYSTEMD_UNIT={unit.name}"]
    await wait_for(
        lambda: "tick 6" in systemd_box.run(journal, check=False).stdout, 20, "tick 6 journalled"
    )
    systemd_box.systemctl("restart", unit.name)  # the earlier process's lines are not shown
    store = LogStore()
    follower = JournalFollower(
        unit.name,
        store,
        user=True,
        directory=systemd_box.journal_dir,
        command_prefix=systemd_box.command_prefix,
    )
    await follower.start()

    def current_run_seen() -> bool:
        ticks = _ticks(store.lines())
        return "tick 1" in ticks and "tick 3 boom" in ticks[ticks.index("tick 1") :]

    try:
        await wait_for(current_run_seen, 20, "tick 1 … tick 3 of the current run")
    finally:
        await follower.stop()
    assert follower.syslog_identifier == unit.name.removesuffix(".service")
    assert follower.since is not None
    ticks = _ticks(store.lines())
    seen = [(ln.text, ln.time) for ln in store.lines()][:12]
    assert ticks.count("tick 1") == 1, (follower.since, seen)  # only the current start
    # the old process's last words (≤ 0.5 s before the restart) come first
    first = ticks.index("tick 1")
    assert first <= 5, (follower.since, seen)
    assert ticks[first : first + 3] == ["tick 1", "tick 2", "tick 3 boom"], (follower.since, seen)
