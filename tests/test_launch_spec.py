"""LaunchSpec: the llama-server command line as a model (pure: no processes)."""

from __future__ import annotations

import pytest

from llmtop.model.launch_spec import LaunchSpec, format_gpu_layers, redact_argv, redact_env

BIN = "/opt/llama/bin/llama-server"


def spec(*args: str, env: dict[str, str] | None = None) -> LaunchSpec:
    return LaunchSpec.from_argv([BIN, *args], env)


def test_defaults_follow_llama_server() -> None:
    s = spec("-m", "m.gguf")
    assert s.host == "127.0.0.1"
    assert s.port == 8080
    assert s.url == "http://127.0.0.1:8080"
    assert s.gpu_layers == -1  # auto
    assert s.ctx_size == 0
    assert s.cache_type_k == "f16" and s.cache_type_v == "f16"
    assert s.metrics_enabled is False
    assert s.slots_enabled is True
    assert s.flash_attn == "auto"
    assert s.api_key is None
    assert s.log_verbosity == 3
    assert not s.is_set("port")


@pytest.mark.parametrize(
    "args",
    [
        ["-m", "a.gguf", "-ngl", "35", "-c", "2048", "--port", "9090"],
        ["--model", "a.gguf", "--gpu-layers", "35", "--ctx-size", "2048", "--port", "9090"],
        ["--model=a.gguf", "--n-gpu-layers=35", "--ctx-size=2048", "--port=9090"],
        ["--model", "a.gguf", "--n_gpu_layers", "35", "--ctx_size", "2048", "--port", "9090"],
    ],
)
def test_every_spelling_reads_the_same(args: list[str]) -> None:
    s = spec(*args)
    assert (s.model, s.gpu_layers, s.ctx_size, s.port) == ("a.gguf", 35, 2048, 9090)
    assert s.url == "http://127.0.0.1:9090"


def test_the_playbook_command_line() -> None:
    # ../shared/seed: the operators' playbook launch line
    s = spec(
        "--model", "/opt/ai/models/gguf/llama-2-7b-q5k.gguf", "--ctx-size", "2048",
        "--gpu-layers", "35", "--threads", "8", "--host", "0.0.0.0", "--port", "9090",
    )  # fmt: skip
    assert s.model == "/opt/ai/models/gguf/llama-2-7b-q5k.gguf"
    assert s.gpu_layers == 35 and s.ctx_size == 2048 and s.threads == 8
    assert s.host == "0.0.0.0"
    assert s.url == "http://127.0.0.1:9090"  # connect over loopback


def test_gpu_layer_words() -> None:
    assert spec("-ngl", "auto").gpu_layers == -1
    assert spec("-ngl", "all").gpu_layers == -2
    assert spec("-ngl", "ALL").gpu_layers == -2
    assert spec("-ngl", "lots").gpu_layers is None
    assert format_gpu_layers(-2) == "all" and format_gpu_layers(-1) == "auto"
    assert format_gpu_layers(12) == "12"


def test_other_options() -> None:
    s = spec(
        "-ctk", "q8_0", "--cache-type-v=q4_0", "-np", "2", "-fa", "on", "--metrics",
        "--no-slots", "-lv", "4", "-t", "3",
    )  # fmt: skip
    assert s.cache_type_k == "q8_0" and s.cache_type_v == "q4_0"
    assert s.parallel == 2
    assert s.flash_attn == "on"
    assert s.metrics_enabled is True
    assert s.slots_enabled is False
    assert s.log_verbosity == 4
    assert s.threads == 3


def test_old_bare_flash_attn_switch() -> None:
    s = spec("-fa", "-c", "1024")
    assert s.flash_attn == "on"
    assert s.ctx_size == 1024


def test_env_forms_and_cli_wins() -> None:
    env = {
        "LLAMA_ARG_PORT": "7001",
        "LLAMA_ARG_N_GPU_LAYERS": "all",
        "LLAMA_ARG_CTX_SIZE": "4096",
        "LLAMA_ARG_MODEL": "/env.gguf",
        "LLAMA_ARG_HOST": "0.0.0.0",
        "LLAMA_ARG_ENDPOINT_METRICS": "1",
        "LLAMA_ARG_ENDPOINT_SLOTS": "0",
        "LLAMA_API_KEY": "env-secret",
    }
    s = spec(env=env)
    assert (s.port, s.gpu_layers, s.ctx_size, s.model) == (7001, -2, 4096, "/env.gguf")
    assert s.url == "http://127.0.0.1:7001"
    assert s.metrics_enabled is True and s.slots_enabled is False
    assert s.api_key == "env-secret"
    s2 = spec("--port", "9000", "-ngl", "10", "--api-key", "cli-secret", env=env)
    assert s2.port == 9000 and s2.gpu_layers == 10 and s2.api_key == "cli-secret"


def test_last_flag_wins() -> None:
    assert spec("-c", "1024", "--ctx-size", "4096").ctx_size == 4096


def test_api_key_file(tmp_path) -> None:
    f = tmp_path / "keys"
    f.write_text("# operators\n\nfile-secret\nsecond\n")
    s = spec("--api-key-file", str(f))
    assert s.api_key == "file-secret"
    assert spec("--api-key-file", str(tmp_path / "missing")).api_key is None


