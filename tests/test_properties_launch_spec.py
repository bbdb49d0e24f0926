"""Property tests: the launch spec's editing and every redacted view of it, and the redaction
module on free text. Generated argvs use every flag spelling llama-server accepts."""

from __future__ import annotations

import shlex

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from llmtop.model.launch_spec import OPTIONS, LaunchSpec, option_def
from llmtop.model.redaction import (
    REDACTED,
    SECRET_FLAGS,
    Redactor,
    is_secret_env,
    is_secret_flag,
    redact_argv,
    redact_env,
    redact_env_line,
    redact_environment,
    redact_text,
)

FAST = settings(max_examples=150, deadline=None)

# -- argv generation -------------------------------------------------------------------------

# Flags llama-server has that the spec does not model: they and their values must pass through.
UNKNOWN_FLAGS = ("--temp", "--top-k", "-s", "--alias", "--jinja", "--no-mmap", "-b", "--rope-scale")
FLASH_WORDS = ("on", "off", "auto", "1", "0", "true", "false", "enabled", "disabled")
VALUE_OPTIONS = [o for o in OPTIONS if o.takes_value]
SWITCHES = [o for o in OPTIONS if not o.takes_value]

words = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)
positional = words.filter(lambda w: not w.startswith("-"))


def spellings(flag: str) -> list[str]:
    """Every way to write a flag: as is, and `--x_y` for a long one with a hyphen."""
    out = [flag]
    if flag.startswith("--") and "-" in flag[2:]:
        out.append("--" + flag[2:].replace("-", "_"))
    return out


@st.composite
def occurrence(draw: st.DrawFn, opt_name: str | None = None) -> tuple[str | None, list[str]]:
    """(option name, tokens) for one known option, or (None, tokens) for anything else."""
    kind = draw(st.sampled_from(["value", "switch", "unknown", "positional"]))
    if opt_name is not None:
        opt = option_def(opt_name)
        kind = "value" if opt.takes_value else "switch"
    if kind == "positional":
        return None, [draw(positional)]
    if kind == "unknown":
        return None, [draw(st.sampled_from(UNKNOWN_FLAGS)), draw(positional)]
    if kind == "switch":
        opt = option_def(opt_name) if opt_name else draw(st.sampled_from(SWITCHES))
        return opt.name, [draw(st.sampled_from([*opt.spellings, *opt.negative]))]
    opt = option_def(opt_name) if opt_name else draw(st.sampled_from(VALUE_OPTIONS))
    flag = draw(st.sampled_from([s for f in opt.spellings for s in spellings(f)]))
    value = draw(st.sampled_from(FLASH_WORDS)) if opt.name == "flash_attn" else draw(words)
    if flag.startswith("--") and draw(st.booleans()):
        return opt.name, [f"{flag}={value}"]
    return opt.name, [flag, value]


argvs = st.lists(occurrence(), max_size=8)
envs = st.dictionaries(
    st.sampled_from([e for o in OPTIONS for e in o.env] + ["PATH", "CUDA_VISIBLE_DEVICES"]),
    words,
    max_size=4,
)


def new_value(opt_name: str) -> st.SearchStrategy[str | bool | None]:
    opt = option_def(opt_name)
    if not opt.takes_value:
        return st.sampled_from([True, False, None])
    if opt.name == "flash_attn":
        return st.sampled_from([*FLASH_WORDS, None])
    return st.one_of(st.none(), words)


@FAST
@given(st.data(), argvs, envs)
def test_with_option_keeps_every_other_argument(
    data: st.DataObject, items: list[tuple[str | None, list[str]]], env: dict[str, str]
) -> None:
    """Changing one option (in whatever spellings it was given) leaves every other token — and
    its order — exactly as it was; the new value is the one in effect."""
    name = data.draw(st.sampled_from([o.name for o in OPTIONS]))
    value = data.draw(new_value(name))
    argv = ["llama-server"] + [t for _, toks in items for t in toks]
    opt = option_def(name)
    others = ["llama-server"] + [t for n, toks in items if n != name for t in toks]
    first = next((i for i, (n, _) in enumerate(items) if n == name), None)
    spec = LaunchSpec.from_argv(argv, env).with_option(name, value)

    got = list(spec.argv)
    added = len(got) - len(others)
    assert 0 <= added <= 2
    # where the first occurrence was (or at the end): the new tokens, nothing else moved
    at = (1 + sum(len(t) for n, t in items[:first] if n != name)) if first is not None else None
    at = len(others) if at is None else at
    assert got[:at] + got[at + added :] == others
    if opt.takes_value:
        assert spec.flag_value(name) == (None if value is None else str(value))
    elif value is True:
        assert spec.get(name) == "1"
    # the LLAMA_ARG_* form of that option is gone, every other variable kept
    assert dict(spec.env) == {k: v for k, v in env.items() if k not in opt.env}


