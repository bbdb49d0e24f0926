"""The one place that decides what is a secret and how it is hidden.

Every text llmtop shows or stores — argv in every flag spelling, environments (the process's,
a unit's `Environment=`), journal and child log lines, drop-ins, snapshots, probe errors — goes
through these functions. One rule set, so a key hidden in one place can never show in another.

Two kinds of knowledge:
- *Shapes*: `--api-key X`, `--api-key=X`, `--hf-token`/`-hft`, `NAME=VALUE` where NAME is a secret
  variable (`LLAMA_API_KEY`, `LLAMA_ARG_API_KEY`, anything with KEY/TOKEN/SECRET/PASSWORD in its
  name), `Authorization: Bearer X`. Caught wherever they appear, even for a key llmtop never saw.
- *Values*: the keys llmtop knows (from the server's argv or environment, the `--api-key` flag);
  a `Redactor` replaces them anywhere in a text (a server echoing its own command line, a
  journal line from systemd). Values shorter than `MIN_SECRET_LEN` are hidden only by shape: a
  one-letter "key" would otherwise blank every such letter in the logs.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping

REDACTED = "***"
MIN_SECRET_LEN = 4

# Flags whose value is a secret (llama-server's; `--api_key` is accepted for `--api-key`).
SECRET_FLAGS = frozenset({"--api-key", "--hf-token", "-hft"})
# Variables whose value is a secret, by name; plus any name containing one of _SECRET_WORDS.
SECRET_ENV = frozenset(
    {"LLAMA_API_KEY", "LLAMA_ARG_API_KEY", "LLMTOP_API_KEY", "HF_TOKEN", "LLAMA_ARG_HF_TOKEN"}
)
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
# A variable that names a file holding a secret is not itself secret (the path helps).
_NOT_SECRET_SUFFIXES = ("_FILE", "_PATH", "_DIR")


def normalise_flag(flag: str) -> str:
    """llama.cpp accepts `--ctx_size` for `--ctx-size`."""
    return flag.replace("_", "-") if flag.startswith("--") else flag


def is_secret_flag(flag: str) -> bool:
    return normalise_flag(flag) in SECRET_FLAGS


def is_secret_env(name: str) -> bool:
    """True for a variable whose value must never be shown."""
    name = name.strip()
    if name in SECRET_ENV:
        return True
    upper = name.upper()
    if upper.endswith(_NOT_SECRET_SUFFIXES):
        return False
    return any(w in upper for w in _SECRET_WORDS)


def redact_argv(argv: Iterable[str]) -> list[str]:
    """argv for display: values of secret flags (any spelling) and `NAME=secret` words → ***."""
    out: list[str] = []
    hide_next = False
    for tok in argv:
        tok = str(tok)
        if hide_next:
            out.append(REDACTED)
            # `--api-key --api-key X`: the "value" is a secret flag again; X may be the key
            hide_next = tok.startswith("-") and "=" not in tok and is_secret_flag(tok)
            continue
        if tok.startswith("-"):
            flag, eq, _ = tok.partition("=")
            if is_secret_flag(flag):
                if eq:
                    out.append(f"{flag}={REDACTED}")
                else:
                    out.append(tok)
                    hide_next = True
                continue
        else:
            key, eq, _ = tok.partition("=")
            if eq and is_secret_env(key):
                out.append(f"{key}={REDACTED}")
                continue
        out.append(tok)
    return out


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """An environment for display: secret variables' values → ***."""
    return {k: (REDACTED if is_secret_env(k) and v else v) for k, v in env.items()}


def redact_env_line(line: str) -> str:
    """One `NAME=VALUE` string for display (systemd `Environment=` entries and the like)."""
    key, eq, _ = line.partition("=")
    if eq and is_secret_env(key):
        return f"{key}={REDACTED}"
    return line


def redact_environment(env: Mapping[str, str]) -> tuple[str, ...]:
    """A unit's environment as redacted `NAME=VALUE` strings, in order."""
    return tuple(redact_env_line(f"{k}={v}") if v else f"{k}=" for k, v in env.items())


