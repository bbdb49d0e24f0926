"""The Textual dashboard: renders snapshots and posts intents (no httpx/psutil/pynvml here)."""
