"""The live page in a real browser: Playwright driving the system's Chromium (Debian's
``chromium`` package, installed by ``make setup``; never a downloaded browser).

The page loads with no console errors, its drawing holds every node, the node counters
follow the requests, "Try it" returns the output and shows the path (the arm taken, the
arm skipped), a 500 shows on the failing node, and a server with a token asks for it.
Every wait is on the page's DOM, never a sleep.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from graphserve.serving import load_plans
from tests.graphs import page_graphs
from tests.serving_utils import running_server

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make setup: apt-get install chromium)"),
    pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (make setup)"),
]
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running_server(page_graphs.make_app()) as base:
        yield base


@pytest.fixture
def page(browser: Any, url: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
    page.goto(url + "/-/")
    page.wait_for_selector("svg#graph-svg")
    yield page
    context.close()


def calls_shown(page: Any, node: str) -> int:
    return int(page.get_attribute(f'[id="node:{node}"]', "data-calls") or -1)


def test_the_page_loads_without_errors_and_draws_every_node(page: Any) -> None:
    (plan,) = load_plans(page_graphs.make_app(), cluster=None)
    for node in plan.nodes:
        assert page.locator(f'svg [id="node:{node.id}"]').count() == 1
    page.wait_for_selector(".link.live")  # the event stream is connected
    assert page.console_errors == []


def test_node_counters_show_the_requests_within_two_seconds(page: Any, url: str) -> None:
    page.wait_for_function("document.querySelector('[id=\"node:Classifier.__call__\"]').dataset.calls !== undefined")
    before = calls_shown(page, "Classifier.__call__")
    n = 25
    with httpx.Client(base_url=url) as client:
        for i in range(n):
            assert client.post("/", json={"text": "tiny" if i % 5 else "a long text"}).status_code == 200
    page.wait_for_function(
        "([id, want]) => document.getElementById(id).dataset.calls === String(want)",
        arg=["node:Classifier.__call__", before + n],
        timeout=2000,
    )
    text = page.text_content('[id="node:Classifier.__call__"]')
    assert f"{before + n} calls" in text and "req/s" in text and "p99" in text
    assert page.console_errors == []


def test_try_it_returns_the_output_and_highlights_the_branch_taken(page: Any) -> None:
    page.fill('[data-field="text"]', "a long text")
    page.click("#send")
    page.wait_for_selector("#waterfall .wf-row")
    assert '"path": "long"' in page.text_content("#output")
    assert "HTTP 200" in page.text_content("#status-line")
    assert "ran" in page.get_attribute('[id="node:long_path"]', "class")
    assert "skipped" in page.get_attribute('[id="node:short_path"]', "class")
    assert "ran" in page.get_attribute('[id="edge:Classifier.__call__->switch"]', "class")
    rows = page.locator("#waterfall .wf-row").all_text_contents()
    assert any("Embed.__call__" in row and "batch 1" in row for row in rows)
    assert any("long_path" in row and "replica" in row for row in rows)
    assert "short_path" in page.text_content(".wf-skipped")
    page.fill('[data-field="text"]', "tiny")  # the other arm now
    page.click("#send")
    page.wait_for_function("document.getElementById('output').textContent.includes('short')")
    assert "ran" in page.get_attribute('[id="node:short_path"]', "class")
    assert "skipped" in page.get_attribute('[id="node:long_path"]', "class")
    assert page.console_errors == []


def test_a_500_shows_on_the_failing_node(page: Any) -> None:
    page.fill('[data-field="text"]', "a long text")
    page.check('[data-field="fail"]')
    page.click("#send")
    page.wait_for_selector('[id="node:long_path"].failed')
    assert "HTTP 500" in page.text_content("#status-line")
    assert "ValueError" in page.text_content("#output")
    page.wait_for_selector('[id="node:long_path"].has-errors', timeout=2000)  # the live figures count it
    assert int(page.get_attribute('[id="node:long_path"]', "data-errors")) >= 1
    page.click('[id="node:long_path"]')
    details = page.text_content("#node-details")
    assert "tests.graphs.page_graphs:long_path" in details and "ValueError" in details
    assert "asked to fail" not in details  # as in the 500's body: the text is in the server's log only
    request_id = page.text_content("#status-line").split("request ")[1].split(" ")[0]
    assert request_id in details
    # the browser itself logs the 500 it was sent; the page's script logs nothing
    assert [e for e in page.console_errors if "status of 500" not in e] == []


def test_node_details_show_the_deployment_and_its_batching(page: Any) -> None:
    page.click('[id="node:Embed.__call__"]')
    details = page.text_content("#node-details")
    assert "tests.graphs.page_graphs:Embed" in details and "max_batch_size=4" in details
    assert "replicas" in details


def test_with_a_token_the_page_asks_for_it_and_sends_it(browser: Any) -> None:
    with running_server(page_graphs.make_app(), token="s3cret") as base:
        page = browser.new_page()
        page.goto(base + "/-/")
        page.wait_for_selector("svg#graph-svg")
        page.fill('[data-field="text"]', "tiny")
        page.click("#send")
        page.wait_for_selector("#token-dialog[open]")
        page.fill("#token-input", "s3cret")
        page.click("#token-ok")
        page.wait_for_function("document.getElementById('output').textContent.includes('short')")
        assert "HTTP 200" in page.text_content("#status-line")
        page.close()
