"""Serving the exporter for real: listen policy, web-config, TLS and basic auth over sockets, and
`llmtop agent --listen` end to end against a real llama-server (its API key never served)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest

from llmtop.agent.exporter import MetricsExporter
from llmtop.agent.exporter_http import (
    ExporterConfigError,
    ExporterServer,
    ListenAddress,
    is_loopback,
    listen_refusal,
    load_web_config,
    parse_listen,
)
from tests.conftest import missing_component
from tests.exporter_procs import agent_argv, start_agent, stop_pid, wait_for
from tests.realserver import RunningServer, free_port
from tests.test_exporter import snapshot

KEY = "sk-agent-key-ABCDEFGHIJ0123456789"


# ------------------------------------------------------------------------------ listen policy
@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:9464", "127.0.0.1", 9464),
        ("[::1]:9464", "::1", 9464),
        (":9464", "", 9464),
        ("9464", "127.0.0.1", 9464),
        ("0.0.0.0:0", "0.0.0.0", 0),
        ("localhost:9", "localhost", 9),
    ],
)
def test_parse_listen(text: str, host: str, port: int) -> None:
    assert parse_listen(text) == ListenAddress(host, port)


@pytest.mark.parametrize(
    "text", ["127.0.0.1", "host:port", "::1:9464", "[::1]9464", "1.2.3.4:70000"]
)
def test_parse_listen_refuses_in_words(text: str) -> None:
    with pytest.raises(ExporterConfigError, match="--listen"):
        parse_listen(text)


def test_loopback_is_allowed_anything_else_needs_a_web_config_or_insecure() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("") and not is_loopback("0.0.0.0") and not is_loopback("10.0.0.7")
    assert listen_refusal(parse_listen("127.0.0.1:9464"), web_config=None, insecure=False) is None
    for text in ("0.0.0.0:9464", ":9464", "10.0.0.7:9464", "[::]:9464"):
        why = listen_refusal(parse_listen(text), web_config=None, insecure=False)
        assert why is not None and "--web-config" in why and "--insecure-listen" in why, why
        assert listen_refusal(parse_listen(text), web_config="w.yml", insecure=False) is None
        assert listen_refusal(parse_listen(text), web_config=None, insecure=True) is None


# ------------------------------------------------------------------------------ web config
@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made by the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        missing_component("openssl CLI (self-signed certificate for the TLS tests)")
    assert openssl is not None
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "server.crt", d / "server.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def bcrypt_hash(password: str, *, prefix: str = "$2y$") -> str:
    """As `htpasswd -nBC 4` writes it ($2y$), which exporter-toolkit reads too."""
    h = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return prefix + h[4:]


def trust(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("basic_auth_user:\n  a: x\n", "unknown key"),
        ("tls_server_config:\n  cert_file: server.crt\n", "needs both cert_file and key_file"),
        ("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n", "not found"),
        ("basic_auth_users:\n  prometheus: plaintext\n", "not a bcrypt hash"),
        ("{}\n", "neither tls_server_config nor basic_auth_users"),
        ("tls_server_config: [1\n", "not valid YAML"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
         "  client_auth_type: RequireAnyClientCert\n", "not supported"),
    ],
)  # fmt: skip
def test_web_config_errors_in_words(
    tmp_path: Path, tls_files: tuple[Path, Path], text: str, words: str
) -> None:
    shutil.copy(tls_files[0], tmp_path / "server.crt")
    shutil.copy(tls_files[1], tmp_path / "server.key")
    with pytest.raises(ExporterConfigError, match=words):
        load_web_config(write(tmp_path / "web.yml", text))


def test_web_config_paths_relative_to_the_file(
    tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    shutil.copy(tls_files[0], tmp_path / "server.crt")
    shutil.copy(tls_files[1], tmp_path / "server.key")
    cfg = load_web_config(
        write(
            tmp_path / "web.yml",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            f"basic_auth_users:\n  prometheus: '{bcrypt_hash('pw')}'\n",
        )
    )
    assert cfg.tls is not None and cfg.tls.cert_file == tmp_path / "server.crt"
    assert set(cfg.users) == {"prometheus"}


# ------------------------------------------------------------------------------ real sockets
@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[str | None], ExporterServer]]:
    """Start an ExporterServer on 127.0.0.1:<free> for a web-config text; stopped at teardown."""
    started: list[ExporterServer] = []

    def start(web_text: str | None) -> ExporterServer:
        exp = MetricsExporter(mode="attach")
        exp.on_snapshot(snapshot())
        web = load_web_config(write(tmp_path / "web.yml", web_text)) if web_text else None
        srv = ExporterServer(exp.registry(), ListenAddress("127.0.0.1", 0), web)
        started.append(srv)
        srv.start()
        return srv

    yield start
    for srv in started:
        srv.stop()


def test_plain_http_serves_metrics_only_at_metrics(
    serve: Callable[[str | None], ExporterServer],
) -> None:
    srv = serve(None)
    base = f"http://127.0.0.1:{srv.port}"
    r = httpx.get(base + "/metrics")
    assert r.status_code == 200 and "llmtop_gpu_temperature_celsius" in r.text
    assert r.headers["content-type"].startswith("text/plain")
    assert httpx.get(base + "/").status_code == 200
    assert httpx.get(base + "/debug").status_code == 404
    # text format 0.0.4 whatever Prometheus prefers (as Go exporters by default), gzipped
    om = httpx.get(base + "/metrics", headers={"Accept": "application/openmetrics-text"})
    assert om.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert om.headers["content-encoding"] == "gzip" and "llmtop_info" in om.text


def test_tls_and_basic_auth_for_real(
    serve: Callable[[str | None], ExporterServer], tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    srv = serve(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"basic_auth_users:\n  prometheus: '{bcrypt_hash('s3cret')}'\n"
        f"  other: '{bcrypt_hash('x', prefix='$2b$')}'\n"
    )
    assert srv.scheme == "https"
    url = f"https://127.0.0.1:{srv.port}/metrics"
    ok = httpx.get(url, verify=trust(cert), auth=("prometheus", "s3cret"))
    assert ok.status_code == 200 and "llmtop_info" in ok.text
    assert httpx.get(url, verify=trust(cert), auth=("other", "x")).status_code == 200
    # the cached credential still needs the right password
    wrong = httpx.get(url, verify=trust(cert), auth=("prometheus", "s3cret-not"))
    assert wrong.status_code == 401 and "llmtop_" not in wrong.text
    assert wrong.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(url, verify=trust(cert)).status_code == 401
    assert httpx.get(url, verify=trust(cert), auth=("nobody", "s3cret")).status_code == 401
    assert httpx.get(f"https://127.0.0.1:{srv.port}/", verify=trust(cert)).status_code == 401
    # plain HTTP to the TLS port gets no metrics
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{srv.port}/metrics", auth=("prometheus", "s3cret"))
    # a client that does not trust the certificate refuses it
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, auth=("prometheus", "s3cret"))


def test_tls_only_and_a_stalled_handshake_blocks_nobody(
    serve: Callable[[str | None], ExporterServer], tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    srv = serve(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS13\n"
    )
    # a client that connects and never says hello
    with socket.create_connection(("127.0.0.1", srv.port)):
        t0 = time.monotonic()
        r = httpx.get(f"https://127.0.0.1:{srv.port}/metrics", verify=trust(cert), timeout=5.0)
        assert r.status_code == 200
        assert time.monotonic() - t0 < 2.0
    # TLS 1.2 is below the configured minimum
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://127.0.0.1:{srv.port}/metrics", verify=ctx)


# ------------------------------------------------------------------------------ llmtop agent
def run_agent(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(agent_argv(*args), capture_output=True, text=True, timeout=timeout_s,
                          cwd=Path(__file__).resolve().parents[1])  # fmt: skip


def test_agent_refuses_a_non_loopback_listen_naming_both_ways_out() -> None:
    r = run_agent("--url", "http://127.0.0.1:1", "--listen", f"0.0.0.0:{free_port()}")
    assert r.returncode == 2
    assert "--web-config" in r.stderr and "--insecure-listen" in r.stderr, r.stderr
    r = run_agent("--url", "http://127.0.0.1:1", "--web-config", "x.yml")
    assert r.returncode == 2 and "--web-config needs --listen" in r.stderr, r.stderr


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., object]]:
    started: list[object] = []

    def start(*args: str, **kw: object) -> object:
        a = start_agent(list(args), log_dir=tmp_path, **kw)  # type: ignore[arg-type]
        started.append(a)
        return a

    yield start
    for a in started:
        a.stop()  # type: ignore[attr-defined]


def test_agent_insecure_listen_and_basic_auth_on_every_interface(
    agents: Callable[..., object], tmp_path: Path
) -> None:
    dead = "http://127.0.0.1:1"
    nvml = str(tmp_path / "no-libnvidia-ml.so.1")
    port = free_port()
    agents("--url", dead, "--insecure-listen", listen=f"0.0.0.0:{port}", port=port,
           env={"LLMTOP_NVML_LIBRARY": nvml})  # fmt: skip
    wait_for(
        "the dead server's first snapshot",
        lambda: "llmtop_server_up 0.0" in httpx.get(f"http://127.0.0.1:{port}/metrics").text,
        30,
    )

    web = write(tmp_path / "web.yml", f"basic_auth_users:\n  prom: '{bcrypt_hash('pw')}'\n")
    port = free_port()
    agents("--url", dead, "--web-config", str(web), listen=f"0.0.0.0:{port}", port=port,
           env={"LLMTOP_NVML_LIBRARY": nvml})  # fmt: skip
    assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 401
    assert httpx.get(f"http://127.0.0.1:{port}/metrics", auth=("prom", "pw")).status_code == 200


def test_agent_exports_a_real_server_with_probes_and_never_its_key(
    server_factory: Callable[..., RunningServer], tmp_path: Path
) -> None:
    srv = server_factory("--metrics", api_key=KEY)
    port = free_port()
    agent = start_agent(
        ["--url", srv.url, "--api-key", KEY, "--interval", "0.5", "--probe-every", "1s",
         "--dcgm-names"],
        log_dir=tmp_path, port=port, env={"LLMTOP_NVML_LIBRARY": str(tmp_path / "none.so")},
    )  # fmt: skip
    try:

        def probed() -> str | None:
            text = httpx.get(agent.url, timeout=2.0).text
            for line in text.splitlines():
                if (
                    line.startswith("llmtop_probe_ttft_seconds_count")
                    and float(line.split()[1]) >= 2
                ):
                    return text
            return None

        text = wait_for("two probes in the histogram", probed, 60, agent.proc, agent.log_path)
        assert "llmtop_server_up 1.0" in text
        assert 'llmtop_server_state{state="ready"} 1.0' in text
        assert 'model="' in text and ".gguf" in text
        assert 'mode="attach"' in text
        assert KEY not in text and KEY[:10] not in text
        assert "llamacpp:" not in text  # llama-server's own metrics are not re-exported
        assert "node_" not in text and "process_cpu_seconds_total" not in text
        assert KEY not in agent.log()
    finally:
        status = agent.stop()
    assert status == 0, agent.log()
    # nothing listens on the port once the agent has gone (SO_REUSEADDR: TIME_WAIT may remain)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_agent_without_db_writes_no_database(tmp_path: Path, agents: Callable[..., object]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_STATE_HOME": str(home / "state"),
           "XDG_DATA_HOME": str(home / "data"), "LLMTOP_NVML_LIBRARY": str(tmp_path / "none.so")}  # fmt: skip
    agent = agents("--url", "http://127.0.0.1:1", env=env)
    wait_for(
        "a snapshot served",
        lambda: "llmtop_server_up" in httpx.get(agent.url).text,  # type: ignore[attr-defined]
        30,
    )
    assert not [p for p in home.rglob("*") if p.suffix in (".db", ".sqlite", ".sqlite3")]
    db = tmp_path / "hist.db"
    port = free_port()
    agents("--url", "http://127.0.0.1:1", "--db", str(db), port=port, env=env)
    wait_for("the database with --db", db.exists, 30)
    assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
    # stop_pid is what the fixture uses; here once more to see the exit status
    assert stop_pid(agent.proc) == 0  # type: ignore[attr-defined]


def test_print_unit_keeps_the_exporter_flags(tmp_path: Path) -> None:
    web = write(tmp_path / "web.yml", f"basic_auth_users:\n  prom: '{bcrypt_hash('pw')}'\n")
    r = run_agent("--print-unit", "--url", "http://127.0.0.1:8080", "--listen", "0.0.0.0:9464",
                  "--web-config", str(web), "--dcgm-names")  # fmt: skip
    assert r.returncode == 0, r.stderr
    exec_start = r.stdout.split("ExecStart=", 1)[1].split("\n\n", 1)[0]
    for word in ("--listen 0.0.0.0:9464", f"--web-config {web}", "--dcgm-names"):
        assert word in exec_start, exec_start
