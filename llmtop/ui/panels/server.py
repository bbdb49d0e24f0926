"""Server panel: health in words, supervisor state, model, context, slots, throughput, unit."""

from __future__ import annotations

from rich.markup import escape
from rich.text import Text

from llmtop.model.units import DASH, fmt_duration, fmt_rate, model_name
from llmtop.snapshot import Snapshot, SupervisorStatus, UnitStatus
from llmtop.ui.charts import sparkline
from llmtop.ui.format import keep_gaps
from llmtop.ui.panels.base import SnapshotPanel
from llmtop.ui.panels.models import model_table_lines
from llmtop.ui.series import DashboardHistory

HEALTH_STYLE = {
    "ok": "bold green",
    "loading": "bold yellow",
    "unreachable": "bold red",
    "unauthorized": "bold red",
    "error": "bold red",
    "sleeping": "bold blue",
}
STATE_STYLE = {
    "ready": "green",
    "starting": "yellow",
    "loading": "yellow",
    "restarting": "yellow",
    "stopping": "yellow",
    "exited": "red",
    "failed": "bold red",
    "stopped": "dim",
}


def health_words(snapshot: Snapshot) -> str:
    s = snapshot.server
    style = HEALTH_STYLE.get(s.health, "bold")
    return f"[{style}]● {s.health}[/]"


def health_detail(snapshot: Snapshot) -> str | None:
    """Why health is what it is, in words ("connection refused", "Loading model")."""
    s = snapshot.server
    if s.detail and s.detail.lower() != s.health:
        return s.detail
    return None


def supervisor_words(sup: SupervisorStatus | None) -> str:
    if sup is None or sup.mode == "attach":
        return "[dim]attached — not supervised[/]"
    style = STATE_STYLE.get(sup.state, "bold")
    words = f"[{style}]{escape(sup.state)}[/] [dim]({sup.mode})[/]"
    if sup.next_restart_in_s is not None and sup.state in ("restarting", "exited"):
        words += f" restart in {sup.next_restart_in_s:.0f} s"
    return words


def unit_words(unit: UnitStatus) -> str:
    state = f"{unit.active_state or DASH} ({unit.sub_state or DASH})"
    style = "green" if unit.active_state == "active" else "red"
    extra = f" pid {unit.main_pid}" if unit.main_pid else ""
    if unit.n_restarts is not None:
        extra += f" restarts {unit.n_restarts}"
    user = " --user" if unit.user else ""
    return f"unit     {escape(unit.name)}{user} [{style}]{escape(state)}[/]{extra}"


class ServerPanel(SnapshotPanel):
    """What the server is doing, in words an operator reads at a glance."""

    def __init__(self, series: DashboardHistory, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.series = series
        self.border_title = "Server"
        self.selected_model: str | None = None  # router mode: the model L / U act on

    def show(self, snapshot: Snapshot) -> None:
        self.remember(snapshot)
        s = snapshot.server
        sup = snapshot.supervisor
        lines = [f"health   {health_words(snapshot)}"]
        detail = health_detail(snapshot)
        if detail:
            style = {"ok": "dim", "sleeping": "blue"}.get(s.health, "yellow")
            lines.append(f"         [{style}]{escape(detail)}[/]")
        if s.router:  # one llama-server child per model: the model table (panels/models.py)
            lines.append(f"state    {supervisor_words(sup)}")
            lines += model_table_lines(snapshot, self.selected_model)
            lines += [f"[yellow]! {escape(p)}[/]" for p in s.problems[:3]]
            self.set_text("\n".join(lines))
            return
        lines += [
            f"state    {supervisor_words(sup)}",
            f"model    [bold]{escape(model_name(s.model_path, s.model_alias))}[/]",
        ]
        busy = sum(1 for sl in s.slots if sl.is_processing)
        ctx = DASH if s.n_ctx is None else str(s.n_ctx)
        slots = DASH if s.total_slots is None else str(s.total_slots)
        lines.append(f"context  {ctx}   slots {slots} ({busy} busy)")
        for sl in s.slots[:4]:
            phase = "[yellow]processing[/]" if sl.is_processing else "[dim]idle[/]"
            used = sl.context_used
            use = f"{used}/{sl.n_ctx or DASH}" if used is not None else DASH
            lines.append(f"  slot {sl.id}  {phase}  ctx {use}")
        if len(s.slots) > 4:
            lines.append(f"  … {len(s.slots) - 4} more slots")
        width = max(8, (self.content_size.width or 36) - 9)
        spark = sparkline(self.series.gen_tps, width, zero_blank=True)
        lines.append(
            f"tok/s    gen [bold]{fmt_rate(s.gen_tokens_per_s, '')}[/]"
            f" · prompt {fmt_rate(s.prompt_tokens_per_s, '')}"
        )
        lines.append(f"gen      [cyan]{spark}[/]")
        if s.build_info:
            lines.append(f"build    [dim]{escape(s.build_info)}[/]")
        if sup is not None and sup.mode != "attach":
            last = f"  last: {escape(sup.last_exit)}" if sup.last_exit else ""
            lines.append(f"restarts {sup.restarts}{last}")
        if sup is not None and sup.argv:
            # Already redacted by the supervisor (api keys → ***); the binary by its name only.
            shown = [sup.argv[0].rsplit("/", 1)[-1], *sup.argv[1:]]
            lines.append(f"argv     [dim]{escape(' '.join(shown))}[/]")
        if snapshot.unit is not None:
            lines.append(unit_words(snapshot.unit))
            for warning in snapshot.unit.warnings[:2]:
                lines.append(f"[yellow]! {escape(warning)}[/]")
        for problem in s.problems[:3]:
            lines.append(f"[yellow]! {escape(problem)}[/]")
        self.set_text("\n".join(lines))


def uptime_words(seconds: float | None) -> str:
    return fmt_duration(seconds)


class FailureBox(SnapshotPanel):
    """Full width, wrapped: why the supervised server failed (its own last error lines)."""

    LINE_CACHE = False

    def show(self, snapshot: Snapshot) -> None:
        sup = snapshot.supervisor
        failed = sup is not None and sup.state in ("failed", "exited", "restarting")
        failed = failed and bool(sup.last_error_lines or sup.last_exit)  # type: ignore[union-attr]
        if self.display != failed:
            self.display = failed
        if not failed or sup is None:
            self.set_text("")
            return
        head = f"[bold red]server {escape(sup.state)}[/]"
        if sup.last_exit:
            head += f" — {escape(sup.last_exit)}"
        if sup.state == "failed":
            head += " — not restarting (crash loop or immediate failure); S starts it again"
        lines = [head] + [f"[red]{escape(err)}[/]" for err in sup.last_error_lines[-4:]]
        markup = "\n".join(lines)
        if markup != self._last:
            relayout = self._last is None or markup.count("\n") != self._last.count("\n")
            self._last = markup
            self.update(keep_gaps(Text.from_markup(markup)), layout=relayout)
