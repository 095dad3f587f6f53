"""The OpenAPI document matches the URL table: every API route documented, nothing more.

Which routes the document must cover, by one rule: every HTTP route under `/api/`, plus the
operational `/healthz` and `/metrics`. Exempt are WebSocket routes (`/ws/notifications`,
`/admin/ws`: OpenAPI cannot describe a WebSocket; the README does) and browser pages and
files outside `/api/` (`/admin…`, `/demo`, `/static…`, `/`), which are not an API. No WebSocket
may live under `/api/`, so the rule cannot hide one there.
"""

import re

import pytest
import tornado.web
from openapi_spec_validator import validate
from tornado.websocket import WebSocketHandler

from handlers import routes

OPERATIONAL = {"/healthz", "/metrics"}
METHODS = ("get", "post", "put", "patch", "delete")


def shape(path: str) -> str:
    """A path with its parameters blanked: `/a/(\\d+)/b` and `/a/{id}/b` both give `/a/{}/b`."""
    path = re.sub(r"\([^)]*\)", "{}", path.rstrip("$"))
    return re.sub(r"\{[^}]+\}", "{}", path)


def api_routes(services) -> dict[str, set[str]]:
    """Routed API paths (shaped) and the methods their handlers implement."""
    found: dict[str, set[str]] = {}
    for spec in routes(services):
        path = spec.regex.pattern.rstrip("$")
        websocket = issubclass(spec.target, WebSocketHandler)
        if path.startswith("/api/"):
            assert not websocket, f"a WebSocket under /api/ would escape the document: {path}"
        elif path not in OPERATIONAL:
            continue
        if websocket:
            continue
        methods = {m for m in METHODS
                   if getattr(spec.target, m) is not getattr(tornado.web.RequestHandler, m)}
        found.setdefault(shape(path), set()).update(methods)
    return found


@pytest.mark.gen_test
async def test_the_document_is_valid_openapi_3_1(server, api):
    doc = await api.json("GET", "/api/openapi.json")
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on any schema error


@pytest.mark.gen_test
async def test_documented_paths_and_methods_equal_the_routes(server, api):
    doc = await api.json("GET", "/api/openapi.json")
    documented = {shape(path): {m for m in item if m in METHODS}
                  for path, item in doc["paths"].items()}
    routed = api_routes(server.services)
    assert set(routed) - set(documented) == set(), "routed but not documented"
    assert set(documented) - set(routed) == set(), "documented but not routed"
    for path, methods in routed.items():
        assert documented[path] == methods, path


@pytest.mark.gen_test
async def test_every_operation_has_responses_and_declares_its_path_parameters(server, api):
    doc = await api.json("GET", "/api/openapi.json")
    for path, item in doc["paths"].items():
        names = set(re.findall(r"\{([^}]+)\}", path))
        for method in (m for m in item if m in METHODS):
            op = item[method]
            codes = set(op.get("responses", {}))
            assert any(c.startswith("2") for c in codes), (path, method, codes)
            declared = {p["name"] for p in item.get("parameters", []) + op.get("parameters", [])
                        if p.get("in") == "path"}
            assert declared == names, (path, method)


def test_the_shaping_rule():
    assert shape(r"/api/notifications/(\d+)/read$") == "/api/notifications/{}/read"
    assert shape("/api/templates/{type}/{channel}") == shape(r"/api/templates/([^/]+)/([^/]+)")
