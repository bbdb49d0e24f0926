"""Pure functions over samples: thermal verdicts, throttle events and alerts (issue 3).

- thresholds.py  `Thresholds`: the alert limits (config file and flags override them)
- thermal.py     `ThermalPoint`, `thermal_report()`, `ThermalTracker` (events, window verdict)
- alerts.py      `AlertEngine.evaluate(snapshot) -> tuple[Alert, ...]` with hysteresis, and
                 `AlertEngine.thermal(snapshot) -> ThermalReport | None`
"""
