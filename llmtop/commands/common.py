"""Pieces the commands share."""

from __future__ import annotations

import argparse
import os

API_KEY_ENVS = ("LLMTOP_API_KEY", "LLAMA_API_KEY")


def resolve_api_key(args: argparse.Namespace) -> str | None:
    """--api-key, else $LLMTOP_API_KEY, else $LLAMA_API_KEY (never printed by any command)."""
    if getattr(args, "api_key", None):
        return str(args.api_key)
    for name in API_KEY_ENVS:
        if os.environ.get(name):
            return os.environ[name]
    return None
