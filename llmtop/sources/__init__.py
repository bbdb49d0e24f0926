"""Readers of the world: llama-server HTTP, host/process metrics, logs, journal, NVML, GGUF.

Nothing in this package imports Textual; everything returns plain dataclasses.
"""
