"""Pure domain types shared by every layer: launch spec, VRAM plan, GGUF facts, units,
redaction. Imports nothing else of llmtop."""
