"""The llama-server command line as a model: read and change its options in every spelling.

A `LaunchSpec` is the argv (argv[0] is the binary) plus the environment variables llmtop adds.
llama-server reads an option from its flag (`-ngl 35`, `--n-gpu-layers=35` …) or from its
`LLAMA_ARG_*` environment variable; the flag wins (precedence: config < env < CLI). Values that
are given nowhere take llama-server's defaults (host 127.0.0.1, port 8080, ctx 0 …).

Anything displayed goes through `redacted()` / `redacted_env()`, which use the one rule set in
`llmtop.model.redaction`: API keys become "***".
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from llmtop.model.redaction import REDACTED, redact_argv, redact_env

# -ngl words → numbers (common/arg.cpp): auto = -1 (the default), all = -2.
GPU_LAYERS_AUTO = -1
GPU_LAYERS_ALL = -2

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class OptionDef:
    """One llama-server option: its spellings, env var, and whether it takes a value."""

    name: str
    spellings: tuple[str, ...]  # the first one is used when llmtop adds the flag
    env: tuple[str, ...] = ()
    takes_value: bool = True
    negative: tuple[str, ...] = ()  # for boolean flags: spellings that switch it off
    secret: bool = False


OPTIONS: tuple[OptionDef, ...] = (
    OptionDef("model", ("-m", "--model"), ("LLAMA_ARG_MODEL",)),
    OptionDef(
        "gpu_layers", ("-ngl", "--gpu-layers", "--n-gpu-layers"), ("LLAMA_ARG_N_GPU_LAYERS",)
    ),
    OptionDef("ctx_size", ("-c", "--ctx-size"), ("LLAMA_ARG_CTX_SIZE",)),
    OptionDef("host", ("--host",), ("LLAMA_ARG_HOST",)),
    OptionDef("port", ("--port",), ("LLAMA_ARG_PORT",)),
    OptionDef("api_key", ("--api-key",), ("LLAMA_API_KEY", "LLAMA_ARG_API_KEY"), secret=True),
    OptionDef("api_key_file", ("--api-key-file",), ("LLAMA_ARG_API_KEY_FILE",)),
    OptionDef("cache_type_k", ("-ctk", "--cache-type-k"), ("LLAMA_ARG_CACHE_TYPE_K",)),
    OptionDef("cache_type_v", ("-ctv", "--cache-type-v"), ("LLAMA_ARG_CACHE_TYPE_V",)),
    OptionDef("parallel", ("-np", "--parallel"), ("LLAMA_ARG_N_PARALLEL",)),
    OptionDef("flash_attn", ("-fa", "--flash-attn"), ("LLAMA_ARG_FLASH_ATTN",)),
    OptionDef(
        "metrics",
        ("--metrics",),
        ("LLAMA_ARG_ENDPOINT_METRICS",),
        takes_value=False,
        negative=("--no-metrics",),
    ),
    OptionDef(
        "slots",
        ("--slots",),
        ("LLAMA_ARG_ENDPOINT_SLOTS",),
        takes_value=False,
        negative=("--no-slots",),
    ),
    OptionDef(
        "log_verbosity",
        ("-lv", "--log-verbosity", "--verbosity"),
        ("LLAMA_ARG_LOG_VERBOSITY",),
    ),
    OptionDef("threads", ("-t", "--threads"), ("LLAMA_ARG_THREADS",)),
    # Not modelled as a property, but redacted like the API key.
    OptionDef("hf_token", ("-hft", "--hf-token"), ("HF_TOKEN",), secret=True),
)

_BY_NAME: dict[str, OptionDef] = {o.name: o for o in OPTIONS}
_BY_SPELLING: dict[str, tuple[OptionDef, bool]] = {}
for _o in OPTIONS:
    for _s in _o.spellings:
        _BY_SPELLING[_s] = (_o, True)
    for _s in _o.negative:
        _BY_SPELLING[_s] = (_o, False)


_TRUE_WORDS = frozenset({"1", "true", "on", "yes", "enabled", "enable"})
_FALSE_WORDS = frozenset({"0", "false", "off", "no", "disabled", "disable"})
# -fa used to be a bare switch; today it takes on|off|auto.
_FLASH_ATTN_WORDS = frozenset(
    {"on", "off", "auto", "1", "0", "true", "false", "enabled", "disabled"}
)


def option_def(name: str) -> OptionDef:
    """The option for a property name ("gpu_layers") or any of its spellings ("-ngl")."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    flag = _normalise_flag(name)
    if flag in _BY_SPELLING:
        return _BY_SPELLING[flag][0]
    raise KeyError(f"unknown llama-server option: {name}")


