"""Prompt panel: edit a prompt, n_predict and temperature; fire it; the reply streams in live.

The panel validates its fields (inline errors, nothing sent on error) and posts `Fire` / `Cancel`
intents; the app runs the probe and calls `stream()` / `finished()` back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Label, Static, TextArea

from llmtop.model.units import fmt_ms, fmt_rate

DEFAULT_PROMPT = "Write one sentence about GPUs."

if TYPE_CHECKING:  # pragma: no cover - typing only: sources.probe imports httpx (~0.1 s)
    from textual.timer import Timer

    from llmtop.sources.probe import ProbeRequest, ProbeResult

    Validator = Callable[[str, str, str], tuple[ProbeRequest | None, list[str]]]


def printable(text: str) -> str:
    """The reply as the terminal may show it: control characters become U+FFFD."""
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "\ufffd" for ch in text)


class PromptPanel(Vertical):
    class Fire(Message):
        """A validated probe request from the panel."""

        def __init__(self, request: ProbeRequest) -> None:
            super().__init__()
            self.request = request

    class Cancel(Message):
        """Cancel the running probe."""

    def __init__(self, validator: Validator, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.validator = validator
        self.border_title = "Prompt"
        self.running = False
        self._reply: list[str] = []
        self._dirty = False
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield TextArea(DEFAULT_PROMPT, id="prompt-text", soft_wrap=True, show_line_numbers=False)
        with Horizontal(id="prompt-fields"):
            yield Label("n_predict")
            yield Input("32", id="n-predict", restrict=None)
            yield Label("temp")
            yield Input("0", id="temperature")
        with Horizontal(id="prompt-buttons"):
            yield Button("Send (p)", id="probe-send", variant="primary")
            yield Button("Cancel (esc)", id="probe-cancel", disabled=True)
        yield Static(id="prompt-error")
        with VerticalScroll(id="reply-box"):
            yield Static(id="reply")

    # ---------------------------------------------------------------- intents
    def fire(self) -> bool:
        """Validate and post `Fire`; on error show it inline and send nothing."""
        if self.running:
            self.set_error("a probe is already running (Cancel first)")
            return False
        prompt = self.query_one("#prompt-text", TextArea).text
        n_predict = self.query_one("#n-predict", Input).value
        temperature = self.query_one("#temperature", Input).value
        request, errors = self.validator(prompt, n_predict, temperature)
        if errors or request is None:
            self.set_error("; ".join(errors) or "invalid input")
            return False
        self.set_error("")
        self.post_message(self.Fire(request))
        return True

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "probe-send":
            self.fire()
        elif event.button.id == "probe-cancel":
            self.post_message(self.Cancel())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id in ("n-predict", "temperature"):
            event.stop()
            self.fire()

    # ---------------------------------------------------------------- feedback
    def set_error(self, message: str) -> None:
        err = self.query_one("#prompt-error", Static)
        err.update(Text.from_markup(f"[bold red]{escape(message)}[/]") if message else "")

    @property
    def error_text(self) -> str:
        return str(self.query_one("#prompt-error", Static).render())

    def started(self) -> None:
        self.running = True
        self._reply = []
        self._dirty = True
        self._timer = self.set_interval(0.05, self._flush_reply)
        self.query_one("#probe-send", Button).disabled = True
        self.query_one("#probe-cancel", Button).disabled = False

    def stream(self, chunk: str) -> None:
        """Called for every streamed chunk; the screen is refreshed at most every 50 ms."""
        self._reply.append(chunk)
        self._dirty = True

    def finished(self, result: ProbeResult | None, error: str | None = None) -> None:
        self.running = False
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.query_one("#probe-send", Button).disabled = False
        self.query_one("#probe-cancel", Button).disabled = True
        if result is not None and result.error:
            error = result.error
        if error:
            self.set_error(error)
        elif result is not None:
            tail = " (cancelled)" if result.cancelled else ""
            self.set_error("")
            self.query_one("#prompt-error", Static).update(
                Text.from_markup(
                    f"[green]{result.tokens} tokens{tail}[/]  TTFT {fmt_ms(result.ttft_ms)}"
                    + (" [blue](incl. model load)[/]" if result.includes_model_load else "")
                    + f"  ITL p50 {fmt_ms(result.itl_ms_p50)}  gen {fmt_rate(result.gen_tokens_per_s)}"
                )
            )
            if result.text and not self._reply:
                self._reply = [result.text]
        self._dirty = True
        self._flush_reply()

    @property
    def reply_text(self) -> str:
        return "".join(self._reply)

    def _flush_reply(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self.query_one("#reply", Static).update(Text(printable("".join(self._reply))))
        if self.running:
            self.query_one("#reply-box", VerticalScroll).scroll_end(animate=False)
