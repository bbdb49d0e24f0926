#!/usr/bin/env python3
"""Write SVG screenshots of the running dashboard to screenshots/.

Default: the real app on deterministic sample data (the same as the SVG snapshot tests), so the
images only change when the UI does. `--live URL` instead attaches to a running llama-server
(e.g. the one `llmtop demo` starts) and captures after a few refreshes and one probe.

    .venv/bin/python scripts/make_screenshots.py [--live http://127.0.0.1:8080] [--out screenshots]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (file name, terminal size, keys pressed before the capture)
SHOTS: tuple[tuple[str, tuple[int, int], tuple[str, ...]], ...] = (
    ("main-80x24.svg", (80, 24), ()),
    ("main-160x48.svg", (160, 48), ()),
    ("logs-120x36.svg", (120, 36), ("2",)),
    ("prompt-latency-120x36.svg", (120, 36), ("3",)),
    ("gpu-thermal-120x36.svg", (120, 36), ("4",)),
    ("help-80x24.svg", (80, 24), ("question_mark",)),
)


async def capture_sample(out: Path) -> list[Path]:
    from tests.sample import load_sample, sample_app

    written = []
    for name, size, keys in SHOTS:
        app = sample_app()
        async with app.run_test(size=size) as pilot:
            await load_sample(app, pilot)
            for key in keys:
                await pilot.press(key)
            await pilot.pause(0.3)
            path = out / name
            path.write_text(app.export_screenshot(title=f"llmtop — {name[:-4]}"))
            written.append(path)
    return written


async def capture_live(url: str, out: Path) -> list[Path]:
    from llmtop.session import Session
    from llmtop.ui.app import create_app

    written = []
    for name, size, keys in SHOTS:
        session = Session(mode="attach", url=url, refresh_s=0.5)
        app = create_app(session)
        async with app.run_test(size=size) as pilot:
            deadline = time.monotonic() + 30
            while app.snapshots_seen < 4 and time.monotonic() < deadline:
                await pilot.pause(0.1)
            if keys == ("3",):
                await pilot.press("escape", "p")
                while not app.series.probes and time.monotonic() < deadline:
                    await pilot.pause(0.1)
            for key in keys:
                await pilot.press(key)
            await pilot.pause(0.5)
            path = out / f"live-{name}"
            path.write_text(app.export_screenshot(title=f"llmtop — {name[:-4]}"))
            written.append(path)
            await session.close()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    parser.add_argument("--live", metavar="URL", help="attach to this llama-server instead")
    args = parser.parse_args()
    os.environ.setdefault("TZ", "UTC")
    time.tzset()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.live:
        written = asyncio.run(capture_live(args.live, args.out))
    else:
        written = asyncio.run(capture_sample(args.out))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
