"""llmtop benchmarks: `python -m benchmarks` prints one table (figures, targets, peers)."""