def _normalise_flag(token: str) -> str:
    # llama.cpp accepts `--ctx_size` for `--ctx-size`.
    if token.startswith("--"):
        return token.replace("_", "-")
    return token


@dataclass(frozen=True)
class _Occurrence:
    option: OptionDef
    start: int  # index in argv
    length: int  # tokens used (1 for `--flag=value` and switches, 2 for `--flag value`)
    value: str | None  # None: a switch, or a value flag with its value missing
    positive: bool = True  # False for --no-slots and the like


def _scan(argv: Sequence[str]) -> list[_Occurrence]:
    """Every known option in argv[1:], in order. Unknown tokens are skipped one at a time."""
    found: list[_Occurrence] = []
    i = 1
    n = len(argv)
    while i < n:
        tok = argv[i]
        if not tok.startswith("-") or tok == "-":
            i += 1
            continue
        inline: str | None = None
        flag = tok
        if "=" in tok:
            flag, inline = tok.split("=", 1)
        flag = _normalise_flag(flag)
        hit = _BY_SPELLING.get(flag)
        if hit is None:
            i += 1
            continue
        opt, positive = hit
        if not opt.takes_value:
            found.append(_Occurrence(opt, i, 1, inline, positive))
            i += 1
            continue
        if inline is not None:
            found.append(_Occurrence(opt, i, 1, inline))
            i += 1
            continue
        nxt = argv[i + 1] if i + 1 < n else None
        if opt.name == "flash_attn" and (nxt is None or nxt.lower() not in _FLASH_ATTN_WORDS):
            # old-style bare `-fa`
            found.append(_Occurrence(opt, i, 1, "on"))
            i += 1
            continue
        if nxt is None:
            found.append(_Occurrence(opt, i, 1, None))
            i += 1
            continue
        found.append(_Occurrence(opt, i, 2, nxt))
        i += 2
    return found


def _as_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _as_bool(value: str | None) -> bool | None:
    if value is None:
        return None
    v = value.strip().lower()
    if v in _TRUE_WORDS:
        return True
    if v in _FALSE_WORDS:
        return False
    return None


def parse_gpu_layers(value: str | int | None) -> int | None:
    """`-ngl` value → int: "auto" → -1, "all" → -2, a number → itself, rubbish → None."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    v = value.strip().lower()
    if v == "auto":
        return GPU_LAYERS_AUTO
    if v == "all":
        return GPU_LAYERS_ALL
    return _as_int(v)


def format_gpu_layers(value: int | None) -> str:
    """An int from `gpu_layers` in words for the operator: "auto", "all" or the number."""
    if value is None or value == GPU_LAYERS_AUTO:
        return "auto"
    if value == GPU_LAYERS_ALL:
        return "all"
    return str(value)


def llama_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of an environment that configures llama-server (LLAMA_ARG_*, LLAMA_API_KEY)."""
    return {
        k: v
        for k, v in environ.items()
        if k.startswith("LLAMA_ARG_") or k in ("LLAMA_API_KEY", "LLAMA_LOG_VERBOSITY")
    }


