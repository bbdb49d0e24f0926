"""`llmtop report`: what happened in a recorded window — throttling and what it cost, alerts,
restarts/crashes/OOMs with their log lines, VRAM peaks, latency per hour.

  llmtop report                         the last 24 h of the agent's default database
  llmtop report --since 7d --json
  llmtop report --db PATH --from "2026-12-02 03:00" --to "2026-12-02 04:00"

Exit 0 with a report; 2 with one line in words for a missing, corrupt, non-SQLite or newer-schema
database, a bad time, or a window outside the recorded range (the line says which range exists).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from llmtop.diagnosis.history_report import (
    GAP_INTERVALS,
    THROTTLE_REASONS,
    HistoryReport,
    HistoryWindow,
    ThrottledRun,
    build_report,
)
from llmtop.model.timespec import parse_duration, parse_time
from llmtop.model.units import fmt_bytes, fmt_duration, fmt_rate
from llmtop.sources.history_db import HistoryDB, HistoryError, default_db_path

DEFAULT_SINCE = "24h"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="PATH", help=f"history database ({default_db_path()})")
    parser.add_argument("--since", metavar="DURATION", help=f"the last DURATION ({DEFAULT_SINCE})")
    parser.add_argument("--from", dest="from_", metavar="TIME", help="window start (ISO, unix s)")
    parser.add_argument("--to", metavar="TIME", help="window end (default: now)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def resolve_window(args: argparse.Namespace, now: float) -> tuple[float, float]:
    """(start, end) from --since or --from/--to; ValueError in words."""
    if args.since and (args.from_ or args.to):
        raise ValueError("give --since or --from/--to, not both")
    if args.from_ or args.to:
        start = parse_time(args.from_, now=now) if args.from_ else 0.0
        end = parse_time(args.to, now=now) if args.to else now
    else:
        start, end = now - parse_duration(args.since or DEFAULT_SINCE), now
    if end <= start:
        raise ValueError("the window ends before it starts (--to is before --from)")
    return start, end


def _stamp(t: float | None) -> str:
    if t is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def load_report(db: HistoryDB, start: float, end: float) -> HistoryReport:
    """The report over [start, end]; ValueError naming the recorded range when nothing of the
    window was recorded."""
    rng = db.time_range()
    if rng is None:
        raise ValueError(f"{db.path}: no samples recorded yet")
    if end < rng.start or start > rng.end:
        raise ValueError(
            f"no samples between {_stamp(start)} and {_stamp(end)}: {db.path} holds "
            f"{_stamp(rng.start)} … {_stamp(rng.end)}"
        )
    return build_report(read_window(db, start, end))


def read_window(db: HistoryDB, start: float, end: float) -> HistoryWindow:
    """What the report needs of [start, end], read with a handful of range queries."""
    gap = GAP_INTERVALS * db.interval_s()
    runs = []
    for run in db.throttle_runs(start, end, THROTTLE_REASONS, gap):
        stop = run.last
        runs.append(ThrottledRun(run, [g for _, g in db.gen_rates(run.first, stop)]))
    return HistoryWindow(
        start=start,
        end=end,
        runs=runs,
        gen_total=db.gen_total(start, end),
        gpu_peaks=db.gpu_peaks(start, end),
        server_peak=db.server_vram_peak(start, end),
        alerts=db.alerts(start, end),
        events=db.events(start, end),
        probes=db.probes(start, end),
        gpu_names=db.gpu_names(),
    )


def _table(title: str, header: list[str], rows: list[list[str]], empty: str) -> list[str]:
    out = [title]
    if not rows:
        return [*out, f"  {empty}", ""]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    out.append("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        out.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return [*out, ""]


def _num(v: float | None, fmt: str = "{:.0f}") -> str:
    return "—" if v is None else fmt.format(v)


def format_text(report: HistoryReport, start: float, end: float) -> str:
    lines = [f"llmtop report  {_stamp(start)} … {_stamp(end)}", ""]
    lines += _table(
        "Throttled spans",
        ["GPU", "start", "end", "for", "reasons", "peak °C", "min SM", "gen during", "outside"],
        [
            [
                str(s.gpu_index),
                _stamp(s.start),
                _stamp(s.end) + (" (ongoing)" if s.ongoing else ""),
                fmt_duration(s.duration_s),
                ", ".join(s.reasons),
                _num(s.peak_temperature_c),
                _num(s.min_sm_clock_percent, "{:.0f} %"),
                fmt_rate(s.gen_tokens_per_s_during),
                fmt_rate(s.gen_tokens_per_s_outside),
            ]  # fmt: skip
            for s in report.throttle_spans
        ],
        "no throttling recorded",
    )
    lines += _table(
        "Alerts",
        ["severity", "kind", "from", "to", "for", "message"],
        [
            [
                a.severity,
                a.kind,
                _stamp(a.start),
                _stamp(a.end) + (" (open)" if a.ongoing else ""),
                fmt_duration(a.duration_s),
                a.message,
            ]  # fmt: skip
            for a in report.alerts
        ],
        "no alerts",
    )
    lines += _table(
        "Events",
        ["time", "kind", "severity", "message"],
        [[_stamp(e.time), e.kind, e.severity, e.message] for e in report.events],
        "no restarts, crashes or OOMs",
    )
    for e in report.events:
        if e.lines:
            lines.append(f"  log before {e.kind} at {_stamp(e.time)}:")
            lines += [f"    {ln}" for ln in e.lines[-10:]]
            lines.append("")
    peaks = report.vram_peaks
    lines += _table(
        "VRAM peaks",
        ["GPU", "name", "peak used", "at", "total", "server peak", "at"],
        [
            [
                str(g.gpu_index),
                g.name or "—",
                fmt_bytes(g.peak_memory_used_bytes),
                _stamp(g.peak_memory_used_at),
                fmt_bytes(g.memory_total_bytes),
                fmt_bytes(g.peak_server_memory_bytes),
                _stamp(g.peak_server_memory_at),
            ]  # fmt: skip
            for g in peaks.gpus
        ],
        "no GPU samples",
    )
    if peaks.server is not None:
        lines += [f"  server, all GPUs: {fmt_bytes(peaks.server.peak_bytes)} at "
                  f"{_stamp(peaks.server.at)}", ""]  # fmt: skip
    lines += _table(
        "Latency per hour (probes)",
        ["hour", "probes", "failed", "TTFT p50", "TTFT p95", "ITL p50", "ITL p95"],
        [
            [
                _stamp(h.start)[:-3],
                str(h.probes),
                str(h.failed),
                _num(h.ttft_ms_p50, "{:.1f} ms"),
                _num(h.ttft_ms_p95, "{:.1f} ms"),
                _num(h.itl_ms_p50, "{:.1f} ms"),
                _num(h.itl_ms_p95, "{:.1f} ms"),
            ]  # fmt: skip
            for h in report.latency
        ],
        "no probes recorded (the agent probes with --probe-every)",
    )
    return "\n".join(lines).rstrip() + "\n"


def run(args: argparse.Namespace) -> int:
    path = args.db or str(default_db_path())
    try:
        start, end = resolve_window(args, time.time())
    except ValueError as exc:
        print(f"llmtop report: {exc}", file=sys.stderr)
        return 2
    try:
        with HistoryDB.open(path) as db:
            report = load_report(db, start, end)
    except (HistoryError, ValueError) as exc:
        print(f"llmtop report: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(report.to_json_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_text(report, start, end))
    return 0
