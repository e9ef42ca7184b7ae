"""Kubernetes: a Job of workers and a nightly CronJob, with credentials from a Secret."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from hpo.errors import UsageError
from hpo.operations.schedule._commands import CONTAINER_STUDY_FILE, STOP_GRACE_SECONDS, create_argv, worker_argv
from hpo.operations.schedule._plan import SweepPlan, _has_password, _objective_file_beside, proxy_notes


def kubernetes_manifests(plan: SweepPlan) -> str:
    """A ConfigMap with the study file, a Job of N workers and a CronJob starting a new study nightly."""
    if (plan.config.storage and _has_password(plan.config.storage)) or (
        plan.config.tracking_uri and _has_password(plan.config.tracking_uri)
    ):
        raise UsageError(
            f"{plan.study_file}: storage/tracking_uri contain a password, which would be copied into the ConfigMap;"
            f" keep the URL without it and put the password into the Secret {plan.secret}"
        )
    slug = _k8s_name(plan.study_name)
    labels = {"app.kubernetes.io/name": "hpo", "hpo/study": slug}
    files = {Path(CONTAINER_STUDY_FILE).name: plan.study_file.read_text()}
    beside = _objective_file_beside(plan)
    if beside is not None:  # mounted next to the study file, where its relative `objective:` points
        files[beside.name] = beside.read_text()
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"hpo-{slug}-study", "labels": labels},
        "data": files,
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"hpo-{slug}", "labels": labels},
        "spec": _job_spec(plan, slug, labels, study_name=plan.study_name, extra_env=[]),
    }
    # Each night is a new study named after its Job (hpo-NAME-nightly-<minute>), so it has a budget of its own.
    nightly_env = [{"name": "HPO_STUDY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['job-name']"}}}]
    hour, minute = plan.at
    cron_job = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": f"hpo-{slug}-nightly", "labels": labels},
        "spec": {
            "schedule": f"{minute} {hour} * * *",
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels},
                "spec": _job_spec(plan, slug, labels, study_name="$(HPO_STUDY_NAME)", extra_env=nightly_env),
            },
        },
    }
    gpus = 1 if plan.gpus is None else plan.gpus
    header = [
        f"# hpo sweep of study {plan.study_name} on Kubernetes: a Job of {plan.workers} workers ({gpus} GPU each)",
        "# and a CronJob that runs a new sweep every night. Every pod first creates the study (an",
        "# idempotent init step), then joins it with `hpo worker`; the workers share the study storage.",
        f"# Credentials live in the Secret {plan.secret}, never in this file:",
        f"#   kubectl create secret generic {plan.secret} \\",
        "#     --from-literal=storage='postgresql://USER:PASSWORD@HOST:5432/DB' \\",
        "#     --from-literal=tracking-uri='http://mlflow:5000'",
        "#   (optional keys: pgpassword, mlflow-username, mlflow-password)",
        *proxy_notes(plan),
        "# Then: kubectl apply -f THIS_FILE",
    ]
    body = yaml.dump_all(
        [config_map, job, cron_job], Dumper=_ManifestDumper, sort_keys=False, default_flow_style=False, width=200
    )
    return "\n".join(header) + "\n" + body


class _ManifestDumper(yaml.SafeDumper):
    """Plain YAML as people write manifests: no anchors, multi-line text (the study file) as a block."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_ManifestDumper.add_representer(str, _represent_str)


def _job_spec(
    plan: SweepPlan, slug: str, labels: dict[str, str], *, study_name: str, extra_env: list[dict[str, Any]]
) -> dict[str, Any]:
    gpus = 1 if plan.gpus is None else plan.gpus
    env = (
        extra_env
        + _k8s_env(plan)
        + [{"name": "HPO_THREADS", "value": str(plan.cpus)}, {"name": "OMP_NUM_THREADS", "value": str(plan.cpus)}]
    )
    resources: dict[str, Any] = {"requests": {"cpu": str(plan.cpus)}}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": gpus}
    mounts = [{"name": "study", "mountPath": str(Path(CONTAINER_STUDY_FILE).parent), "readOnly": True}]
    container = {"image": plan.image, "env": env, "resources": resources, "volumeMounts": mounts}
    spec: dict[str, Any] = {
        # No `completions`: a work queue. Workers leave when the study's budget is used up.
        "parallelism": plan.workers,
        "backoffLimit": 2 * plan.workers,
        "ttlSecondsAfterFinished": 7 * 86400,
    }
    if plan.time_limit:
        spec["activeDeadlineSeconds"] = plan.time_limit
    spec["template"] = {
        "metadata": {"labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": STOP_GRACE_SECONDS,
            "initContainers": [
                {
                    "name": "create-study",
                    "command": create_argv(CONTAINER_STUDY_FILE, study_name=study_name),
                    **container,
                }
            ],
            "containers": [
                {"name": "worker", "command": worker_argv(CONTAINER_STUDY_FILE, study_name=study_name), **container}
            ],
            "volumes": [{"name": "study", "configMap": {"name": f"hpo-{slug}-study"}}],
        },
    }
    return spec


def _k8s_env(plan: SweepPlan) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    for name, value, from_file, key in (
        ("HPO_STORAGE", plan.storage, plan.config.storage, "storage"),
        ("MLFLOW_TRACKING_URI", plan.tracking_uri, plan.config.tracking_uri, "tracking-uri"),
    ):
        if value is not None:
            env.append({"name": name, "value": value})
        elif from_file is None:
            env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": plan.secret, "key": key}}})
    for name, key in (
        ("PGPASSWORD", "pgpassword"),
        ("MLFLOW_TRACKING_USERNAME", "mlflow-username"),
        ("MLFLOW_TRACKING_PASSWORD", "mlflow-password"),
    ):
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": plan.secret, "key": key, "optional": True}}})
    return env


def _k8s_name(study_name: str) -> str:
    """A DNS-1123 label from a study name, short enough for `hpo-NAME-nightly-<minute>` Job names."""
    slug = re.sub(r"[^a-z0-9-]+", "-", study_name.lower()).strip("-")
    return slug[:30].rstrip("-") or "study"
