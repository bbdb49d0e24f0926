"""The exporter's metrics from Snapshots alone: names, units, labels, counters, secrets.

Every exposition is parsed back with prometheus_client's own text parser, so what is checked is
what Prometheus would read.
"""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from llmtop.agent.exporter import (
    REASONS,
    SERVER_STATES,
    MetricsExporter,
    TextRenderer,
    reason_mask,
)
from llmtop.agent.sinks import ProbeSink, SnapshotSink
from llmtop.snapshot import (
    Alert,
    GpuSample,
    ServerStatus,
    Snapshot,
    SupervisorStatus,
    UnitStatus,
)
from llmtop.sources.probe import ProbeResult

GiB = 1 << 30
KEY = "sk-exporter-secret-0123456789"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def gpu(index: int = 0, **over: object) -> GpuSample:
    base = GpuSample(
        index=index,
        name="NVIDIA H100 80GB HBM3",
        uuid=f"GPU-{index:08d}",
        pci_bus_id=f"00000000:{index + 0x18:02X}:00.0",
        memory_used_bytes=72 * GiB,
        memory_free_bytes=8 * GiB,
        memory_total_bytes=80 * GiB,
        utilization_percent=93.0,
        memory_utilization_percent=41.0,
        temperature_c=86.0,
        temp_slowdown_c=87.0,
        temp_shutdown_c=92.0,
        sm_clock_mhz=1410,
        sm_clock_max_mhz=1980,
        mem_clock_mhz=2619,
        power_w=512.5,
        power_limit_w=700.0,
        fan_percent=100.0,
        throttle_reasons=("HwSlowdown", "HwThermalSlowdown"),
        server_memory_bytes=60 * GiB,
    )
    return dataclasses.replace(base, **over)  # type: ignore[arg-type]


def snapshot(t: float = 1000.0, **over: object) -> Snapshot:
    base = Snapshot(
        time=t,
        server=ServerStatus(
            url="http://127.0.0.1:8080", health="ok", model_path="/models/tiny.gguf"
        ),
        gpus=(gpu(0), gpu(1, throttle_reasons=(), temperature_c=60.0)),
        alerts=(
            Alert("throttled", "critical", "HW thermal slowdown", t - 10),
            Alert("vram_high", "warning", "GPU0 90 %", t - 5),
            Alert("vram_high", "warning", "GPU1 90 %", t - 5),
        ),
    )
    return dataclasses.replace(base, **over)  # type: ignore[arg-type]


def scrape(exp: MetricsExporter) -> tuple[str, Samples, dict[str, str]]:
    """(text, samples by (name, labels), family name → type) as the HTTP server serves it."""
    text = TextRenderer(exp.registry()).render().decode()
    samples: Samples = {}
    types: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return text, samples, types


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    """The one sample of *metric* whose labels include *labels*."""
    hits = [v for (n, ls), v in samples.items() if n == metric and set(labels.items()) <= ls]
    assert len(hits) == 1, f"{metric}{labels}: {len(hits)} samples"
    return hits[0]


def names(samples: Samples) -> set[str]:
    return {n for n, _ in samples}


def test_is_a_sink_and_a_probe_sink() -> None:
    exp = MetricsExporter(mode="attach")
    assert isinstance(exp, SnapshotSink)
    assert isinstance(exp, ProbeSink)


