"""Settings as data: --help, environment variables, flags, the token command, the README."""

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import time

import jwt
import pytest

from server import build_parser, main
from tidings import config
from tidings.config import SETTINGS

from .clients import SECRET, Api, ServerProcess, WSClient, token
from .conftest import ROOT


def run(*argv: str, env: dict[str, str] | None = None, timeout: float = 20):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    return subprocess.run([sys.executable, str(ROOT / "server.py"), *argv], cwd=ROOT,
                          env={**clean, "COLUMNS": "250", **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def sample(setting: config.Setting, n: int) -> str:
    """A raw value the setting's kind accepts; n picks one of two different ones."""
    if setting.kind in (int, config._port):
        return str(4000 + n)
    if setting.kind in (float, config._seconds):
        return str(2.5 + n)
    if setting.kind is config._origins:
        return f"https://app{n}.example,https://other{n}.example"
    if setting.name == "synchronous":
        return ("normal", "full")[n]
    if setting.name == "log_level":
        return ("debug", "warning")[n]
    if setting.name == "log_format":
        return ("text", "json")[n]
    if setting.name == "event_loop":
        return ("asyncio", "uvloop")[n]
    if setting.kind is config._public_url:
        return f"https://notify{n}.example.com"
    return f"value-{n}"


VALUED = [s for s in SETTINGS if not s.flag_only]


def test_every_setting_is_in_help_with_its_env_var():
    result = run("--help")
    assert result.returncode == 0
    text = result.stdout
    for s in SETTINGS:
        assert re.search(rf"{re.escape(s.flag)}\b", text), s.flag
        if not s.flag_only:
            assert s.env in text, s.env


def cli(capsys, *argv: str) -> tuple[str, str]:
    """server.main in this process (the same code as the command, without a new interpreter)."""
    main(list(argv))
    out = capsys.readouterr()
    return out.out, out.err


@pytest.fixture
def no_tidings_env(monkeypatch):
    for name in [k for k in os.environ if k.startswith("TIDINGS_")]:
        monkeypatch.delenv(name)


def test_the_token_command_has_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli(capsys, "token", "--help")
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--tenant", "--user", "--role", "--ttl"):
        assert flag in out


@pytest.mark.parametrize("setting", VALUED, ids=lambda s: s.name)
def test_env_var_sets_it_and_the_flag_wins(setting):
    no_flags = build_parser().parse_args([])
    from_env = config.load(no_flags, {setting.env: sample(setting, 0)})
    assert getattr(from_env, setting.name) == setting.kind(sample(setting, 0))
    flagged = build_parser().parse_args([setting.flag, sample(setting, 1)])
    both = config.load(flagged, {setting.env: sample(setting, 0)})
    assert getattr(both, setting.name) == setting.kind(sample(setting, 1))
    assert getattr(config.load(no_flags, {}), setting.name) == setting.default


def test_dev_is_a_switch():
    assert config.load(build_parser().parse_args(["--dev"]), {}).dev is True
    assert config.load(build_parser().parse_args([]), {}).dev is False


def test_a_bad_value_names_the_setting():
    with pytest.raises(SystemExit, match="--port / TIDINGS_PORT"):
        config.load(argparse.Namespace(port="eighty"), {})


def test_settings_table_and_dataclass_agree():
    fields = {f.name: f.default for f in config.Settings.__dataclass_fields__.values()}
    assert {s.name: s.default for s in SETTINGS} == fields


def test_no_secret_and_no_dev_refuses_to_start(tmp_path, no_tidings_env, capsys):
    with pytest.raises(SystemExit) as e:
        cli(capsys, "--db", str(tmp_path / "t.db"), "--port", "0")
    assert e.value.code not in (0, None) and "--jwt-secret" in str(e.value.code)


@pytest.mark.gen_test(timeout=20)
async def test_the_token_command_prints_a_token_the_server_accepts(server, api, capsys,
                                                                  monkeypatch):
    printed = run("token", "--tenant", "acme", "--user", "root", "--role", "admin",
                  "--ttl", "120", "--jwt-secret", SECRET)
    assert printed.returncode == 0, printed.stderr
    tok = printed.stdout.strip()
    claims = jwt.decode(tok, SECRET, algorithms=["HS256"])
    assert (claims["tenant_id"], claims["sub"], claims["role"]) == ("acme", "root", "admin")
    assert abs(claims["exp"] - (time.time() + 120)) < 10
    # An admin token sees the tenant's connections, not only its own.
    body = await api.json("GET", "/api/notifications/connections", tok=tok)
    assert body["tenant_id"] == "acme"
    monkeypatch.setenv("TIDINGS_JWT_SECRET", SECRET)
    from_env = cli(capsys, "token", "--tenant", "acme", "--user", "bob")[0].strip()
    assert (await api.call("GET", "/api/notifications", tok=from_env)).code == 200
    wrong = cli(capsys, "token", "--tenant", "acme", "--user", "bob",
                "--jwt-secret", "another-secret-entirely-000000000000")[0].strip()
    assert (await api.call("GET", "/api/notifications", tok=wrong)).code == 401


def test_the_token_command_without_a_secret_fails(tmp_path, no_tidings_env, capsys):
    with pytest.raises(SystemExit) as e:
        cli(capsys, "token", "--tenant", "acme", "--user", "bob", "--db", str(tmp_path / "t.db"))
    assert e.value.code != 0 and "--jwt-secret" in capsys.readouterr().err


@pytest.mark.gen_test(timeout=30)
async def test_the_server_takes_its_settings_from_the_environment(tmp_path):
    server = ServerProcess(str(tmp_path / "t.db"))
    secret = "from-the-environment-secret-0123456789"
    server.argv = []
    server.env = {"TIDINGS_PORT": str(server.port), "TIDINGS_DB": str(tmp_path / "t.db"),
                  "TIDINGS_JWT_SECRET": secret}
    await server.start()
    try:
        api = Api(server.port)
        assert (await api.call("GET", "/api/notifications",
                               tok=token(secret=secret))).code == 200
        assert (await api.call("GET", "/api/notifications", tok=token())).code == 401
    finally:
        await server.kill()


@pytest.mark.gen_test(timeout=30)
async def test_dev_makes_a_secret_and_prints_a_sample_token(tmp_path, capsys,
                                                            no_tidings_env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    probe = ServerProcess(str(tmp_path / "t.db"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "server.py"), "--dev", "--port", str(probe.port), "--db",
        str(tmp_path / "t.db"), cwd=ROOT, env=clean, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        sample_token = None
        while sample_token is None:
            line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
            assert line, "exited without printing a token"
            if line.strip().startswith("eyJ"):
                sample_token = line.strip()
        assert (await Api(probe.port).call("GET", "/api/notifications",
                                           tok=sample_token)).code == 200
        # The token command agrees with the kept development secret.
        minted = cli(capsys, "token", "--dev", "--tenant", "demo", "--user", "x", "--db",
                     str(tmp_path / "t.db"))[0].strip()
        assert (await Api(probe.port).call("GET", "/api/notifications", tok=minted)).code == 200
    finally:
        proc.kill()
        await proc.wait()


def test_readme_settings_table_is_generated_from_the_settings():
    readme = ROOT / "README.md"
    if not readme.exists() or "<!-- settings:start -->" not in readme.read_text():
        pytest.skip("the README has no generated settings table yet")
    text = readme.read_text()
    table = text.split("<!-- settings:start -->")[1].split("<!-- settings:end -->")[0].strip()
    assert table == config.flags_table(), "regenerate it from tidings.config.flags_table()"


def test_a_taken_port_stops_the_start_at_once_naming_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("--port", str(port), "--db", str(tmp_path / "t.db"), "--jwt-secret", SECRET)
    assert result.returncode != 0
    assert f"127.0.0.1:{port}" in result.stderr and "in use" in result.stderr
    assert not (tmp_path / "t.db").exists()  # nothing was opened


def test_a_port_out_of_range_is_refused_naming_the_flag(tmp_path):
    result = run("--port", "99999", "--db", str(tmp_path / "t.db"), "--jwt-secret", SECRET)
    assert result.returncode != 0 and "--port" in result.stderr and "99999" in result.stderr


def test_the_token_command_offers_only_what_it_reads(capsys):
    with pytest.raises(SystemExit):
        cli(capsys, "token", "--help")
    out = capsys.readouterr().out
    assert "--jwt-secret" in out and "--dev" in out and "--heartbeat" not in out


def test_public_url_must_be_an_http_url():
    for bad in ("notify.example.com", "ftp://notify.example.com", "https://x.example/?a=1"):
        with pytest.raises(SystemExit, match="--public-url"):
            config.load(build_parser().parse_args(["--public-url", bad]), {})
    good = config.load(build_parser().parse_args(["--public-url", "https://x.example/t/"]), {})
    assert good.public_url == "https://x.example/t"


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
@pytest.mark.gen_test(timeout=30)
async def test_the_server_runs_on_either_event_loop(tmp_path, event_loop, no_tidings_env):
    probe = ServerProcess(str(tmp_path / "t.db"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "server.py"), *probe.argv, "--event-loop", event_loop,
        cwd=ROOT, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
    try:
        line = ""
        while "listening on" not in line:
            line = (await asyncio.wait_for(proc.stderr.readline(), 15)).decode()
            assert line, "exited before listening"
        assert f", {event_loop})" in line
        ws = await WSClient.open(probe.port, token())
        sent = await Api(probe.port).send(token(user="svc", role="service"), user_id="alice",
                                          title="on " + event_loop)
        assert (await ws.next_of("notification"))["notification"] == sent["notification"]
        ws.close()
    finally:
        proc.kill()
        await proc.wait()
