"""Demo helpers: a tiny generated GGUF model and a locally built llama-server."""
