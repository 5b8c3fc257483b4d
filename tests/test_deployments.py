"""Deployments as users meet them: the YAML, a real server, a process worker, the form's schema.

The run is started with the call the UI's Run button makes
(``POST /deployments/{id}/create_flow_run`` with the form's parameters), executed by a
``prefect worker start --pool imgpress`` subprocess, on the session's Dask cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml
from _subprocesses import (
    PROJECT_ROOT,
    background,
    prefect_cli,
    process_env,
    stop_group,
    tail,
    wait_for_final_state,
    wait_until,
)
from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.exceptions import PrefectHTTPStatusError
from prefect.flows import load_flow_from_entrypoint

from compressors import CODECS
from deployments import DEPLOYMENTS_FILE, deployment_specs, runner_deployments
from imgpress.demo import SAMPLES
from imgpress.prefect_api import free_port, healthy
from tasks.layout import report_folder
from tasks.report import read_reports

RUN_TIMEOUT_S = 300


def yaml_deployments() -> list[dict]:
    return yaml.safe_load(DEPLOYMENTS_FILE.read_text())["deployments"]


@pytest.mark.parametrize("entry", yaml_deployments(), ids=lambda e: e["entrypoint"])
def test_every_entrypoint_in_prefect_yaml_loads_as_a_flow_the_way_a_worker_loads_it(entry, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)  # a worker's pull step sets this directory
    flow = load_flow_from_entrypoint(entry["entrypoint"], use_placeholder_flow=False)
    assert isinstance(flow, Flow)
    spec = next(s for s in deployment_specs(environ={}) if s.entrypoint == entry["entrypoint"])
    assert spec.load_flow().name == flow.name  # `imgpress serve` imports the same flow


def test_the_yaml_declares_compress_train_and_decompress_on_the_process_pool():
    entries = {e["entrypoint"]: e for e in yaml_deployments()}
    assert set(entries) == {
        "flows/compress.py:compress_collection",
        "flows/train.py:train_model",
        "flows/decompress.py:decompress_collection",
    }
    assert {e["work_pool"]["name"] for e in entries.values()} == {"imgpress"}
    nightly = entries["flows/compress.py:compress_collection"]
    [schedule] = nightly["schedules"]
    assert schedule["cron"] == "0 2 * * *" and schedule["timezone"]
    assert nightly["concurrency_limit"]["limit"] == 1


def test_serve_leaves_the_nightly_schedule_inactive_while_its_collection_is_not_configured():
    warnings = []
    [served] = runner_deployments(["nightly"], environ={"IMGPRESS_DEST": "/tmp/x"}, warn=warnings.append)
    assert [s.active for s in served.schedules] == [False]
    assert "IMGPRESS_SOURCE" in warnings[0]
    [served] = runner_deployments(["nightly"], environ={"IMGPRESS_SOURCE": "/a", "IMGPRESS_DEST": "/b"})
    assert [s.active for s in served.schedules] == [True]
    assert served.parameters == {"request": {"source": "/a", "dest": "/b"}}  # codec: the form's default


def test_serve_refuses_to_start_without_an_api_url(tmp_path):
    env = process_env(tmp_path)
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "imgpress.cli", "serve"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "PREFECT_API_URL" in proc.stderr + proc.stdout


@pytest.fixture(scope="module")
def worker_deployment(prefect_server, dask_address, sample_collection, tmp_path_factory):
    """`prefect deploy` of deployments/prefect.yaml and a process worker polling its pool."""
    tmp = tmp_path_factory.mktemp("worker")
    dest = str(tmp / "dest")
    env = process_env(
        tmp,
        IMGPRESS_SOURCE=sample_collection,
        IMGPRESS_DEST=dest,
        IMGPRESS_CODEC="jpeg",
        IMGPRESS_DASK_ADDRESS=dask_address,
        PREFECT_WORKER_QUERY_SECONDS="1",
    )
    prefect_cli("work-pool", "create", "imgpress", "--type", "process", "--overwrite", env=env)
    prefect_cli("deploy", "--all", "--prefect-file", str(DEPLOYMENTS_FILE.relative_to(PROJECT_ROOT)), env=env)
    log = tmp / "worker.log"
    with background(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "imgpress", "--type", "process"],
        env,
        log,
    ) as worker:
        yield {"dest": dest, "log": log, "worker": worker, "source": sample_collection}


def test_prefect_deploy_registers_the_schedule_limit_and_parameters_from_the_environment(worker_deployment):
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("compress-collection/nightly")
    assert dep.work_pool_name == "imgpress"
    [schedule] = dep.schedules
    assert schedule.schedule.cron == "0 2 * * *" and schedule.schedule.timezone == "Europe/Berlin"
    assert schedule.active
    limit = dep.global_concurrency_limit.limit if dep.global_concurrency_limit else dep.concurrency_limit
    assert limit == 1
    assert dep.parameters == {
        "request": {"source": worker_deployment["source"], "dest": worker_deployment["dest"], "codec": "jpeg"}
    }


def test_the_form_schema_has_a_codec_dropdown_limits_and_help_on_every_field(worker_deployment):
    with get_client(sync_client=True) as client:
        schemas = {
            name: client.read_deployment_by_name(name).parameter_openapi_schema
            for name in (
                "compress-collection/nightly",
                "decompress-collection/on-demand",
                "train-model/on-demand",
            )
        }
    compress = schemas["compress-collection/nightly"]["definitions"]
    fields = compress["CompressRequest"]["properties"]
    codec_enum = compress[fields["codec"]["$ref"].rsplit("/", 1)[-1]]["enum"]
    assert sorted(codec_enum) == sorted(CODECS)  # the dropdown is the registry, nothing hand-kept

    def bounds(prop):
        (typed,) = [s for s in prop.get("anyOf", [prop]) if s.get("type") in ("integer", "number")]
        return typed.get("minimum"), typed.get("maximum")

    def section(codec):  # each codec's parameters: its own section, built from the registry
        return compress[fields[codec]["$ref"].rsplit("/", 1)[-1]]["properties"]

    assert bounds(section("jpeg")["quality"]) == (1, 100)
    assert bounds(section("autoencoder")["quality"]) == (1, CODECS["autoencoder"].params["quality"].hi)
    assert bounds(section("kmeans")["colors"]) == (2, 256)
    assert "seed" in section("kmeans")
    for name, schema in schemas.items():
        for model, definition in schema["definitions"].items():
            for field, prop in definition.get("properties", {}).items():
                assert prop.get("description"), f"{name}: {model}.{field} has no help text in the form"


@pytest.mark.parametrize("codec,params", [("jpeg", {"quality": 0}),
                                          ("autoencoder", {"quality": CODECS["autoencoder"].params["quality"].hi + 1})])
def test_the_server_refuses_a_run_whose_form_values_break_the_limits(worker_deployment, codec, params):
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("compress-collection/nightly")
        with pytest.raises(PrefectHTTPStatusError) as err:
            client.create_flow_run_from_deployment(
                dep.id,
                parameters={
                    "request": {
                        "source": worker_deployment["source"],
                        "dest": worker_deployment["dest"],
                        "codec": codec,
                        codec: params,
                    }
                },
            )
    assert err.value.response.status_code in (409, 422)


def test_a_run_started_like_the_ui_form_completes_on_the_worker_with_report_and_artifacts(worker_deployment):
    dest = worker_deployment["dest"] + "-form"
    form = {
        "request": {
            "source": worker_deployment["source"],
            "dest": dest,
            "codec": "jpeg",
            "jpeg": {"quality": 50},
            "shard_size": 5,
        }
    }
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("compress-collection/nightly")
        created = client.create_flow_run_from_deployment(dep.id, parameters=form)
        run = wait_for_final_state(client, created.id, RUN_TIMEOUT_S, worker_deployment["log"])
        assert run.state.is_completed(), f"{run.state!r}\n{tail(worker_deployment['log'])}"
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[created.id]))
        )
    rows = read_reports(dest).to_pylist()
    assert len(rows) == len(SAMPLES) + 1  # + the truncated file, as an error row
    run_id = rows[0]["run_id"]
    by_type = {a.type: a for a in artifacts}
    assert set(by_type) >= {"table", "markdown"}
    assert f"imgpress run `{run_id}`" in by_type["markdown"].data
    assert "| psnr |" in by_type["markdown"].data
    assert os.path.isfile(os.path.join(dest, "runs", run_id, "report.html"))
    assert os.listdir(report_folder(dest, run_id))


def test_imgpress_server_listens_on_loopback_with_analytics_off_and_prints_the_api_url(tmp_path):
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = process_env(tmp_path)
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_SERVER_ANALYTICS_ENABLED", None)
    log = tmp_path / "server.log"
    with background([sys.executable, "-m", "imgpress.cli", "server", "--port", str(port)], env, log) as proc:
        wait_until(lambda: healthy(api_url), 180, "imgpress server to answer", log, proc)
        wait_until(lambda: f"export PREFECT_API_URL={api_url}" in tail(log), 10, "the export line", log)
        settings = json.load(urllib.request.urlopen(api_url + "/admin/settings", timeout=10))
        ui = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings", timeout=10))
        stop_group(proc)  # SIGTERM: the command stops its server before it exits
        assert proc.returncode == 0
    assert settings["server"]["analytics_enabled"] is False
    assert ui["api_url"] == api_url  # the browser is sent to this server, not to port 4200
    time.sleep(1)
    assert not healthy(api_url)
