"""/metrics as a scraper reads it (prometheus_client's own parser), against a real server:
pushes observed once per notification, delivery outcomes, connections opened and closed by
reason, each server's own registry; and the Grafana dashboard names only served series."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tidings.config import Secret

from .clients import Api, SSEClient, WSClient, eventually, raw_websocket, token
from .conftest import ROOT
from .deliveries import SENDER, notify, profile, settled
from .test_slow_clients import PAD, raw_sse

pytest_plugins = ["tests.peers.fixtures"]

SERVICE = token(user="backend", role="service")
ALICE, BOB = token(user="alice"), token(user="bob")
DASHBOARD = ROOT / "contrib" / "grafana" / "tidings.json"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(api: Api) -> Samples:
    """Every sample /metrics serves, by name and labels."""
    response = await api.call("GET", "/metrics")
    assert response.code == 200, response.code
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.body.decode())
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.mark.gen_test(timeout=20)
async def test_each_push_is_observed_once_and_the_fan_out_sums_to_what_was_pushed(server, api):
    before = await scrape(api)
    alice1, alice2 = await WSClient.open(server.port, ALICE), await WSClient.open(server.port, ALICE)
    bob = await WSClient.open(server.port, BOB)
    await api.send(SERVICE, user_id="alice", title="to alice")               # 2 connections
    await api.send(SERVICE, broadcast=True, title="to everyone")             # 3
    await api.send(SERVICE, user_ids=["alice", "bob", "carol"], title="3")   # 2 + 1 + 0
    pushed = (len(await alice1.notifications(3)) + len(await alice2.notifications(3))
              + len(await bob.notifications(2)))
    after = await scrape(api)

    assert pushed == 8
    assert grew(before, after, "tidings_fanout_connections_count") == 5  # notifications
    assert grew(before, after, "tidings_fanout_connections_sum") == pushed
    assert grew(before, after, "tidings_fanout_connections_bucket", le="0.0") == 1  # carol
    assert grew(before, after, "tidings_commit_to_push_seconds_count") == 5
    assert grew(before, after, "tidings_commit_to_push_seconds_bucket", le="+Inf") == 5
    assert 0 <= grew(before, after, "tidings_commit_to_push_seconds_sum") < 5
    assert grew(before, after, "tidings_commit_duration_seconds_count") == 3  # one per batch
    assert grew(before, after, "tidings_connections_opened_total", transport="websocket") == 3
    # The series that were here before stay, with their meaning.
    assert value(after, "tidings_notifications_created_total") == 5
    assert value(after, "tidings_deliveries_total") == 8
    assert value(after, "tidings_connections", tenant="acme", transport="websocket") == 3
    assert value(after, "process_resident_memory_bytes") > 0
    for client in (alice1, alice2, bob):
        client.close()


@pytest.mark.gen_test(timeout=20)
async def test_every_server_counts_only_its_own(start_server):
    one, other = await start_server(), await start_server()
    ws = await WSClient.open(one.port, ALICE)
    await Api(one.port).send(SERVICE, user_id="alice", title="here")
    await ws.notifications(1)
    assert value(await scrape(Api(one.port)), "tidings_fanout_connections_sum") == 1
    quiet = await scrape(Api(other.port))
    assert value(quiet, "tidings_fanout_connections_count") == 0
    assert value(quiet, "tidings_connections_opened_total", transport="websocket") == 0
    ws.close()


def closes(samples: Samples, transport: str, reason: str) -> float:
    return value(samples, "tidings_connections_closed_total", transport=transport, reason=reason)


@pytest.mark.gen_test(timeout=40)
async def test_closes_are_counted_by_why(start_server):
    server = await start_server(max_pending_kib=64)
    api, registry = Api(server.port), server.services.registry
    ws, sse = await WSClient.open(server.port, ALICE), await SSEClient.open(server.port, ALICE)
    await sse.next_of("connected")
    ws.close()
    sse.close()

    async def counted(transport: str, reason: str, n: int = 1) -> bool:
        return closes(await scrape(api), transport, reason) == n
    await eventually(lambda: counted("websocket", "client"))
    await eventually(lambda: counted("sse", "client"))

    # A reader that never reads is dropped as slow once its output bound overflows.
    stuck = await raw_sse(server.port, BOB)
    await eventually(lambda: registry.stats("acme", "bob")["total"] == 1)
    bob = next(iter(registry.user("acme", "bob")))
    sent = 0
    while not bob.closed and sent < 400:
        await api.send(SERVICE, user_id="bob", title=str(sent), data={"pad": PAD})
        sent += 1
    assert bob.closed, "the slow client was never dropped"
    await eventually(lambda: counted("sse", "slow"))
    stuck.close()

    # Shutdown: the last scrape is the registry's own, the server no longer answers.
    last = await WSClient.open(server.port, ALICE)
    await server.stop()
    last.close()
    metrics = server.services.metrics.registry
    assert metrics.get_sample_value("tidings_connections_closed_total",
                                    {"transport": "websocket", "reason": "shutdown"}) == 1
    assert metrics.get_sample_value("tidings_connections_opened_total",
                                    {"transport": "websocket"}) == 2
    assert metrics.get_sample_value("tidings_connections_closed_total",
                                    {"transport": "websocket", "reason": "client"}) == 1


@pytest.mark.gen_test(timeout=20)
async def test_a_peer_that_leaves_a_ping_unanswered_is_counted_as_dead(start_server):
    server = await start_server(heartbeat=0.3)
    api = Api(server.port)
    dead = await raw_websocket(server.port, BOB)

    async def counted() -> bool:
        return closes(await scrape(api), "websocket", "dead_peer") == 1
    # Tornado waits 5 s for the close handshake before it gives up on the peer.
    await eventually(counted, timeout=12, step=0.2)
    assert closes(await scrape(api), "websocket", "client") == 0
    dead.close()


@pytest.mark.gen_test(timeout=20)
async def test_channel_delivery_outcomes_are_counted_by_channel_and_status(smtp_peer,
                                                                         start_server):
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER)
    api = Api(server.port)
    before = await scrape(api)
    assert ("tidings_channel_deliveries_total",
            frozenset({"channel": "email", "status": "sent"}.items())) in before  # from zero
    await profile(api, email="alice@example.com")
    sent = await notify(api, title="mail")
    skipped = await notify(api, user_id="bob", title="bob has no address")
    [d] = await settled(api, sent)
    assert d["status"] == "sent"
    [d] = await settled(api, skipped)
    assert d["status"] == "skipped"
    await smtp_peer.inbox.arrived(1)

    async def counted() -> bool:
        after = await scrape(api)
        return (grew(before, after, "tidings_channel_deliveries_total", channel="email",
                     status="sent"),
                grew(before, after, "tidings_channel_deliveries_total", channel="email",
                     status="skipped")) == (1, 1)
    await eventually(counted)
    after = await scrape(api)
    assert grew(before, after, "tidings_channel_deliveries_total", channel="email",
                status="failed") == 0


# --- the Grafana dashboard ------------------------------------------------------------------

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                "or", "unless", "offset", "inf", "nan"}


def series_of(expr: str) -> set[str]:
    """The series a PromQL expression reads: what is left of its identifiers once strings,
    label matchers, ranges, groupings, numbers and function names are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"(?<![\w:])\d[\w.]*", " ", expr)  # numbers and durations (offset 5m)
    names = re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", expr)
    return {name for name, call in names if not call and name.lower() not in PROMQL_WORDS}


