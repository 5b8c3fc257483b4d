"""The deployments declared in ``deployments/prefect.yaml``, usable without ``prefect deploy``.

``prefect deploy`` reads the YAML for a work pool and its workers; :func:`runner_deployments`
reads the same file for ``serve()`` (``imgpress serve``), so the schedules, limits and
parameters are written once.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

DEPLOYMENTS_FILE = Path(__file__).with_name("prefect.yaml")
PROJECT_ROOT = DEPLOYMENTS_FILE.parent.parent  # the YAML's entrypoints are relative to it

_ENV = re.compile(r"^\{\{\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")


@dataclass(frozen=True)
class DeploymentSpec:
    """One entry of the YAML, its ``{{ $VAR }}`` placeholders resolved from an environment."""

    name: str
    entrypoint: str  # "flows/compress.py:compress_collection", relative to PROJECT_ROOT
    config: dict  # the entry as written, placeholders resolved
    missing_env: tuple[str, ...]  # placeholders whose variable was not set (their keys dropped)

    @property
    def module_path(self) -> str:
        """``flows/compress.py:compress_collection`` -> ``flows.compress:compress_collection``."""
        path, _, attr = self.entrypoint.partition(":")
        return f"{path.removesuffix('.py').replace('/', '.')}:{attr}"

    def load_flow(self):
        """Import the entrypoint as an installed module (works from any directory)."""
        from prefect import Flow  # noqa: PLC0415

        module, _, attr = self.module_path.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        if not isinstance(obj, Flow):
            raise TypeError(f"{self.entrypoint} is a {type(obj).__name__}, not a Prefect flow")
        return obj

    def full_name(self) -> str:
        """``flow-name/deployment-name``, as the UI and ``prefect deployment run`` spell it."""
        return f"{self.load_flow().name}/{self.name}"


def read_file(path: Path | str = DEPLOYMENTS_FILE) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def deployment_specs(
    path: Path | str = DEPLOYMENTS_FILE, environ: Mapping[str, str] | None = None
) -> list[DeploymentSpec]:
    """Every deployment of the YAML, with ``{{ $VAR }}`` read from ``environ`` (default: os.environ).

    An unset variable drops its key, so the flow's own default (or the form) applies,
    instead of the empty string ``prefect deploy`` would write.
    """
    environ = os.environ if environ is None else environ
    out = []
    for entry in read_file(path).get("deployments") or []:
        missing: list[str] = []
        config = _resolve(entry, environ, missing)
        out.append(DeploymentSpec(config["name"], config["entrypoint"], config, tuple(sorted(set(missing)))))
    return out


def select(specs: list[DeploymentSpec], names: Iterable[str] = ()) -> list[DeploymentSpec]:
    """The specs named ``deployment``, ``flow-name/deployment`` or ``flow-name`` (all when none given)."""
    names = list(names)
    if not names:
        return specs
    chosen = []
    for name in names:
        hits = [s for s in specs if name in (s.name, s.full_name(), s.load_flow().name)]
        if not hits:
            known = ", ".join(s.full_name() for s in specs)
            raise ValueError(f"no deployment called {name!r}; known: {known}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def runner_deployments(
    names: Iterable[str] = (),
    *,
    path: Path | str = DEPLOYMENTS_FILE,
    environ: Mapping[str, str] | None = None,
    warn=None,
) -> list:
    """``RunnerDeployment``s for ``prefect.serve`` built from the YAML (no work pool: served)."""
    from prefect.deployments.runner import EntrypointType  # noqa: PLC0415

    out = []
    for spec in select(deployment_specs(path, environ), names):
        config, flow = spec.config, spec.load_flow()
        parameters = config.get("parameters") or {}
        schedules = config.get("schedules") or []
        if schedules and (problem := _invalid(flow, parameters)):
            # A schedule whose runs cannot start would only produce a failure every night.
            schedules = [{**s, "active": False} for s in schedules]
            if warn:
                unset = f" (unset: {', '.join(spec.missing_env)})" if spec.missing_env else ""
                warn(
                    f"{spec.full_name()}: schedule inactive, its parameters are incomplete{unset}: {problem}"
                )
        out.append(
            flow.to_deployment(
                name=spec.name,
                description=config.get("description"),
                tags=config.get("tags"),
                parameters=parameters,
                schedules=[_schedule(s) for s in schedules] or None,
                concurrency_limit=_concurrency(config.get("concurrency_limit")),
                # module path, not file path: served runs import the installed package
                # from whatever directory `imgpress serve` was started in.
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return out


def _invalid(flow, parameters: dict) -> str | None:
    import logging  # noqa: PLC0415

    log = logging.getLogger("prefect.flows")  # it logs the failure as an ERROR; we report it once
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        flow.validate_parameters(parameters)
    except Exception as exc:  # the reason is shown to the user, whatever its type
        return " ".join(str(exc).split())[:300]
    finally:
        log.setLevel(level)
    return None


def _resolve(value: Any, environ: Mapping[str, str], missing: list[str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            resolved = _resolve(v, environ, missing)
            if resolved is not _UNSET:
                out[k] = resolved
        return out
    if isinstance(value, list):
        return [v for v in (_resolve(v, environ, missing) for v in value) if v is not _UNSET]
    if isinstance(value, str) and (m := _ENV.match(value.strip())):
        if environ.get(m.group(1)):
            return environ[m.group(1)]
        missing.append(m.group(1))
        return _UNSET
    return value


_UNSET = object()


def _schedule(config: dict):
    from prefect.schedules import Cron, Interval  # noqa: PLC0415

    common = {
        "timezone": config.get("timezone"),
        "active": config.get("active", True),
        "parameters": config.get("parameters") or {},
    }
    if "cron" in config:
        return Cron(config["cron"], **common)
    if "interval" in config:
        return Interval(config["interval"], **common)
    raise ValueError(f"only cron and interval schedules are supported here, not {config}")


def _concurrency(config):
    if config is None or isinstance(config, int):
        return config
    from prefect.client.schemas.objects import ConcurrencyLimitConfig  # noqa: PLC0415

    return ConcurrencyLimitConfig(
        limit=config["limit"], collision_strategy=config.get("collision_strategy", "ENQUEUE")
    )