def test_every_metric_of_the_issue_with_base_units_and_gpu_labels() -> None:
    exp = MetricsExporter(mode="attach", probes=True)
    exp.on_snapshot(snapshot())
    _, s, types = scrape(exp)
    for name in (
        "llmtop_gpu_temperature_celsius",
        "llmtop_gpu_temperature_slowdown_celsius",
        "llmtop_gpu_sm_clock_hertz",
        "llmtop_gpu_sm_clock_max_hertz",
        "llmtop_gpu_power_watts",
        "llmtop_gpu_power_limit_watts",
        "llmtop_gpu_memory_used_bytes",
        "llmtop_gpu_memory_total_bytes",
        "llmtop_gpu_utilization_ratio",
        "llmtop_gpu_clock_event_active",
        "llmtop_gpu_clock_event_seconds_total",
        "llmtop_server_gpu_memory_bytes",
        "llmtop_server_up",
        "llmtop_server_sleeping",
        "llmtop_server_state",
        "llmtop_server_restarts_total",
        "llmtop_alert_active",
        "llmtop_probe_ttft_seconds_bucket",
        "llmtop_probe_itl_seconds_bucket",
        "llmtop_info",
    ):
        assert name in names(s), name
    assert types["llmtop_gpu_clock_event_seconds"] == "counter"
    assert types["llmtop_server_restarts"] == "counter"
    assert types["llmtop_probe_ttft_seconds"] == "histogram"
    assert types["llmtop_info"] == "gauge"
    g0 = {"gpu": "0", "uuid": "GPU-00000000", "name": "NVIDIA H100 80GB HBM3"}
    assert value(s, "llmtop_gpu_temperature_celsius", **g0) == 86.0
    assert value(s, "llmtop_gpu_temperature_slowdown_celsius", **g0) == 87.0
    assert value(s, "llmtop_gpu_sm_clock_hertz", **g0) == 1410e6
    assert value(s, "llmtop_gpu_sm_clock_max_hertz", **g0) == 1980e6
    assert value(s, "llmtop_gpu_power_watts", **g0) == 512.5
    assert value(s, "llmtop_gpu_power_limit_watts", **g0) == 700.0
    assert value(s, "llmtop_gpu_memory_used_bytes", **g0) == 72 * GiB
    assert value(s, "llmtop_gpu_memory_total_bytes", **g0) == 80 * GiB
    assert value(s, "llmtop_gpu_utilization_ratio", **g0) == pytest.approx(0.93)
    assert value(s, "llmtop_server_gpu_memory_bytes", **g0) == 60 * GiB
    assert value(s, "llmtop_info", version="0.1.0", mode="attach", model="tiny.gguf") == 1.0
    assert value(s, "llmtop_server_up") == 1.0
    # every GPU sample carries exactly the three GPU labels
    for (n, labels), _ in s.items():
        if n.startswith("llmtop_gpu_") and n != "llmtop_gpu_clock_event_active":
            keys = {k for k, _ in labels} - {"reason"}
            assert keys == {"gpu", "uuid", "name"}, (n, labels)


def test_the_default_registry_stays_empty_of_llmtop() -> None:
    exp = MetricsExporter(mode="attach")
    exp.on_snapshot(snapshot())
    scrape(exp)
    assert "llmtop_" not in generate_latest(REGISTRY).decode()
    # and the private registry holds no python/process collectors (node_exporter's job)
    text, _, _ = scrape(exp)
    assert "process_cpu_seconds_total" not in text and "python_info" not in text


def test_clock_event_reasons_one_series_per_nvml_name() -> None:
    exp = MetricsExporter(mode="attach")
    exp.on_snapshot(snapshot())
    _, s, _ = scrape(exp)
    for reason in REASONS:
        on = 1.0 if reason in ("HwSlowdown", "HwThermalSlowdown") else 0.0
        assert value(s, "llmtop_gpu_clock_event_active", gpu="0", reason=reason) == on
        assert value(s, "llmtop_gpu_clock_event_active", gpu="1", reason=reason) == 0.0


def test_clock_event_seconds_accumulate_between_snapshots() -> None:
    exp = MetricsExporter(mode="attach")
    exp.on_snapshot(snapshot(1000.0))
    exp.on_snapshot(snapshot(1001.0))
    exp.on_snapshot(snapshot(1003.5, gpus=(gpu(0, throttle_reasons=()), gpu(1))))
    exp.on_snapshot(snapshot(1004.5))
    _, s, _ = scrape(exp)
    # GPU0 was throttled at 1000 and 1001 (3.5 s until the tick that saw it end); GPU1 from 1003.5
    assert (
        value(s, "llmtop_gpu_clock_event_seconds_total", gpu="0", reason="HwThermalSlowdown") == 3.5
    )
    assert (
        value(s, "llmtop_gpu_clock_event_seconds_total", gpu="1", reason="HwThermalSlowdown") == 1.0
    )
    assert value(s, "llmtop_gpu_clock_event_seconds_total", gpu="0", reason="GpuIdle") == 0.0


def test_a_long_gap_is_not_counted_as_throttled_time() -> None:
    exp = MetricsExporter(mode="attach")
    exp.on_snapshot(snapshot(1000.0))
    exp.on_snapshot(snapshot(1000.0 + 3600))  # the agent was suspended for an hour
    _, s, _ = scrape(exp)
    assert value(s, "llmtop_gpu_clock_event_seconds_total", gpu="0", reason="HwSlowdown") == 0.0


