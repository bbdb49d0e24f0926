"""Everything llmtop does to a llama-server, without a screen: one route to every action.

`actions.Operations` bundles them for one controller: `server` (restart, stop, start, revert),
`apply` (tuning input → apply with rollback) and `sweep`; `ProbeRun` / `PeriodicProbe` fire
probes. Each reports progress as typed events (`llmtop.operations.events`). The dashboard's
keys and panels, `llmtop tune` and `llmtop unit revert` call these and nothing else.

Importing this package imports nothing else: `events` must stay cheap for the first frame.
"""
