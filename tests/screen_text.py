"""The visible screen as plain text, for tests."""

from __future__ import annotations

from textual.app import App

from llmtop.ui.textual_private import screen_strips


def screen_text(app: App[object]) -> str:
    """Every row of the current screen, as the terminal would show it (no styles)."""
    strips = screen_strips(app.screen)
    return "\n".join("".join(seg.text for seg in strip).rstrip() for strip in strips)