def test_server_state_up_and_sleeping() -> None:
    exp = MetricsExporter(mode="attach")

    def state_of(snap: Snapshot) -> tuple[str, float, float]:
        exp.on_snapshot(snap)
        _, s, _ = scrape(exp)
        on = [st for st in SERVER_STATES if value(s, "llmtop_server_state", state=st) == 1.0]
        assert len(on) == 1, on
        return on[0], value(s, "llmtop_server_up"), value(s, "llmtop_server_sleeping")

    ok = snapshot()
    assert state_of(ok) == ("ready", 1.0, 0.0)
    asleep = dataclasses.replace(ok, server=dataclasses.replace(ok.server, health="sleeping"))
    assert state_of(asleep) == ("sleeping", 1.0, 1.0)
    down = dataclasses.replace(ok, server=dataclasses.replace(ok.server, health="unreachable"))
    assert state_of(down) == ("down", 0.0, 0.0)
    sup = SupervisorStatus(mode="child", state="restarting", restarts=3)
    assert state_of(dataclasses.replace(down, supervisor=sup)) == ("restarting", 0.0, 0.0)
    sup_ready = SupervisorStatus(mode="child", state="ready", restarts=3)
    assert state_of(dataclasses.replace(asleep, supervisor=sup_ready))[0] == "sleeping"


def test_restarts_from_supervisor_unit_or_seen() -> None:
    exp = MetricsExporter(mode="child")
    sup = SupervisorStatus(mode="child", state="ready", restarts=4)
    exp.on_snapshot(snapshot(supervisor=sup))
    assert value(scrape(exp)[1], "llmtop_server_restarts_total") == 4.0

    exp = MetricsExporter(mode="unit")
    exp.on_snapshot(snapshot(unit=UnitStatus(name="llm.service", n_restarts=7)))
    assert value(scrape(exp)[1], "llmtop_server_restarts_total") == 7.0

    exp = MetricsExporter(mode="attach")
    for t, start in ((1.0, 100.0), (2.0, 100.0), (3.0, 250.0), (4.0, 250.0), (5.0, 400.0)):
        snap = snapshot(t)
        exp.on_snapshot(
            dataclasses.replace(
                snap, server=dataclasses.replace(snap.server, process_start_time=start)
            )
        )
    assert value(scrape(exp)[1], "llmtop_server_restarts_total") == 2.0


def test_alerts_counted_by_kind_and_severity() -> None:
    exp = MetricsExporter(mode="attach")
    exp.on_snapshot(snapshot())
    _, s, _ = scrape(exp)
    assert value(s, "llmtop_alert_active", kind="vram_high", severity="warning") == 2.0
    assert value(s, "llmtop_alert_active", kind="throttled", severity="critical") == 1.0
    # the message (free text) is never a label
    assert all("message" not in dict(ls) for (n, ls) in s if n == "llmtop_alert_active")


def probe(ttft_ms: float | None, itl_ms: float | None, **over: object) -> ProbeResult:
    base = ProbeResult(
        started_at=1.0, prompt="p", n_predict=8, tokens=8, ttft_ms=ttft_ms, itl_ms_p50=itl_ms,
        itl_ms_p95=itl_ms, gen_tokens_per_s=100.0, prompt_tokens_per_s=None, server_timings=None,
        text="x", itl_ms_mean=itl_ms,
    )  # fmt: skip
    return dataclasses.replace(base, **over)  # type: ignore[arg-type]


def test_probe_histograms_only_when_the_agent_probes() -> None:
    exp = MetricsExporter(mode="attach")
    exp.on_snapshot(snapshot())
    assert "llmtop_probe_ttft_seconds_bucket" not in names(scrape(exp)[1])

    exp = MetricsExporter(mode="attach", probes=True)
    exp.on_snapshot(snapshot())
    exp.on_probe(probe(80.0, 4.0))
    exp.on_probe(probe(300.0, 30.0))
    exp.on_probe(probe(None, None, error="connection refused"))
    exp.on_probe(probe(9000.0, 4.0, includes_model_load=True))  # a model load, not latency
    _, s, _ = scrape(exp)
    assert value(s, "llmtop_probe_ttft_seconds_count") == 2.0
    assert value(s, "llmtop_probe_ttft_seconds_sum") == pytest.approx(0.38)
    assert value(s, "llmtop_probe_ttft_seconds_bucket", le="0.1") == 1.0
    assert value(s, "llmtop_probe_ttft_seconds_bucket", le="0.5") == 2.0
    assert value(s, "llmtop_probe_ttft_seconds_bucket", le="+Inf") == 2.0
    assert value(s, "llmtop_probe_itl_seconds_bucket", le="0.005") == 1.0
    assert value(s, "llmtop_probe_itl_seconds_bucket", le="0.05") == 2.0
    assert value(s, "llmtop_probe_failures_total") == 1.0


