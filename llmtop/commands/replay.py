"""`llmtop replay`: the dashboard over a recorded history, with a time cursor.

  llmtop replay                                   the agent's default database, from its start
  llmtop replay --db PATH --from "2026-12-02 03:00" --to "2026-12-02 04:00"

Without --to, a database the agent is still writing is followed: with the cursor at the end,
new samples are shown as they are recorded. Exit 2 with one line in words for a missing,
corrupt, non-SQLite or newer-schema database, a bad time, or a window outside the recorded
range (the line says which range exists).
"""

from __future__ import annotations

import argparse
import sys
import time

from llmtop.model.timespec import parse_time
from llmtop.session import Session
from llmtop.sources.history_db import HistoryError, default_db_path
from llmtop.sources.replay import ReplaySource


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="PATH", help=f"history database ({default_db_path()})")
    parser.add_argument(
        "--from", dest="from_", metavar="TIME", help="start (ISO, unix s, '2h ago'; default: first)"
    )
    parser.add_argument(
        "--to", metavar="TIME", help="end (default: the live end, followed while recorded)"
    )


def open_source(args: argparse.Namespace, now: float) -> ReplaySource:
    """The replay source for the command line; HistoryError/ValueError in words."""
    path = args.db or str(default_db_path())
    start = parse_time(args.from_, now=now) if args.from_ else None
    end = parse_time(args.to, now=now) if args.to else None
    return ReplaySource.open(path, start, end)


def replay_session(source: ReplaySource) -> Session:
    """A session with nothing to control or poll: the recording's URL, for the title only."""
    url = source.db.meta().get("url") or None
    return Session(mode="replay", url=url, refresh_s=source.interval_s)


def run(args: argparse.Namespace) -> int:
    try:
        source = open_source(args, time.time())
    except (HistoryError, ValueError) as exc:
        print(f"llmtop replay: {exc}", file=sys.stderr)
        return 2
    try:
        from llmtop.ui.replay_app import create_replay_app
        from llmtop.ui.run import run_tui

        return run_tui(create_replay_app(replay_session(source), source))
    finally:
        source.close()
