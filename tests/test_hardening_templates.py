"""Templates render in an immutable sandbox within a budget: a heavy template is refused at PUT
with 400 naming the part, the server answers meanwhile, and a send never stalls on one."""

import asyncio
import json
import time
import tracemalloc

import pytest

from tidings.channels import MessageTemplate, TemplateError, render, validate

from .clients import Api, token

ADMIN = token(user="root", role="admin")
HEAVY = [
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{{ 'x'.ljust(10**9) }}",
    "{{ 'x' | center(1000000000) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '%999999999s' % 'x' }}",
    "{{ 'x' * 10**9 }}",
    "{{ range(10**9) | list }}",
    "{{ ('x' * 200000) | replace('x', 'yy') }}",
    "{{ ('x' * 200000) ~ ('x' * 200000) }}",
    "{% for i in range(300000) %}x{% endfor %}",
]
MUTATE = ["{{ data.update({'owned': 1}) }}", "{{ notification.clear() }}",
          "{% set x = data.setdefault('k', 1) %}"]


@pytest.mark.parametrize("source", HEAVY + MUTATE)
def test_heavy_or_mutating_templates_are_refused_quickly(source):
    started = time.monotonic()
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError) as caught:
            validate("email", MessageTemplate(text=source))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.field == "text"
    assert time.monotonic() - started < 2.5, source
    assert peak < 16 * 2**20, f"{source}: refused only after using {peak >> 20} MiB"


def test_a_send_over_budget_fails_that_delivery_only():
    n = {"id": 1, "title": "t", "message": "", "data": {"s": "x" * 60_000}, "type": "info"}
    for source in (HEAVY[0], "{% for a in data.s %}{% for b in data.s %}{% endfor %}"
                             "{% endfor %}"):
        started = time.monotonic()
        with pytest.raises(TemplateError) as caught:
            render(n, "sms", MessageTemplate(text=source))
        assert "budget" in str(caught.value)
        assert time.monotonic() - started < 2.5
    assert render(n, "sms").text == "t"
    assert render(n, "sms", MessageTemplate(text="{% for c in 'abc' %}{{ loop.index }}{{ c }}"
                                                 "{% else %}none{% endfor %}")).text == "1a2b3c"


@pytest.mark.gen_test(timeout=60)
async def test_server_answers_while_a_heavy_template_is_checked(server, api):
    async def put(source):
        return await api.call("PUT", "/api/templates/info/email", {"text": source}, ADMIN)

    for source in (HEAVY[0], HEAVY[1], HEAVY[2], MUTATE[0]):
        checking = asyncio.ensure_future(put(source))
        while not checking.done():  # every answer while the check runs comes at once
            started = time.monotonic()
            health = await Api(server.port).call("GET", "/healthz")
            assert health.code == 200 and time.monotonic() - started < 1.0
        response = await checking
        assert response.code == 400, response.body
        assert json.loads(response.body)["error"]["field"] == "text"
    ok = await put("Hello {{ user.email }}: {{ title }} {% for i in range(3) %}.{% endfor %}")
    assert ok.code == 200, ok.body