# -- free text ---------------------------------------------------------------------------------

# Upper-case words an environment-style secret NAME holds (the `name` shape below).
_SECRET_NAME_WORDS = ("KEY", "TOKEN", "SECRET", "PASSW", "CREDENTIAL")


def _may_hold_secret(text: str) -> bool:
    """Cheap gate, a superset of `_SHAPES`: False only for text none of the shapes can match.

    llama-server's own lines say "token" all the time ("12 tokens", "per token"): a gate on
    that word ran the full pattern on nearly every line (24 µs each, half a core at 20 000
    lines/s). Each test here is the fixed part of one shape."""
    low = text.lower()
    if "--api" in low or "--hf" in low or "-hft" in low or "bearer" in low:  # flag, auth
        return True
    if "=" in text and any(w in text for w in _SECRET_NAME_WORDS):  # NAME=VALUE
        return True
    return '"' in text and ('"api' in low or '"token"' in low or '"password"' in low)  # JSON


# A value: quoted, or a run up to whitespace or a double quote (which ends it in Environment="…"
# and JSON). Commas, semicolons and single quotes belong to it: llama-server takes a list of keys
# (`--api-key k1,k2`), and a key may hold any printable character. An unmatched leading quote is
# part of the run, so `--api-key "abc` hides abc too.
_RUN = r"(?:[^\s\"\\]|\\.)+"
_VALUE = r"(?:\"(?:[^\"\\]|\\.)*\"|'[^']*'|[\"']?" + _RUN + r")"
_SHAPES = re.compile(
    # --api-key X / --api-key=X / --api_key X / --hf-token X / -hft X (any case)
    r"(?P<flag>(?<![\w-])(?i:--api[-_]key|--hf[-_]token|-hft)(?:=|[ \t]+))(?P<v1>" + _VALUE + r")"
    # NAME=VALUE for an environment-style (upper-case) secret NAME: Environment="LLAMA_API_KEY=…",
    # env dumps. Upper case only: llama-server's own "n_tokens = 12" must stay readable.
    r"|(?P<name>(?<![\w])[A-Z_][A-Z0-9_]*(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)"
    r"[A-Z0-9_]*=)(?P<v2>" + _VALUE + r")"
    # Authorization: Bearer X
    r"|(?P<auth>(?i:bearer)[ \t]+)(?P<v3>" + _RUN + r")"
    # "api_key": "X" in JSON
    r"|(?P<json>\"(?:api_key|apiKey|api-key|token|password)\"[ \t]*:[ \t]*)"
    r"(?P<v4>\"(?:[^\"\\]|\\.)*\")"
)


def _shape_sub(m: re.Match[str]) -> str:
    for prefix, value in (("flag", "v1"), ("name", "v2"), ("auth", "v3"), ("json", "v4")):
        if m.group(prefix) is not None:
            if prefix == "name" and m.group(prefix)[:-1].endswith(_NOT_SECRET_SUFFIXES):
                return m.group(0)
            v = m.group(value)
            quote = v[0] if v[:1] in ("'", '"') else ""
            return f"{m.group(prefix)}{quote}{REDACTED}{quote}"
    return m.group(0)  # pragma: no cover - one alternative always matched


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Free text for display or storage: known secret values and secret shapes → ***."""
    for s in secrets:
        if s and len(s) >= MIN_SECRET_LEN and s in text:
            text = text.replace(s, REDACTED)
    if not _may_hold_secret(text):
        return text
    return _SHAPES.sub(_shape_sub, text)


class Redactor:
    """`redact_text` with a set of known secret values that grows as llmtop learns keys.

    Thread-safe: the supervisor's pipe readers, the journal follower and the UI share one."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        with self._lock:
            known = set(self._secrets)
            for s in secrets:
                if s and len(s) >= MIN_SECRET_LEN:
                    known.add(s)
            # Longest first, so a key that contains another is replaced whole.
            self._secrets = tuple(sorted(known, key=len, reverse=True))

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._secrets

    def __call__(self, text: str) -> str:
        return redact_text(text, self._secrets)
