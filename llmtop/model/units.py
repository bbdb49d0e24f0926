"""Numbers, sizes and times as an operator reads them: units always shown, "—" for not
available. Shared by the dashboard, the headless commands and the reports."""

from __future__ import annotations

import time

DASH = "—"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return DASH
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def fmt_pct(p: float | None) -> str:
    return DASH if p is None else f"{p:.0f} %"


def fmt_rate(v: float | None, unit: str = "tok/s") -> str:
    if v is None:
        return DASH
    text = f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    return f"{text} {unit}" if unit else text


def fmt_ms(v: float | None) -> str:
    if v is None:
        return DASH
    if v >= 100:
        return f"{v:.0f} ms"
    return f"{v:.1f} ms"


def fmt_duration(s: float | None) -> str:
    if s is None:
        return DASH
    s = int(s)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d{h:02d}h"
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def fmt_clock(t: float | None) -> str:
    """Local wall-clock time HH:MM:SS of a unix timestamp."""
    if t is None:
        return DASH
    return time.strftime("%H:%M:%S", time.localtime(t))


def short_model(path: str | None) -> str:
    if not path:
        return DASH
    return path.rsplit("/", 1)[-1]


def model_name(model_path: str | None, model_alias: str | None) -> str:
    """The alias when it is a name, else the file name (llama-server's alias defaults to the path)."""
    if model_alias and "/" not in model_alias:
        return model_alias
    return short_model(model_path or model_alias)
