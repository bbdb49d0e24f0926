"""llmtop: a terminal dashboard for a local llama.cpp llama-server."""

__version__ = "0.1.0"