def test_with_option_replaces_every_spelling() -> None:
    s = spec("-m", "a.gguf", "-ngl", "10", "--n-gpu-layers=20", "-c", "512", "--port", "9")
    s2 = s.with_option("gpu_layers", 33)
    assert s2.gpu_layers == 33
    assert s2.argv == (BIN, "-m", "a.gguf", "-ngl", "33", "-c", "512", "--port", "9")
    # the original is unchanged (immutable)
    assert s.argv[4] == "10"
    # any spelling names the option; a new option is appended
    s3 = s2.with_option("--ctx-size", 4096).with_option("-fa", "on")
    assert s3.ctx_size == 4096 and s3.flash_attn == "on"
    assert s3.argv[-2:] == ("-fa", "on")
    assert s3.argv.count("-c") == 1
    # words and removal
    assert s.with_option("-ngl", -2).argv[4] == "all"
    s4 = s.with_option("gpu_layers", None)
    assert "-ngl" not in s4.argv and "--n-gpu-layers=20" not in s4.argv
    assert s4.gpu_layers == -1


def test_with_option_drops_conflicting_env() -> None:
    s = spec("-m", "a.gguf", env={"LLAMA_ARG_N_GPU_LAYERS": "99", "CUDA_VISIBLE_DEVICES": "0"})
    s2 = s.with_option("gpu_layers", 12)
    assert s2.gpu_layers == 12
    assert "LLAMA_ARG_N_GPU_LAYERS" not in s2.env
    assert s2.env["CUDA_VISIBLE_DEVICES"] == "0"


def test_with_option_switches() -> None:
    s = spec("-m", "a.gguf")
    on = s.with_option("metrics", True)
    assert on.metrics_enabled and on.argv[-1] == "--metrics"
    assert not on.with_option("metrics", False).metrics_enabled
    off = s.with_option("slots", False)
    assert off.slots_enabled is False and "--no-slots" in off.argv
    assert off.with_option("--slots", True).slots_enabled is True


def test_unknown_option_name_is_an_error() -> None:
    with pytest.raises(KeyError):
        spec().with_option("--no-such-flag", 1)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        [BIN],
        [BIN, "-m"],
        [BIN, "--port", "notaport"],
        [BIN, "-c", "-ngl", "3"],
        [BIN, "positional", "-", "--", "--unknown=1", "-x"],
        [BIN, "--api-key"],
    ],
)
def test_from_argv_survives_any_argv(argv: list[str]) -> None:
    s = LaunchSpec.from_argv(argv)
    # every property answers without raising
    _ = (s.model, s.gpu_layers, s.ctx_size, s.host, s.port, s.api_key, s.url, s.parallel)
    _ = (s.cache_type_k, s.flash_attn, s.metrics_enabled, s.slots_enabled, s.redacted())
    assert s.port == 8080  # rubbish or missing → the default


def test_redaction_hides_keys_in_every_form() -> None:
    s = spec(
        "--api-key", "sk-one", "--api-key=sk-two", "--hf-token", "hf-three", "-m", "a.gguf",
        env={"LLAMA_API_KEY": "sk-four", "LLAMA_ARG_API_KEY": "sk-five", "OTHER": "x"},
    )  # fmt: skip
    shown = " ".join(s.redacted()) + repr(s) + s.command_line() + str(s.redacted_env())
    for secret in ("sk-one", "sk-two", "hf-three", "sk-four", "sk-five"):
        assert secret not in shown
    assert "***" in s.redacted()
    assert "--api-key=***" in s.redacted()
    assert "a.gguf" in s.redacted()
    assert redact_argv(["env", "LLAMA_API_KEY=abc", BIN]) == ["env", "LLAMA_API_KEY=***", BIN]
    assert redact_env({"LLAMA_API_KEY": "abc", "PATH": "/bin"}) == {
        "LLAMA_API_KEY": "***",
        "PATH": "/bin",
    }
    # the key itself is still there for connecting
    assert s.api_key == "sk-two"


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:1234"),
        ("::", "http://[::1]:1234"),
        ("::1", "http://[::1]:1234"),
        ("gpu-box.lan", "http://gpu-box.lan:1234"),
    ],
)
def test_url_for_connecting(host: str, url: str) -> None:
    assert spec("--host", host, "--port", "1234").url == url


def test_specs_compare_and_hash_by_value() -> None:
    a = spec("-m", "a.gguf", env={"X": "1"})
    b = spec("-m", "a.gguf", env={"X": "1"})
    assert a == b and hash(a) == hash(b)
    assert a != a.with_option("ctx_size", 8)


def test_a_command_string_is_split_like_a_shell_would() -> None:
    s = LaunchSpec.from_argv(f"{BIN} -m '/models/my model.gguf' --port 9001")
    assert s.argv == (BIN, "-m", "/models/my model.gguf", "--port", "9001")
    assert s.model == "/models/my model.gguf" and s.port == 9001
    assert "'/models/my model.gguf'" in s.command_line()
