"""Deployments: ``prefect.yaml`` (schedules, work pool, parameters) and :mod:`deployments.specs`,
which reads the same file for ``imgpress serve``."""

from deployments.specs import DEPLOYMENTS_FILE, PROJECT_ROOT, DeploymentSpec, deployment_specs, runner_deployments, select

__all__ = ["DEPLOYMENTS_FILE", "PROJECT_ROOT", "DeploymentSpec", "deployment_specs", "runner_deployments", "select"]
