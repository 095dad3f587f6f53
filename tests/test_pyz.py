"""scripts/build: dist/tidings.pyz, one file that runs tidings with only Python 3."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.gen_test(timeout=120)
async def test_the_pyz_builds_and_serves_with_its_templates_and_static_files(tmp_path):
    pyz = tmp_path / "tidings.pyz"
    build = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "build"), str(pyz), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(build.communicate(), 100)
    assert build.returncode == 0 and pyz.is_file(), out.decode()

    # Run from an empty folder with a clean environment: nothing of the source tree is near.
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TIDINGS_", "PYTHON", "VIRTUAL_ENV"))}
    env["SHIV_ROOT"] = str(tmp_path / "shiv")
    python3 = shutil.which("python3", path=env.get("PATH"))
    assert python3
    proc = await asyncio.create_subprocess_exec(
        python3, str(pyz), "--dev", "--port", "0", cwd=run_dir, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    try:
        lines = []
        while not lines or "listening on" not in lines[-1]:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line, "it exited: " + "".join(lines)
            lines.append(line)
        port = int(lines[-1].split("http://127.0.0.1:")[1].split(" ")[0])
        http = AsyncHTTPClient()
        base = f"http://127.0.0.1:{port}"
        health = await http.fetch(base + "/healthz", raise_error=False)
        assert health.code == 200, health.body
        script = await http.fetch(base + "/static/tidings.js", raise_error=False)
        assert script.code == 200 and b"class Tidings" in script.body
        login = await http.fetch(base + "/admin/login", raise_error=False)
        assert login.code == 200 and login.body.startswith(b"<!doctype html>")  # a template
        assert (run_dir / "data" / "tidings.db").exists()  # --dev defaults, relative to cwd
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