@dataclass(frozen=True, repr=False)
class LaunchSpec:
    """A llama-server command line (argv[0] is the binary) plus extra environment variables.

    Immutable: `with_option` returns a new spec. `env` holds only what llmtop passes on top of its
    own environment (a supervisor runs the child with os.environ + env).
    """

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "argv", tuple(str(a) for a in self.argv))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    @classmethod
    def from_argv(cls, argv: Iterable[str], env: Mapping[str, str] | None = None) -> LaunchSpec:
        """Any argv (even an empty or odd one) gives a spec; properties fall back to defaults.

        A single string is split like a shell would (no shell runs it)."""
        if isinstance(argv, str):
            argv = shlex.split(argv)
        return cls(tuple(argv), dict(env or {}))

    # -- raw access --------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"LaunchSpec(argv={self.redacted()!r}, env={redact_env(self.env)!r})"

    def __hash__(self) -> int:
        return hash((self.argv, tuple(sorted(self.env.items()))))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LaunchSpec):
            return NotImplemented
        return self.argv == other.argv and dict(self.env) == dict(other.env)

    @property
    def binary(self) -> str | None:
        return self.argv[0] if self.argv else None

    def flag_value(self, name: str) -> str | None:
        """The last value given on the command line for this option (None: not given there)."""
        opt = option_def(name)
        value: str | None = None
        for occ in _scan(self.argv):
            if occ.option is opt:
                if opt.takes_value:
                    value = occ.value
                else:
                    on = occ.positive if occ.value is None else bool(_as_bool(occ.value))
                    value = "1" if on else "0"
        return value

    def env_value(self, name: str) -> str | None:
        opt = option_def(name)
        for var in opt.env:
            if var in self.env:
                return self.env[var]
        return None

    def get(self, name: str) -> str | None:
        """The raw value in effect: the CLI flag, else the LLAMA_ARG_* env form, else None."""
        v = self.flag_value(name)
        return v if v is not None else self.env_value(name)

    def is_set(self, name: str) -> bool:
        """True when the option is given explicitly (flag or env), False when defaulted."""
        return self.get(name) is not None

    # -- typed properties --------------------------------------------------------------------

    @property
    def model(self) -> str | None:
        return self.get("model")

    @property
    def gpu_layers(self) -> int | None:
        """-1 = auto (llama-server's default), -2 = all, None when the value is not a number."""
        raw = self.get("gpu_layers")
        return GPU_LAYERS_AUTO if raw is None else parse_gpu_layers(raw)

    @property
    def ctx_size(self) -> int | None:
        """0 = the model's training context (the default); None when not a number."""
        raw = self.get("ctx_size")
        return 0 if raw is None else _as_int(raw)

    @property
    def host(self) -> str:
        raw = self.get("host")
        return raw if raw else DEFAULT_HOST

    @property
    def port(self) -> int:
        raw = _as_int(self.get("port"))
        return raw if raw is not None else DEFAULT_PORT

    @property
    def api_key_file(self) -> str | None:
        return self.get("api_key_file")

    @property
    def api_key(self) -> str | None:
        """The key a client must send: --api-key, else LLAMA_API_KEY, else the key file's first."""
        raw = self.get("api_key")
        if raw:
            # llama-server accepts a comma-separated list; any one of them works.
            return raw.split(",")[0].strip() or None
        path = self.api_key_file
        if path:
            try:
                text = Path(path).read_text(errors="replace")
            except OSError:
                return None
            for line in text.splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    return line
        return None

    @property
    def cache_type_k(self) -> str:
        return self.get("cache_type_k") or "f16"

    @property
    def cache_type_v(self) -> str:
        return self.get("cache_type_v") or "f16"

    @property
    def parallel(self) -> int | None:
        """Slots: the -np value; llama-server's default (-1, auto) gives 4. None: not a number."""
        raw = self.get("parallel")
        if raw is None:
            return 4
        n = _as_int(raw)
        if n is not None and n < 0:
            return 4
        return n

    @property
    def flash_attn(self) -> str:
        """ "on", "off" or "auto" (the default)."""
        raw = self.get("flash_attn")
        if raw is None:
            return "auto"
        v = raw.strip().lower()
        if v == "auto":
            return "auto"
        b = _as_bool(v)
        if b is None:
            return v
        return "on" if b else "off"

    @property
    def metrics_enabled(self) -> bool:
        return bool(_as_bool(self.get("metrics")))

    @property
    def slots_enabled(self) -> bool:
        b = _as_bool(self.get("slots"))
        return True if b is None else b

    @property
    def log_verbosity(self) -> int:
        n = _as_int(self.get("log_verbosity"))
        return 3 if n is None else n

    @property
    def threads(self) -> int | None:
        """None: llama-server picks (number of cores)."""
        return _as_int(self.get("threads"))

    @property
    def connect_host(self) -> str:
        """The host to connect to: wildcard addresses become loopback."""
        host = self.host.strip()
        if host in ("", "0.0.0.0", "*"):
            return "127.0.0.1"
        if host in ("::", "[::]"):
            return "[::1]"
        if ":" in host and not host.startswith("["):
            return f"[{host}]"
        return host

    @property
    def url(self) -> str:
        """Where to reach the server, e.g. "http://127.0.0.1:8080"."""
        return f"http://{self.connect_host}:{self.port}"

    # -- changing ----------------------------------------------------------------------------

    def with_option(self, name: str, value: str | int | bool | None) -> LaunchSpec:
        """A copy with the option set to value in one spelling; every other spelling is removed.

        `name` is a property name ("gpu_layers") or any spelling ("-ngl", "--n-gpu-layers").
        None removes the option. Switches (metrics, slots) take True/False. A conflicting
        LLAMA_ARG_* form is dropped from the spec's env. gpu_layers accepts -1/-2 or "auto"/"all".
        """
        opt = option_def(name)
        occs = [o for o in _scan(self.argv) if o.option is opt]
        drop: set[int] = set()
        for o in occs:
            drop.update(range(o.start, o.start + o.length))
        spelling = opt.spellings[0]
        if opt.name == "gpu_layers":
            spelling = "-ngl"
        if occs and occs[0].positive:
            first = _normalise_flag(self.argv[occs[0].start].split("=", 1)[0])
            if first in opt.spellings:
                spelling = first

        new_tokens: list[str] = []
        if value is not None:
            if opt.takes_value:
                if isinstance(value, bool):
                    text = "on" if value else "off"
                elif opt.name == "gpu_layers" and isinstance(value, int):
                    text = format_gpu_layers(value) if value < 0 else str(value)
                else:
                    text = str(value)
                new_tokens = [spelling, text]
            else:
                on = value if isinstance(value, bool) else bool(_as_bool(str(value)))
                if on:
                    new_tokens = [opt.spellings[0]]
                elif opt.name == "slots":
                    # on by default: switching off needs the flag. /metrics is off by default.
                    new_tokens = [opt.negative[0]]
        insert_at = occs[0].start if occs else len(self.argv)
        argv: list[str] = []
        for i, tok in enumerate(self.argv):
            if i == insert_at:
                argv.extend(new_tokens)
            if i not in drop:
                argv.append(tok)
        if insert_at >= len(self.argv):
            argv.extend(new_tokens)
        env = {k: v for k, v in self.env.items() if k not in opt.env}
        return LaunchSpec(tuple(argv), env)

    def with_options(self, **values: str | int | bool | None) -> LaunchSpec:
        spec = self
        for k, v in values.items():
            spec = spec.with_option(k, v)
        return spec

    # -- display -----------------------------------------------------------------------------

    def redacted(self) -> list[str]:
        """argv with secret values (API key, HF token) replaced by "***"."""
        return redact_argv(self.argv)

    def redacted_env(self) -> dict[str, str]:
        return redact_env(self.env)

    def command_line(self) -> str:
        """The redacted command as one shell-quoted line, for display only."""
        return " ".join(a if a.endswith(REDACTED) else shlex.quote(a) for a in self.redacted())

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment to run the child with: base (default os.environ) + env."""
        return {**(os.environ if base is None else base), **self.env}
