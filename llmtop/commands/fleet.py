"""`llmtop fleet`: every box a Prometheus knows, one row per host and GPU, worst first.

  llmtop fleet --prometheus http://prometheus:9090              the Textual view (Enter: history)
  llmtop fleet --prometheus http://prometheus:9090 --json       the same table once, as JSON

It reads what `llmtop agent --listen` exports and what Prometheus scrapes from llama-server
(the jobs and `host` labels of deploy/prometheus/prometheus.yml). `--json` prints
`{"hosts": [...], "prometheus": URL, "stale": false, "problems": [...]}` and exits 0; with
Prometheus unreachable it says so on stderr and exits 2. A partial answer (a query failed or
Prometheus warned) still prints, with the reason in "problems".
"""

from __future__ import annotations

import argparse
import json
import sys

from llmtop.diagnosis.fleet_rank import AGENT_JOB, FleetReader
from llmtop.sources.prom_api import DEFAULT_TIMEOUT_S, PromClient

DEFAULT_REFRESH_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prometheus",
        metavar="URL",
        required=True,
        help="Prometheus base URL (e.g. http://127.0.0.1:9090; user:password@ for basic auth)",
    )
    parser.add_argument(
        "--refresh",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_REFRESH_S,
        help=f"seconds between refreshes of the view (default {DEFAULT_REFRESH_S:g})",
    )
    parser.add_argument("--json", action="store_true", help="print the table once as JSON")
    parser.add_argument(
        "--job",
        default=AGENT_JOB,
        help=f"Prometheus job name of the llmtop agents (default {AGENT_JOB!r})",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"per-request timeout (default {DEFAULT_TIMEOUT_S:g})",
    )


def run(args: argparse.Namespace) -> int:
    if args.refresh <= 0 or args.timeout <= 0:
        print("llmtop fleet: --refresh and --timeout must be positive", file=sys.stderr)
        return 2
    try:
        client = PromClient(args.prometheus, timeout_s=args.timeout)
    except ValueError as exc:
        print(f"llmtop fleet: --prometheus: {exc}", file=sys.stderr)
        return 2
    reader = FleetReader(client, job=args.job)
    try:
        if args.json:
            view = reader.refresh()
            if view.stale:
                print(f"llmtop fleet: {'; '.join(view.problems)}", file=sys.stderr)
                return 2
            json.dump(view.to_json_dict(), sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        from llmtop.ui.fleet_app import FleetApp
        from llmtop.ui.run import run_tui

        return run_tui(FleetApp(reader, refresh_s=args.refresh))
    finally:
        reader.close()
        client.close()
