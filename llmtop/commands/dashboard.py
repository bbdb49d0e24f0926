"""The default command: open the dashboard.

  llmtop -- /path/to/llama-server -m model.gguf …   child mode (llmtop supervises the server)
  llmtop --url http://127.0.0.1:8080                attach mode (no restart action)
  llmtop --unit llama-server.service [--user]       unit mode (systemd)
  llmtop --url A --url B  /  --unit X --unit Y      several servers in one dashboard
  llmtop                                            discover local servers: one → attach,
                                                    several → all of them, none → how to start one
Quitting, Ctrl-C, SIGTERM or SIGHUP stop a supervised child cleanly; a unit is never touched.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from typing import Any

from llmtop.commands.common import resolve_api_key
from llmtop.config import ConfigError, add_threshold_arguments, thresholds_from_args
from llmtop.session import (
    DiscoveredTarget,
    Session,
    UnitAccess,
    make_alert_engine,
    make_gpu_monitor,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        action="append",
        help="attach to a llama-server at this URL (http://host:port); repeat for several",
    )
    parser.add_argument(
        "--api-key",
        help="API key for the server (default: env LLMTOP_API_KEY or LLAMA_API_KEY); never shown",
    )
    parser.add_argument(
        "--refresh", type=float, default=1.0, metavar="SECONDS", help="refresh interval (1)"
    )
    parser.add_argument(
        "--restart-sec",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="child mode: first restart delay after a failure, doubled up to --max-restart-sec (2)",
    )
    parser.add_argument(
        "--max-restart-sec", type=float, default=30.0, metavar="SECONDS", help="(30)"
    )
    parser.add_argument(
        "--no-restart", action="store_true", help="child mode: do not restart after a failure"
    )
    parser.add_argument(
        "--log-lines", type=int, default=10_000, metavar="N", help="log lines kept (10000)"
    )
    parser.add_argument(
        "--unit",
        action="append",
        metavar="NAME",
        help="watch and control a systemd unit; repeat for several",
    )
    parser.add_argument("--user", action="store_true", help="--unit is a user unit")
    parser.add_argument(
        "--db",
        metavar="PATH",
        help="history database whose last hour of this server the plots open with "
        "(default: the agent's, when it exists)",
    )
    parser.add_argument(
        "--record",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="record what the dashboard sees to a history database, as `llmtop agent` does "
        "(default PATH: the agent's)",
    )
    parser.add_argument(
        "--router",
        action="store_true",
        help="the server is a router-mode llama-server (--models-dir / --models-preset): "
        "show its model table (found out by itself otherwise)",
    )
    add_threshold_arguments(parser)


def build_session(
    args: argparse.Namespace, *, demo: bool = False, access: UnitAccess | None = None
) -> Session | str:
    """A Session from the command line, or an error message (in words) for the operator.

    *access* says how unit mode reaches systemd (tests: a confined box); None: this machine.
    """
    from llmtop.sources.logs import LogStore

    store = LogStore(maxlen=max(100, int(args.log_lines)))
    api_key = resolve_api_key(args)
    refresh = max(0.2, float(args.refresh))
    server_argv = list(getattr(args, "server_argv", []) or [])
    try:
        thresholds = thresholds_from_args(args)
    except ConfigError as exc:
        return str(exc)
    common: dict[str, Any] = {
        "api_key": api_key,
        "log_store": store,
        "refresh_s": refresh,
        # Built when the session starts, after the first frame (NVML / simulator build is slow).
        "gpu_factory": lambda: make_gpu_monitor(refresh, demo=demo),
        "alert_factory": lambda: make_alert_engine(thresholds),
        "router": bool(getattr(args, "router", False)),
    }

    urls, units = listed(args.url), listed(args.unit)
    if server_argv and len(urls) > 1:
        return "child mode (-- llama-server …) runs one server: give at most one --url"
    if server_argv:  # child mode stays one server
        from llmtop.control.supervisor import ChildSupervisor, RestartPolicy
        from llmtop.model.launch_spec import LaunchSpec, llama_env

        # LLAMA_ARG_* in llmtop's environment reach the child: they count for its URL and key.
        spec = LaunchSpec.from_argv(server_argv, env=llama_env(os.environ))
        policy = RestartPolicy(
            on_failure=not args.no_restart,
            restart_sec=float(args.restart_sec),
            max_restart_sec=float(args.max_restart_sec),
        )
        sup = ChildSupervisor(spec, store, policy)
        # The child's own key is what the server expects unless the operator gave another.
        if common["api_key"] is None and spec.api_key:
            common["api_key"] = spec.api_key
        url = urls[0] if urls else None
        return Session(mode="child", url=url or spec.url, controller=sup, **common)

    pairs = _pairs(urls, units)
    if len(pairs) > 1:
        session = Session(mode="none", url=None, **common)
        targets = [DiscoveredTarget(u, unit=n, user=bool(args.user)) for u, n in pairs]
        try:
            session.open_several(targets, access)
        except ImportError:
            return "unit mode (--unit) is not yet available in this build"
        return session

    if units:
        url = urls[0] if urls else None
        session = Session(mode="unit", url=url, **common)
        try:
            session.use_unit(units[0], user=bool(args.user), url=url, access=access)
        except ImportError:
            return "unit mode (--unit) is not yet available in this build"
        return session

    if urls:
        return Session(mode="attach", url=urls[0], **common)

    session = Session(mode="none", url=None, **common)
    targets = discover_targets(access)
    if len(targets) == 1:
        session.choose(targets[0], access)  # one: attach (a process) or unit mode (a unit)
    else:
        session.candidates = targets
    return session


def listed(value: str | list[str] | None) -> list[str]:
    """--url / --unit as a list: the dashboard's flags repeat (append), other commands that
    build a session (agent, demo) give one string or none."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else [v for v in value if v]