@FAST
@given(argvs, envs)
def test_from_argv_reads_the_last_value_in_any_spelling(
    items: list[tuple[str | None, list[str]]], env: dict[str, str]
) -> None:
    argv = ["llama-server"] + [t for _, toks in items for t in toks]
    spec = LaunchSpec.from_argv(argv, env)
    for opt in VALUE_OPTIONS:
        given_values = [
            toks[-1] if len(toks) == 2 else toks[0].split("=", 1)[1]
            for n, toks in items
            if n == opt.name
        ]
        if given_values:
            assert spec.flag_value(opt.name) == given_values[-1]
        else:
            assert spec.flag_value(opt.name) is None
    # a shell-quoted command line reads back as the same argv
    assert LaunchSpec.from_argv(shlex.join(argv)).argv == tuple(argv)


# -- the key never shows ---------------------------------------------------------------------

keys = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=4, max_size=24)
KEY_FLAGS = ["--api-key", "--api_key", "-hft", "--hf-token", "--hf_token"]
KEY_ENVS = ["LLAMA_API_KEY", "LLAMA_ARG_API_KEY", "HF_TOKEN", "LLAMA_ARG_HF_TOKEN"]


@st.composite
def keyed_spec(draw: st.DrawFn) -> tuple[list[str], dict[str, str], str, str]:
    """(argv, env, where, spelling): the argv/env hold the placeholder "{KEY}" once."""
    items = draw(argvs)
    argv = ["llama-server"] + [t for _, toks in items for t in toks]
    env = draw(envs)
    where = draw(st.sampled_from(["flag", "flag=", "env", "argv-env"]))
    pos = draw(st.integers(1, len(argv)))
    if where == "flag":
        flag = draw(st.sampled_from(KEY_FLAGS))
        argv[pos:pos] = [flag, "{KEY}"]
    elif where == "flag=":
        flag = draw(st.sampled_from([f for f in KEY_FLAGS if f.startswith("--")]))
        argv[pos:pos] = [f"{flag}={{KEY}}"]
    elif where == "env":
        flag = draw(st.sampled_from(KEY_ENVS))
        env[flag] = "{KEY}"
    else:  # `env LLAMA_API_KEY=… llama-server …` as a unit's ExecStart
        flag = draw(st.sampled_from(KEY_ENVS))
        argv = ["env", f"{flag}={{KEY}}", *argv]
    return argv, env, where, flag


def views(spec: LaunchSpec) -> dict[str, str]:
    return {
        "redacted": "\n".join(spec.redacted()),
        "redacted_env": repr(spec.redacted_env()),
        "command_line": spec.command_line(),
        "repr": repr(spec),
        "redact_argv": "\n".join(redact_argv(spec.argv)),
        "redact_env": repr(redact_env(spec.env)),
        "environment": "\n".join(redact_environment(spec.env)),
    }


@FAST
@given(keyed_spec(), keys)
def test_no_redacted_view_shows_the_key(
    case: tuple[list[str], dict[str, str], str, str], key: str
) -> None:
    """Every displayed form is the same whatever the key is, and never contains it."""
    argv, env, _, _ = case

    def fill(k: str) -> LaunchSpec:
        return LaunchSpec.from_argv(
            [a.replace("{KEY}", k) for a in argv],
            {n: v.replace("{KEY}", k) for n, v in env.items()},
        )

    with_key, with_other = views(fill(key)), views(fill("placeholder-key"))
    assume(not any(key in v for v in with_other.values()))  # the key is not another token
    assert with_key == with_other
    for view in with_key.values():
        assert key not in view


def test_every_secret_option_is_covered_by_redaction() -> None:
    """An option marked secret in the launch spec is hidden in every spelling and env name."""
    secret = [o for o in OPTIONS if o.secret]
    assert {o.name for o in secret} >= {"api_key", "hf_token"}
    for opt in secret:
        for flag in opt.spellings:
            for spelling in spellings(flag):
                assert is_secret_flag(spelling), spelling
        assert set(opt.spellings) <= SECRET_FLAGS
        for name in opt.env:
            assert is_secret_env(name), name
            assert redact_env_line(f"{name}=abcd1234") == f"{name}={REDACTED}"
    # …and nothing that is not secret is hidden
    for opt in OPTIONS:
        if not opt.secret:
            assert not any(is_secret_flag(s) for s in opt.spellings), opt.name


# -- redact_text on free text ------------------------------------------------------------------

