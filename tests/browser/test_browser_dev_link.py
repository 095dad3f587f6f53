"""`--dev` from the first command: the one-time dashboard link it prints, opened in Chromium."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"one-time login link \(1 h\): (http://\S+/admin/login\?once=\S+)")
WAIT = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def printed_link(proc: subprocess.Popen[bytes], timeout: float = WAIT) -> str:
    """Reads the server's output as it comes, within `timeout`, up to the login link. Raw
    reads of the pipe: a buffered reader could hold the link while select() sees nothing."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    printed = ""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            assert left > 0 and sel.select(left), f"no login link within {timeout}s: {printed}"
            chunk = os.read(fd, 65536).decode()
            assert chunk, f"the server exited without printing a login link: {printed}"
            printed += chunk
            found = LINK.search(printed)
            if found:
                return found.group(1)


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python server.py --dev` in a temporary data folder; yields (printed link, process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    proc = subprocess.Popen(
        [sys.executable, "-u", str(ROOT / "server.py"), "--dev", "--port", str(free_port()),
         "--db", str(tmp_path / "data" / "tidings.db"),
         "--vapid-key", str(tmp_path / "data" / "vapid.pem")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        yield printed_link(proc), proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_the_printed_dev_link_logs_in_once(browser, page, dev_server, tmp_path) -> None:
    link, _proc = dev_server
    base = link.split("/admin/")[0]
    # The password it made is kept beside the database, not in the repository's data/.
    assert (tmp_path / "data" / "dev-admin-password").exists()

    page.goto(link)
    page.wait_for_url(f"{base}/admin")
    assert page.inner_text("h1") == "Overview"
    assert page.is_visible("text=Log out")

    # Opened again, in a browser that never logged in: refused, and the dashboard stays shut.
    other = browser.new_context()
    try:
        again = other.new_page()
        response = again.goto(link)
        assert response is not None and response.status == 400
        assert "used already" in again.inner_text("#login-error")
        again.goto(f"{base}/admin")
        assert again.url.startswith(f"{base}/admin/login")
        assert again.is_visible("#password")
    finally:
        other.close()
