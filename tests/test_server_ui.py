"""The Prefect UI in a real browser: find the nightly deployment, Quick run it, watch it complete.

Chromium is Debian's (/usr/bin/chromium), driven headless by Playwright; nothing is
downloaded. `imgpress serve nightly` (a subprocess) executes the run on the session's
Dask cluster, exactly as a user's served deployment would.
"""

from __future__ import annotations

import re
import sys
import time

import pytest
from _browser import CHROMIUM, CHROMIUM_ARGS, needs_chromium
from _subprocesses import background, process_env, tail, wait_for_final_state, wait_until
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.sorting import FlowRunSort

from imgpress.demo import SAMPLES
from tasks.report import read_reports

RUN_TIMEOUT_MS = 300_000

pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.fixture
def served_nightly(prefect_server, dask_address, sample_collection, tmp_path):
    """`imgpress serve nightly` with the collection and codec set as a user sets them."""
    dest = str(tmp_path / "dest")
    env = process_env(
        tmp_path,
        IMGPRESS_SOURCE=sample_collection,
        IMGPRESS_DEST=dest,
        IMGPRESS_CODEC="jpeg",
        IMGPRESS_DASK_ADDRESS=dask_address,
        PREFECT_RUNNER_POLL_FREQUENCY="1",
    )
    log = tmp_path / "serve.log"
    with background([sys.executable, "-m", "imgpress.cli", "serve", "nightly"], env, log) as proc:
        with get_client(sync_client=True) as client:

            def registered():
                dep = client.read_deployment_by_name("compress-collection/nightly")
                return dep if dep.parameters.get("request", {}).get("dest") == dest else None

            deployment = wait_until(registered, 120, "imgpress serve to register the deployment", log, proc)
        yield {"deployment": deployment, "dest": dest, "log": log, "ui": prefect_server.removesuffix("/api")}


def test_a_quick_run_from_the_ui_reaches_completed(served_nightly, tmp_path):
    from playwright.sync_api import sync_playwright

    ui, log = served_nightly["ui"], served_nightly["log"]
    started = time.time()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{ui}/deployments")
            page.get_by_role("link", name="nightly", exact=True).click()
            page.wait_for_url("**/deployments/deployment/**")
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Quick run", exact=True).click()
            # This UI version confirms a quick run in a dialog prefilled with the deployment's
            # parameters (the form); newer ones start at once. Accept either.
            dialog_run = page.get_by_role("dialog").get_by_role("button", name="Run", exact=True)
            toast = page.locator(".toast-flow-run-create")
            # wait for the dialog's Run button itself (the dialog may be open before it renders)
            dialog_run.or_(toast).first.wait_for()
            if dialog_run.count() and not toast.count():
                dialog_run.click()
            toast.first.wait_for()
            run_id = _open_run_from_toast(page) or _newest_run_id(served_nightly["deployment"].id, started)
            if "/runs/flow-run/" not in page.url:
                page.goto(f"{ui}/runs/flow-run/{run_id}")
            badge = page.locator(".page-heading-flow-run .state-badge")
            badge.filter(has_text=re.compile("Completed|Failed|Crashed|Cancelled")).first.wait_for(
                timeout=RUN_TIMEOUT_MS
            )
            page.screenshot(path=str(tmp_path / "ui-run.png"), full_page=True)
            state_text = badge.first.inner_text()
            if "Completed" in state_text:  # the run page lists the summary the flow published
                page.get_by_role("tab", name="Artifacts").or_(page.get_by_text("Artifacts", exact=True)).first.click()
                page.get_by_text(re.compile(r"compress-.*-summary")).first.wait_for()
                page.screenshot(path=str(tmp_path / "ui-artifacts.png"), full_page=True)
        finally:
            browser.close()
    assert "Completed" in state_text, f"the UI shows {state_text!r}\n{tail(log)}"
    with get_client(sync_client=True) as client:
        run = wait_for_final_state(client, run_id, 30, log)
    assert run.state.is_completed() and str(run.deployment_id) == str(served_nightly["deployment"].id)
    assert len(read_reports(served_nightly["dest"])) == len(SAMPLES) + 1
    assert (tmp_path / "ui-run.png").stat().st_size > 10_000


def _open_run_from_toast(page) -> str | None:
    """Follow the toast's "View run"; the toast app overlays its own button, so dispatch the click."""
    try:
        page.locator(".toast-flow-run-create__button").first.dispatch_event("click")
        page.wait_for_url("**/runs/flow-run/**", timeout=15_000)
    except Exception:  # noqa: BLE001  (the toast can vanish first: fall back to the API)
        return None
    return page.url.rstrip("/").rsplit("/", 1)[-1].split("?")[0]


def _newest_run_id(deployment_id, since: float) -> str:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=5,
        )
    runs = [r for r in runs if r.created and r.created.timestamp() >= since - 5]
    assert runs, "the UI said it created a run, but the API has none for the deployment"
    return str(runs[0].id)