def test_series_of_reads_promql():
    assert series_of('histogram_quantile(0.99, sum by (le) (rate(a_bucket{x=~"$i"}[5m])))') \
        == {"a_bucket"}
    assert series_of("sum(rate(b_sum[$__rate_interval])) / sum(rate(b_count[1m]))") == \
        {"b_sum", "b_count"}
    assert series_of('max by (t) (sum by (i, t) (c{i="{a}"})) offset 5m') == {"c"}


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    exprs = []
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert panel["targets"], panel["title"]
        exprs += [target["expr"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        exprs += re.findall(r"label_values\((\w+)", variable["definition"])
    return exprs


@pytest.mark.gen_test(timeout=20)
async def test_every_series_of_the_grafana_dashboard_is_served(smtp_peer, start_server):
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER)
    api = Api(server.port)
    await profile(api, email="alice@example.com")
    ws = await WSClient.open(server.port, ALICE)
    await settled(api, await notify(api, title="some traffic"))
    await ws.notifications(1)
    served = {name for name, _labels in await scrape(api)}  # with a connection open
    ws.close()

    wanted: set[str] = set()
    for expr in dashboard_queries():
        wanted |= series_of(expr)
    missing = wanted - served
    assert not missing, f"the dashboard reads series /metrics does not serve: {missing}"
    # It shows what it is for: latency quantiles over buckets, outcomes, closes, the process.
    for name in ("tidings_commit_to_push_seconds_bucket", "tidings_commit_duration_seconds_bucket",
                 "tidings_fanout_connections_bucket", "tidings_channel_deliveries_total",
                 "tidings_connections_closed_total", "tidings_connections_opened_total",
                 "tidings_notifications_created_total", "tidings_connections",
                 "process_resident_memory_bytes", "process_cpu_seconds_total"):
        assert name in wanted, name