def test_dcgm_names_and_units() -> None:
    exp = MetricsExporter(mode="attach", dcgm_names=True, hostname="box-a")
    exp.on_snapshot(snapshot())
    _, s, _ = scrape(exp)
    g0 = {"gpu": "0", "UUID": "GPU-00000000", "modelName": "NVIDIA H100 80GB HBM3",
          "device": "nvidia0", "Hostname": "box-a"}  # fmt: skip
    assert value(s, "DCGM_FI_DEV_GPU_TEMP", **g0) == 86.0
    assert value(s, "DCGM_FI_DEV_SM_CLOCK", **g0) == 1410.0  # MHz, as dcgm-exporter
    assert value(s, "DCGM_FI_DEV_POWER_USAGE", **g0) == 512.5
    assert value(s, "DCGM_FI_DEV_FB_USED", **g0) == 72 * 1024  # MiB
    assert value(s, "DCGM_FI_DEV_FB_FREE", **g0) == 8 * 1024
    assert value(s, "DCGM_FI_DEV_GPU_UTIL", **g0) == 93.0
    assert value(s, "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", **g0) == 0x8 | 0x40
    assert value(s, "DCGM_FI_DEV_CLOCKS_EVENT_REASONS", **g0) == 0x48
    # without the flag: no DCGM names
    plain = MetricsExporter(mode="attach")
    plain.on_snapshot(snapshot())
    assert not any(n.startswith("DCGM_") for n in names(scrape(plain)[1]))


def test_reason_mask() -> None:
    assert reason_mask(()) == 0
    assert reason_mask(("GpuIdle", "SwPowerCap", "0x200")) == 0x1 | 0x4 | 0x200


def test_a_lost_gpu_is_marked_and_its_values_left_out() -> None:
    exp = MetricsExporter(mode="attach")
    exp.on_snapshot(snapshot(gpus=(gpu(0), GpuSample(index=1, uuid="GPU-1", lost=True))))
    _, s, _ = scrape(exp)
    assert value(s, "llmtop_gpu_lost", gpu="1") == 1.0
    assert value(s, "llmtop_gpu_lost", gpu="0") == 0.0
    assert not [1 for (n, ls) in s if n == "llmtop_gpu_temperature_celsius" and ("gpu", "1") in ls]


def test_before_the_first_snapshot_only_info() -> None:
    exp = MetricsExporter(mode="attach")
    _, s, _ = scrape(exp)
    assert names(s) == {"llmtop_info"}


def test_no_api_key_in_any_label_or_value() -> None:
    """The key can reach a snapshot only by accident (a model path, a unit's warning, an alert
    kind): the exporter replaces it wherever it sits in a label."""
    exp = MetricsExporter(mode="attach", secrets=(KEY,), dcgm_names=True, hostname=f"h-{KEY}")
    snap = snapshot(
        server=ServerStatus(url="http://127.0.0.1:8080", health="ok", model_path=f"/m/{KEY}.gguf"),
        gpus=(gpu(0, name=f"card {KEY}"),),
        alerts=(Alert(f"unit_check_{KEY}", "warning", f"--api-key {KEY}", 1.0),),
    )
    exp.on_snapshot(snap)
    exp.on_probe(probe(50.0, 5.0, prompt=KEY, text=KEY, error=None))
    text, s, _ = scrape(exp)
    assert KEY not in text
    assert KEY[:12] not in text
    assert value(s, "llmtop_info", model="***.gguf") == 1.0


def parsed(text: str) -> tuple[Samples, dict[str, tuple[str, str]]]:
    samples: Samples = {}
    fams: dict[str, tuple[str, str]] = {}
    for fam in text_string_to_metric_families(text):
        fams[fam.name] = (fam.type, fam.documentation)
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, fams


def test_the_fast_renderer_says_what_prometheus_client_says() -> None:
    """TextRenderer (served) and prometheus_client's generate_latest parse to the same samples,
    types and help — with awkward label values (quotes, backslashes, newlines) too."""
    exp = MetricsExporter(mode="attach", probes=True, dcgm_names=True, hostname="h")
    odd = 'card "x"\\y\nz'
    exp.on_snapshot(snapshot(1000.0))
    exp.on_snapshot(snapshot(1001.0, gpus=(gpu(0, name=odd), gpu(1, uuid=None))))
    exp.on_probe(probe(80.0, 4.0))
    renderer = TextRenderer(exp.registry())
    ours = renderer.render().decode()
    theirs = generate_latest(exp.registry()).decode()
    assert parsed(ours) == parsed(theirs)
    assert renderer.render().decode() == ours  # the label cache changes nothing
    assert value(parsed(ours)[0], "llmtop_gpu_temperature_celsius", name=odd) == 86.0
