"""The default command: open the dashboard.

  llmtop -- /path/to/llama-server -m model.gguf …   child mode (llmtop supervises the server)
  llmtop --url http://127.0.0.1:8080                attach mode (no restart action)
  llmtop --unit llama-server.service [--user]       unit mode (systemd)
  llmtop                                            discover local servers: one → attach,
                                                    several → pick list, none → how to start one
Quitting, Ctrl-C, SIGTERM or SIGHUP stop a supervised child cleanly; a unit is never touched.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from typing import Any

from llmtop.session import DiscoveredTarget, Session, make_alert_engine, make_gpu_monitor

API_KEY_ENVS = ("LLMTOP_API_KEY", "LLAMA_API_KEY")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="attach to a llama-server at this URL (http://host:port)")
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
    parser.add_argument("--unit", metavar="NAME", help="watch and control a systemd unit")
    parser.add_argument("--user", action="store_true", help="--unit is a user unit")


def resolve_api_key(args: argparse.Namespace) -> str | None:
    if getattr(args, "api_key", None):
        return str(args.api_key)
    for name in API_KEY_ENVS:
        if os.environ.get(name):
            return os.environ[name]
    return None


def build_session(args: argparse.Namespace, *, demo: bool = False) -> Session | str:
    """A Session from the command line, or an error message (in words) for the operator."""
    from llmtop.sources.logs import LogStore

    store = LogStore(maxlen=max(100, int(args.log_lines)))
    api_key = resolve_api_key(args)
    refresh = max(0.2, float(args.refresh))
    server_argv = list(getattr(args, "server_argv", []) or [])
    common: dict[str, Any] = {
        "api_key": api_key,
        "log_store": store,
        "refresh_s": refresh,
        # Built when the session starts, after the first frame (NVML / simulator build is slow).
        "gpu_factory": lambda: make_gpu_monitor(refresh, demo=demo),
        "alert_factory": make_alert_engine,
    }

    if server_argv:
        from llmtop.control.launch_spec import LaunchSpec
        from llmtop.control.supervisor import ChildSupervisor, RestartPolicy

        spec = LaunchSpec.from_argv(server_argv)
        policy = RestartPolicy(
            on_failure=not args.no_restart,
            restart_sec=float(args.restart_sec),
            max_restart_sec=float(args.max_restart_sec),
        )
        sup = ChildSupervisor(spec, store, policy)
        # The child's own key is what the server expects unless the operator gave another.
        if common["api_key"] is None and spec.api_key:
            common["api_key"] = spec.api_key
        return Session(mode="child", url=args.url or spec.url, controller=sup, **common)

    if args.unit:
        try:
            from llmtop.control.systemd_unit import UnitController
        except ImportError:
            return "unit mode (--unit) is not yet available in this build"
        ctl = UnitController(args.unit, user=bool(args.user), log_store=store)
        url = args.url
        spec = None
        with contextlib.suppress(Exception):
            spec = ctl.spec
        if url is None and spec is not None:
            url = spec.url
            if common["api_key"] is None and spec.api_key:
                common["api_key"] = spec.api_key
        session = Session(mode="unit", url=url or "http://127.0.0.1:8080", controller=ctl, **common)
        session.unit_monitor = getattr(ctl, "monitor", None)
        follower = _journal_follower(ctl, store)
        if follower is not None:
            session.log_followers.append(follower)
        return session

    if args.url:
        return Session(mode="attach", url=args.url, **common)

    session = Session(mode="none", url=None, **common)
    try:
        from llmtop.sources.discovery import discover_servers

        found = discover_servers()
    except Exception as exc:  # noqa: BLE001 - fall back to the "how to start one" screen
        print(f"llmtop: discovery failed: {exc}", file=sys.stderr)
        found = []
    if len(found) == 1:
        srv = found[0]
        session.mode = "attach"
        session.url = srv.url
        session.pid_hint = srv.pid
        if session.api_key is None and getattr(srv.spec, "api_key", None):
            session.api_key = srv.spec.api_key
    else:
        session.candidates = [DiscoveredTarget(s.url, s.pid, s.label) for s in found]
    return session


def _journal_follower(ctl: Any, store: Any) -> Any | None:
    """The unit's journal into the log store (issue 4)."""
    try:
        from llmtop.sources.journal import JournalFollower
    except ImportError:
        return None
    try:
        return JournalFollower(ctl.name, store, user=ctl.user)
    except Exception as exc:  # noqa: BLE001 - the dashboard still works without the journal
        store.note("journal", f"journal not available: {exc}", "warning")
        return None


def run(args: argparse.Namespace) -> int:
    session = build_session(args)
    if isinstance(session, str):
        print(f"llmtop: {session}", file=sys.stderr)
        return 2
    return run_dashboard(session, log_lines=int(args.log_lines))


def run_dashboard(session: Session, *, log_lines: int = 10_000) -> int:
    """Run the TUI on *session*; whatever happens, a supervised child does not outlive it."""
    from llmtop.ui.app import create_app

    app = create_app(session, log_lines=log_lines)

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
