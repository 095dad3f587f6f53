"""The dashboard's socket and pages, at the protocol level (the browser tests drive them too)."""

import pytest
from tornado.websocket import websocket_connect

from .clients import WAIT


@pytest.mark.gen_test
async def test_admin_socket_without_login_closes_with_4401(start_server):
    server = await start_server(admin_password="pw")
    conn = await websocket_connect(f"ws://127.0.0.1:{server.port}/admin/ws",
                                   connect_timeout=WAIT)
    assert await conn.read_message() is None
    assert conn.close_code == 4401  # the page reads it and goes to the login
    conn.close()


@pytest.mark.gen_test
async def test_admin_pages_redirect_to_login(server, api):
    response = await api.call("GET", "/admin")
    assert response.code == 200 and b"Sign in" in response.body  # followed the redirect
    assert response.effective_url.endswith("/admin/login?next=%2Fadmin")
