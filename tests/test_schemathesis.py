"""Schemathesis against /api/openapi.json of a real server, with a valid admin token: no
server error, and every response (status, content type, headers, body, SSE events) as the
document says. Bounded to about a minute: a few examples per operation."""

import asyncio
import sys

import pytest

from .clients import token

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,response_headers_conformance,unsupported_method")


@pytest.mark.gen_test(timeout=240)
async def test_schemathesis_finds_no_server_error_nor_schema_mismatch(start_server, tmp_path):
    server = await start_server(vapid_subject="mailto:ops@example.com", admin_password="pw")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; "
        "sys.exit(schemathesis())", "run",
        f"http://127.0.0.1:{server.port}/api/openapi.json",
        "-H", f"Authorization: Bearer {token(user='root', role='admin')}",
        "--checks", CHECKS, "--max-examples", "5", "--generation-deterministic",
        "--phases", "examples,coverage,fuzzing", "--no-color",
        "--report-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path)
    out, _ = await asyncio.wait_for(proc.communicate(), 220)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert "Tested: " in text
