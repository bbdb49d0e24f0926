"""One panel per module; each has `show(snapshot)` (cheap; redraws only what changed)."""