def _pairs(urls: list[str], units: list[str]) -> list[tuple[str, str | None]]:
    """(url, unit) per server: units first, each with its own --url when as many are given
    (else the URL from its ExecStart), then the remaining URLs attached."""
    if units and len(urls) == len(units):
        return list(zip(urls, units, strict=True))
    unit_pairs: list[tuple[str, str | None]] = [("", n) for n in units]
    return [*unit_pairs, *((u, None) for u in urls)]


def discover_targets(access: UnitAccess | None = None) -> list[DiscoveredTarget]:
    """Local llama-servers: processes (psutil) and systemd units whose ExecStart runs one
    (system and user managers). A process that is a unit's MainPID is listed once, as the
    unit, so that restart goes through systemd."""
    from concurrent.futures import ThreadPoolExecutor

    from llmtop.sources.unit_status import discover_units

    prefix = access.command_prefix if access is not None else ()
    servers: list[Any] = []
    units: list[Any] = []
    with ThreadPoolExecutor(max_workers=1) as pool:  # systemctl and psutil side by side
        future = pool.submit(discover_units, command_prefix=prefix)
        try:
            from llmtop.sources.discovery import discover_servers

            servers = discover_servers()
        except Exception as exc:  # noqa: BLE001 - fall back to the "how to start one" screen
            print(f"llmtop: discovery failed: {exc}", file=sys.stderr)
        try:
            units = future.result()
        except Exception as exc:  # noqa: BLE001 - no systemd (containers, macOS): processes only
            print(f"llmtop: unit discovery failed: {exc}", file=sys.stderr)
    return merge_targets(servers, units)


