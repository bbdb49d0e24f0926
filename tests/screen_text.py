"""The visible screen as plain text (tests, the screenshot script, and debugging over SSH)."""

from __future__ import annotations

from textual.app import App


def screen_text(app: App[object]) -> str:
    """Every row of the current screen, as the terminal would show it (no styles)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip).rstrip() for strip in strips)
