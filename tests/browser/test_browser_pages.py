"""The templates, demo.js and admin.js in headless Chromium, served by the stub with sample data.

These check the pages' own behaviour (live updates in place, badge, toasts, empty states) and
save the screenshots in test-artifacts/. The same flows against the real server are in
test_browser_server.py.
"""

from __future__ import annotations

import time

import pytest

PHONE = {"width": 390, "height": 844}


def tenant(tenant_id: str, ws: int, sse: int, users: int, sent: int, delivered: int) -> dict:
    return {"tenant_id": tenant_id, "websocket": ws, "sse": sse, "users_online": users,
            "sent_last_minute": sent, "delivered_last_minute": delivered}


def sample_overview(acme_ws: int = 2) -> dict:
    tenants = [tenant("acme", acme_ws, 1, 2, 14, 13), tenant("globex", 5, 0, 4, 3, 3),
               tenant("initech", 0, 2, 1, 0, 0)]
    now = int(time.time())
    history = [{"t": now - 60 * (60 - i), "connections": 6 + (i % 7) + i // 6, "sent": (i * 7) % 23}
               for i in range(61)]
    return {"tenants": tenants, "global": {"websocket": acme_ws + 5, "sse": 3, "total": acme_ws + 8},
            "history": history}


def cell(page, tenant_id: str, field: str) -> str:
    return page.inner_text(f'#tenant-rows tr[data-tenant="{tenant_id}"] [data-field="{field}"]')


def test_overview_updates_in_place_without_reload(page, stub, screenshot) -> None:
    stub.overview = sample_overview()
    page.goto(f"{stub.url}/admin")
    page.wait_for_selector('#live-status[data-state="live"]')
    page.evaluate("window.notReloaded = true")
    assert cell(page, "acme", "websocket") == "2"

    stub.push_overview({**sample_overview(acme_ws=3),
                        "tenants": sample_overview(acme_ws=3)["tenants"] + [tenant("umbrella", 1, 0, 1, 0, 0)]})
    page.wait_for_function(
        """() => document.querySelector('#tenant-rows tr[data-tenant="acme"] [data-field="websocket"]')
                 .textContent === '3'""")
    assert cell(page, "umbrella", "users_online") == "1"
    assert page.inner_text('[data-global] [data-field="total"]') == "11"
    assert page.evaluate("window.notReloaded") is True
    assert page.locator("#chart canvas").count() >= 1
    screenshot(page, "overview")

    page.set_viewport_size(PHONE)
    screenshot(page, "overview-phone")


def test_overview_empty_state_and_first_tenant(page, stub, screenshot) -> None:
    page.goto(f"{stub.url}/admin")
    page.wait_for_selector('#live-status[data-state="live"]')
    assert page.is_visible("#tenants-empty")
    assert "No tenants yet" in page.inner_text("#tenants-empty")
    screenshot(page, "overview-empty")

    stub.push_overview(sample_overview())
    page.wait_for_selector("#tenants-table:not([hidden])")
    assert not page.is_visible("#tenants-empty")
    assert page.locator("#tenant-rows tr").count() == 3


def test_overview_reconnects_its_socket(page, stub) -> None:
    stub.overview = sample_overview()
    page.goto(f"{stub.url}/admin")
    page.wait_for_selector('#live-status[data-state="live"]')
    stub.stop()
    page.wait_for_selector('#live-status[data-state="offline"]')
    stub.overview = sample_overview(acme_ws=9)
    stub.start()
    page.wait_for_selector('#live-status[data-state="live"]', timeout=20_000)
    page.wait_for_function(
        """() => document.querySelector('#tenant-rows tr[data-tenant="acme"] [data-field="websocket"]')
                 .textContent === '9'""")


def test_tenant_page(page, stub, screenshot) -> None:
    stub.overview = sample_overview()
    stub.page_context["admin_tenant.html"] = {
        "tenant": sample_overview()["tenants"][0],
        "users": [
            {"user_id": "alice", "connections": [
                {"transport": "websocket", "since": "2026-11-24T03:58:00Z", "client": "127.0.0.1",
                 "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0 Safari/537.36"},
                {"transport": "sse", "since": "2026-11-24T04:01:10Z", "client": "10.0.0.8",
                 "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Mobile/15E148"}]},
            {"user_id": "bob", "connections": [
                {"transport": "websocket", "since": "2026-11-24T04:02:00Z", "client": "10.0.0.9",
                 "user_agent": "curl/8.5.0"}]},
        ],
        "notifications": [
            {"id": 43, "user_id": None, "type": "warning", "title": "Maintenance at 22:00",
             "message": "The API will be read-only for ten minutes.", "priority": "high",
             "created_at": "2026-11-24T04:03:00Z", "read_at": None, "delivery": {"websocket": 2, "sse": 1},
             "deliveries": [{"channel": "email", "status": "held", "last_error": "quiet hours"}]},
            {"id": 42, "user_id": "alice", "type": "info", "title": "Build finished",
             "message": "main is green", "priority": "normal", "created_at": "2026-11-24T04:00:00Z",
             "read_at": "2026-11-24T04:00:05Z", "delivery": {"websocket": 1, "sse": 0},
             "deliveries": [{"channel": "email", "status": "sent", "last_error": None},
                            {"channel": "webhook", "status": "failed", "last_error": "HTTP 500"}]},
        ],
        "sent": "Sent #43 to 3 live connections.",
    }
    page.goto(f"{stub.url}/admin/tenants/acme")
    page.wait_for_selector('#live-status[data-state="live"]')
    assert page.locator("#users tbody tr").count() == 3
    assert page.locator("#notifications tbody tr").count() == 2
    assert page.input_value('#send-form input[name="_xsrf"]') == "x"
    stub.push_overview(sample_overview(acme_ws=7))
    page.wait_for_function(
        """() => document.querySelector('[data-tenant="acme"] [data-field="websocket"]').textContent === '7'""")
    screenshot(page, "tenant")
    page.set_viewport_size(PHONE)
    screenshot(page, "tenant-phone")


def test_login_page(page, stub, screenshot) -> None:
    stub.page_context["login.html"] = {"error": "Wrong password."}
    page.goto(f"{stub.url}/admin/login")
    assert page.inner_text("#login-error") == "Wrong password."
    assert page.locator('form input[name="_xsrf"]').count() == 1
    screenshot(page, "login")


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_demo_inbox_badge_toast_and_mark_read(page, stub, screenshot, transport) -> None:
    stub.publish("Welcome to tidings", type="success", message="This one came from the inbox list.",
                 read_at="2026-11-24T04:00:00Z")
    stub.publish("Your export is ready", message="report-2026-11.csv (2.4 MB)")
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{stub.url}/demo?token=test-token&tenant_id=acme&transport={transport}")
    page.wait_for_selector(f'#conn-status[data-state="live"][data-transport="{transport}"]')
    assert page.inner_text("#unread-count") == "1"
    assert page.locator("#inbox li").count() == 2

    live = stub.publish("Build failed", type="error", priority="high", message="main: 3 tests failed")
    page.wait_for_selector(f'#inbox li[data-id="{live["id"]}"]')
    assert page.get_attribute("#inbox li:first-child", "data-id") == str(live["id"])
    assert page.inner_text("#unread-count") == "2"
    assert "Build failed" in page.inner_text("#toasts")
    # The first screen came from the connection's snapshot, with no REST call for it.
    assert stub.cursors == [(transport, None)] and "snapshot=50" in stub.stream_uris[0]
    assert not [u for u in requests if "/api/notifications" in u and "/stream" not in u]
    screenshot(page, f"demo-{transport}")

    page.click(f'#inbox li[data-id="{live["id"]}"] [data-action="read"]')
    page.wait_for_selector('#unread-count[data-count="1"]')
    page.wait_for_function("window.tidingsDemo.serverStats?.unread === 1")  # the stub's stats_update
    assert live["id"] in stub.read_ids

    with page.expect_response("**/api/notifications/read-all") as answer:
        page.click("#mark-all")
    assert answer.value.status == 204
    page.wait_for_selector('#unread-count[data-count="0"]')
    assert page.locator("#inbox li.unread").count() == 0


def test_demo_phone_and_setup(page, stub, screenshot) -> None:
    page.set_viewport_size(PHONE)
    page.goto(f"{stub.url}/demo")
    assert page.is_visible("#setup")
    screenshot(page, "demo-setup-phone")
    page.goto(f"{stub.url}/demo?token=test-token&tenant_id=acme")
    page.wait_for_selector('#conn-status[data-state="live"]')
    assert page.is_visible("#inbox-empty")
    stub.publish("Hello on a phone", message="Toasts fit a 390 px screen.")
    page.wait_for_selector("#toasts .toast")
    screenshot(page, "demo-phone", full_page=False)


def test_demo_threads_and_action_buttons(page, stub, screenshot) -> None:
    actions = [{"label": "Open build", "url": "https://ci.example.com/b/7"},
               {"label": "Logs", "url": "https://ci.example.com/b/7/log"}]
    first = stub.publish("Build 7 running", group="build-7")
    other = stub.publish("Lunch is served")
    page.goto(f"{stub.url}/demo?token=test-token&tenant_id=acme")
    page.wait_for_selector('#conn-status[data-state="live"]')
    live = stub.publish("Build 7 passed", type="success", group="build-7", actions=actions)
    page.wait_for_selector(f'#inbox li[data-id="{live["id"]}"]')
    links = page.locator(f'#inbox li[data-id="{live["id"]}"] a[data-action="link"]')
    assert links.count() == 2
    assert [links.nth(i).get_attribute("href") for i in range(2)] == [a["url"] for a in actions]
    assert links.nth(0).inner_text() == "Open build"
    assert links.nth(0).get_attribute("rel") == "noopener noreferrer"
    # a thread's chip shows only that thread; again, everything
    page.click(f'#inbox li[data-id="{live["id"]}"] [data-action="thread"]')
    assert page.is_hidden(f'#inbox li[data-id="{other["id"]}"]')
    assert page.is_visible(f'#inbox li[data-id="{first["id"]}"]')
    assert page.inner_text("#inbox-count") == "thread build-7"
    screenshot(page, "demo-thread")
    page.click(f'#inbox li[data-id="{first["id"]}"] [data-action="thread"]')
    assert page.is_visible(f'#inbox li[data-id="{other["id"]}"]')