def merge_targets(servers: list[Any], units: list[Any]) -> list[DiscoveredTarget]:
    """Pick-list entries: each unit once (with its MainPID), then the processes no unit runs.

    *servers* are `DiscoveredServer`s (pid, url, label), *units* `DiscoveredUnit`s (name, user,
    main_pid, url, label); a process whose pid is a unit's MainPID is shown as the unit.
    """
    out: list[DiscoveredTarget] = []
    unit_pids: set[int] = set()
    by_pid = {s.pid: s for s in servers}
    for u in units:
        pid = u.main_pid
        srv = by_pid.get(pid) if pid else None
        if pid:
            unit_pids.add(pid)
        url = (srv.url if srv is not None else None) or u.url or "http://127.0.0.1:8080"
        where = f"pid {pid}  {url}" if pid else url
        out.append(
            DiscoveredTarget(url, pid, f"unit {u.label}  {where}", unit=u.name, user=bool(u.user))
        )
    for srv in servers:
        if srv.pid not in unit_pids:
            key = getattr(getattr(srv, "spec", None), "api_key", None)
            out.append(DiscoveredTarget(srv.url, srv.pid, srv.label, api_key=key))
    return out


def run(args: argparse.Namespace) -> int:
    session = build_session(args)
    if isinstance(session, str):
        print(f"llmtop: {session}", file=sys.stderr)
        return 2
    if session.mode == "none" and len(session.candidates) > 1:
        # discovery found several: watch them all in one dashboard (server bar), no pick list
        try:
            session.open_several(session.candidates)
        except ImportError:
            print("llmtop: unit mode is not yet available in this build", file=sys.stderr)
            return 2
    problem = use_history(session, args)
    if problem is not None:
        print(f"llmtop: {problem}", file=sys.stderr)
        return 2
    return run_dashboard(session, log_lines=int(args.log_lines))


def use_history(session: Session, args: argparse.Namespace) -> str | None:
    """--db / --record on *session*: the DB the plots open with (--db, else the one recorded
    to, else the agent's default) and the recorder (`--record`); an error in words or None.

    The recorder is the agent's own sink (same schema, retention defaults and redaction), so
    a dashboard's recording replays and reports like an agent's."""
    from llmtop.sources.history_db import default_db_path

    record = getattr(args, "record", None)
    record_path = None if record is None else (record or str(default_db_path()))
    session.history_db = getattr(args, "db", None) or record_path or str(default_db_path())
    if record_path is None:
        return None
    if len(session.servers) > 1:
        # A history DB holds one server (its samples are keyed by time alone): recording the
        # focused one would file another server's samples under the first one's URL.
        return (
            "--record records one server, and this dashboard watches "
            f"{len(session.servers)}: record each with `llmtop agent --url URL --db PATH` "
            "(one database per server), or open the dashboard on one server"
        )
    from llmtop.agent.recorder import HistoryRecorder, RecorderOptions, SinkError

    try:
        recorder = HistoryRecorder.open(
            record_path,
            RecorderOptions(interval_s=session.refresh_s),
            log_store=session.log_store,
            secrets=tuple(k for k in (session.api_key,) if k),
            url=session.url,
        )
    except SinkError as exc:
        return f"--record: {exc}"
    session.recorders.append(recorder)
    return None


def run_dashboard(
    session: Session, *, log_lines: int = 10_000, demo_load_s: float | None = None
) -> int:
    """Run the TUI on *session*; whatever happens, a supervised child does not outlive it.
    *demo_load_s*: `llmtop demo`'s light periodic load (ui/demo_load.py)."""
    from llmtop.ui.app import LlmtopApp, create_app

    app: LlmtopApp
    if demo_load_s:
        from llmtop.ui.demo_load import DemoApp

        app = DemoApp(session, load_every_s=demo_load_s, log_lines=log_lines)
    else:
        app = create_app(session, log_lines=log_lines)
    # A terminal that vanishes (SSH drop) must end in the clean shutdown, not a hung writer.
    from llmtop.ui.run import use_surviving_driver

    use_surviving_driver(app)

    # SIGTERM/SIGHUP while the app runs are handled inside it (clean child stop, terminal
    # restored); these handlers cover the moments before the loop starts and after it ends.
    def _last_resort(signum: int, _frame: object) -> None:
        session.shutdown_sync()
        raise SystemExit(128 + signum)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):
            previous[sig] = signal.signal(sig, _last_resort)
    try:
        app.run()
    except KeyboardInterrupt:
        pass
    finally:
        session.shutdown_sync()
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, handler)
    return int(app.return_code or 0)
