"""The dashboard the head serves itself, in Chromium: refused without the token, opened by a
one-time login link, then watching a task appear live, fail with its traceback, and show
on the timeline — the page as a user outside Jupyter sees it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for_file

import nbcluster as nc
from browser.lab import expect


def waits_then_fails(gate: str) -> None:
    wait_for_file(gate)
    raise RuntimeError("the input was not what this task expected")


def squares(n: int) -> list[int]:
    return [i * i for i in range(n)]


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.errors = errors
    yield page
    context.close()


def keep(shots: Path, name: str, page: Any) -> None:
    """A screenshot in the test's folder (pytest's temporary one)."""
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / name))


def test_the_heads_dashboard_needs_its_token_and_shows_a_task_live(
    make_cluster: Any, page: Any, gate: Path, shots: Path
) -> None:
    make_cluster(num_cpus=2, dashboard=True)
    nc.get([nc.remote(squares).remote(n) for n in range(8)])
    link = nc.dashboard_url()
    origin = link.split("/nbcluster/")[0]

    # Without the token: refused, with a page that says how to get in.
    response = page.goto(f"{origin}/nbcluster/")
    assert response.status == 403
    expect(page.locator("#nbcluster-login-needed")).to_contain_text("nbcluster dashboard")

    # The login link: a cookie, then the cluster's page, live.
    page.goto(link)
    expect(page.locator(".feed")).to_have_attribute("data-feed", "live", timeout=20_000)
    expect(page.locator("[data-card=nodes] .card-big")).to_have_text("1")
    expect(page.locator("[data-state-count=FINISHED]")).to_have_text("8", timeout=20_000)
    expect(page.locator(".chart-box[data-chart=CPU] polyline")).to_have_count(1, timeout=20_000)

    # A task appears in the table as it starts, without reloading the page...
    page.locator("[data-tab=tasks]").click()
    ref = nc.remote(waits_then_fails).remote(str(gate))
    row = page.locator(f"tr[data-task-id='{ref.task_id().hex()}']")
    expect(row.locator("[data-col=state] .badge")).to_have_attribute(
        "data-state", "RUNNING", timeout=20_000
    )
    expect(row.locator("[data-col=name]")).to_have_text("waits_then_fails")
    # ...and turns to failed in place, with its traceback one click away.
    gate.touch()
    with pytest.raises(RuntimeError):
        nc.get(ref)
    expect(row.locator("[data-col=state] .badge")).to_have_attribute(
        "data-state", "FAILED", timeout=20_000
    )
    expect(row.locator("[data-col=error]")).to_have_text("RuntimeError")
    row.click()
    traceback = page.locator("pre.traceback")
    expect(traceback).to_contain_text("Traceback")
    expect(traceback).to_contain_text("the input was not what this task expected")
    expect(traceback).to_contain_text("waits_then_fails")
    keep(shots, "dashboard-task.png", page)

    # The timeline: one slice per task that ran, the failed one among them.
    page.locator("[data-tab=timeline]").click()
    slices = page.locator("svg.timeline rect.slice")
    expect(slices.first).to_be_visible(timeout=20_000)
    failed = page.locator(f"svg.timeline rect.slice[data-task-id='{ref.task_id().hex()}']")
    expect(failed).to_have_attribute("data-state", "FAILED")
    assert slices.count() >= 9
    keep(shots, "dashboard-timeline.png", page)

    # The overview counts the failure among the recent errors.
    page.locator("[data-tab=overview]").click()
    expect(page.locator(f".error-list li[data-task-id='{ref.task_id().hex()}']")).to_contain_text(
        "RuntimeError", timeout=20_000
    )
    keep(shots, "dashboard-overview.png", page)
    assert page.errors == []

    # The link was for one use: another browser using it is refused.
    other = page.context.browser.new_context()
    try:
        again = other.new_page().goto(link)
        assert again.status == 403
    finally:
        other.close()


def test_a_stopped_cluster_shows_as_gone(make_cluster: Any, page: Any) -> None:
    make_cluster(num_cpus=1, dashboard=True)
    page.goto(nc.dashboard_url())
    expect(page.locator(".feed")).to_have_attribute("data-feed", "live", timeout=20_000)
    page.locator("[data-tab=tasks]").click()
    nc.shutdown()  # the head, and its dashboard server, go away
    expect(page.locator(".feed")).not_to_have_attribute("data-feed", "live", timeout=20_000)
    expect(page.locator(".banner")).to_be_visible(timeout=20_000)
    assert page.errors == []