# A key a shape can delimit: in free text a double quote ends a value (Environment="…", JSON).
shape_keys = keys.filter(lambda k: '"' not in k and not k.endswith("\\"))
SHAPES = [
    "--api-key {k}",
    "--api-key={k}",
    "--api_key {k}",
    "--API-KEY {k}",
    "--hf-token {k}",
    "-hft {k}",
    "-hft={k}",
    "LLAMA_API_KEY={k}",
    "LLAMA_ARG_API_KEY={k}",
    "HF_TOKEN={k}",
    'Environment="LLAMA_API_KEY={k}"',
    'Environment="A=1" "LLAMA_ARG_API_KEY={k}" "B=2"',
    "Authorization: Bearer {k}",
    "authorization: bearer {k}",
    '{{"api_key": "{j}"}}',
    '{{"token": "{j}", "n": 1}}',
    "--api-key '{k}'",
    "--api-key k1,{k}",
]
text_around = st.text(st.characters(codec="utf-8"), max_size=40)


def _json_escape(k: str) -> str:
    return k.replace("\\", "\\\\").replace('"', '\\"')


@FAST
@given(shape_keys, st.sampled_from(SHAPES), text_around, text_around)
def test_redact_text_hides_a_key_in_every_shape(
    key: str, shape: str, before: str, after: str
) -> None:
    assume("'" not in key or "'{k}'" not in shape)
    secret = shape.format(k=key, j=_json_escape(key))
    placeholder = shape.format(k="placeholder-key", j="placeholder-key")
    text = f"{before}\n{secret}\n{after}"
    out = redact_text(text)
    assume(key not in redact_text(f"{before}\n{placeholder}\n{after}"))
    assert key not in out
    if key[0] not in "'\"":  # (a leading quote is kept around the ***)
        assert out == redact_text(f"{before}\n{placeholder}\n{after}")  # nothing of it is left
    assert REDACTED in out


@FAST
@given(keys, text_around, text_around, st.integers(1, 3))
def test_a_redactor_that_knows_the_key_hides_it_anywhere(
    key: str, before: str, after: str, times: int
) -> None:
    text = before + key.join([""] + [after] * times)
    r = Redactor([key])
    assert key not in r(text)
    assert key not in redact_text(text, [key])
    # a second, longer key that contains the first is hidden whole
    r.add(key + "-longer")
    assert key not in r(before + key + "-longer" + after)


log_lines = st.sampled_from(
    [
        "slot update_slots: id  0 | task 0 | new prompt, n_ctx_slot = 512, n_keep = 0, "
        "n_tokens = 12",
        "srv  log_server_r: request: GET /health 127.0.0.1 200",
        "llama_kv_cache:        CPU KV buffer size =     0.50 MiB",
        "print_info: n_vocab          = 259",
        "main: server is listening on http://127.0.0.1:8080 - starting the main loop",
        'tokenizer.ggml.tokens arr[str,259] = ["<unk>", "<s>", ...]',
        "load: special tokens cache size = 3",
        "MY_TOKEN_FILE=/etc/llama/token",
    ]
)
# Free text without a trigger word: no secret shape can be in it.
plain = st.text(st.characters(codec="utf-8"), max_size=200).filter(
    lambda t: not any(w in t.lower() for w in ("key", "token", "secret", "passw", "credential",
                                               "bearer", "-hft"))
)  # fmt: skip


@FAST
@given(st.one_of(log_lines, plain))
def test_text_without_secrets_comes_back_unchanged(text: str) -> None:
    assert redact_text(text) == text
    assert Redactor(["abc"])(text) == text  # too short to be hidden by value


# Text near the shapes: their fixed parts with random case and surroundings, so the gate is tried
# where it matters, not only on random text that almost never looks like a secret.
near_shapes = st.builds(
    lambda before, word, after: f"{before}{word}{after}",
    text_around,
    st.sampled_from(
        ["--api-key ", "--API_key=", "--hf_token ", "-hft ", "-HFT=", "Bearer ", "BEARER\t",
         "MY_KEY=", "X_TOKEN_Y=", "SECRET=", "A_PASSWD=", "CREDENTIALS=", '"api_key": ',
         '"apiKey":"v"', '"api-key" : "v"', '"token":"v"', '"password": "v"', "key",
         "tokens", "Token=", "--api-key v", "MY_KEY=v", "Bearer v", '"api_key": "v"']
    ),
    text_around,
)  # fmt: skip


@FAST
@given(st.one_of(near_shapes, plain, log_lines, st.text(max_size=120)))
def test_the_cheap_gate_lets_through_every_text_a_shape_matches(text: str) -> None:
    """`_may_hold_secret` skips the full pattern for most log lines; it must never skip one
    the pattern would redact (it is a superset of `_SHAPES`)."""
    from llmtop.model.redaction import _SHAPES, _may_hold_secret

    if _SHAPES.search(text) is not None:
        assert _may_hold_secret(text), text
