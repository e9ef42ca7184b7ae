"""`hpo schedule slurm|k8s|cron`: valid scripts and manifests that run the same worker command as
`hpo run --workers`."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hpo.operations.schedule import CONTAINER_STUDY_FILE, create_argv, parse_duration, worker_argv
from tests.conftest import MlflowServers, tiny_boston

PG = "postgresql://hpo@db.example:5432/hpo"


def bash_syntax_ok(script: str) -> None:
    checked = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def sections(text: str) -> dict[str, str]:
    """Split the cron target's output at its `# --- name ---` markers."""
    parts = re.split(r"^# --- (.+?) ---$", text, flags=re.M)
    return {parts[i]: parts[i + 1].strip("\n") for i in range(1, len(parts) - 1, 2)}


def test_slurm_script_is_a_job_array_of_workers_with_one_gpu_each(
    cli: Callable[..., Any], write_study: Callable[..., Path]
) -> None:
    # One array task per worker, one GPU per task, the time limit in Slurm's format; outside Slurm the
    # script creates the study and submits itself; inside, it runs exactly `worker_argv`.
    study_file = write_study(tiny_boston(name="slurm-sweep"))
    result = cli("schedule", "slurm", study_file, "--workers", "6", "--time-limit", "1-02:30:00", "--storage", PG)
    assert result.exit_code == 0, result.output
    script = result.stdout
    bash_syntax_ok(script)
    assert script.startswith("#!/bin/bash\n")
    directives = re.findall(r"^#SBATCH (\S+)$", script, flags=re.M)
    assert "--array=0-5" in directives
    assert "--gres=gpu:1" in directives
    assert "--time=1-02:30:00" in directives
    assert any(d.startswith("--signal=B:TERM@") for d in directives)
    lines = script.splitlines()
    assert f"export HPO_STORAGE={PG}" in lines
    assert lines[-1] == "exec " + shlex.join(worker_argv(study_file.resolve(), study_name="slurm-sweep"))
    assert "    " + shlex.join(create_argv(study_file.resolve(), study_name="slurm-sweep")) in lines


def test_slurm_task_runs_a_real_worker_that_joins_the_study(
    cli: Callable[..., Any], mlflow_server: MlflowServers, write_study: Callable[..., Path], tmp_path: Path
) -> None:
    # Run the generated script as Slurm would run one array task: it must join the study `hpo create`
    # made and use up the budget.
    study_file = write_study(tiny_boston(name="slurm-task", n_trials=1))
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    assert cli("create", study_file, "--storage", storage, "--tracking-uri", mlflow_server.shared).exit_code == 0
    script = cli("schedule", "slurm", study_file, "--storage", storage, "--gpus", "0").stdout
    assert "--gres" not in script
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "SLURM_JOB_ID": "42",
        "SLURM_CPUS_PER_TASK": "1",
        "MLFLOW_TRACKING_URI": mlflow_server.shared,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    task = subprocess.run(["bash", "-c", script, "sweep.sbatch"], env=env, capture_output=True, text=True, timeout=240)
    assert task.returncode == 0, task.stderr[-3000:]
    trials = optuna.load_study(study_name="slurm-task", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE]


def test_kubernetes_manifests_are_a_configmap_a_job_and_a_nightly_cronjob(
    cli: Callable[..., Any], write_study: Callable[..., Path]
) -> None:
    # The Job runs N worker pods (a work queue: parallelism N, no completions), each creating the study
    # in an init step, then running `worker_argv`; credentials come only from the Secret.
    study_file = write_study(tiny_boston(name="k8s_Sweep.v2"))
    result = cli(
        "schedule",
        "k8s",
        study_file,
        "--workers",
        "5",
        "--gpus",
        "2",
        "--time-limit",
        "6h",
        "--image",
        "registry.example/hpo:1.0",
        "--at",
        "03:15",
    )
    assert result.exit_code == 0, result.output
    config_map, job, cron_job = yaml.safe_load_all(result.stdout)
    assert [config_map["kind"], job["kind"], cron_job["kind"]] == ["ConfigMap", "Job", "CronJob"]
    for doc in (config_map, job, cron_job):
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), doc["metadata"]["name"]
    assert yaml.safe_load(config_map["data"]["study.yaml"]) == yaml.safe_load(study_file.read_text())

    spec = job["spec"]
    assert spec["parallelism"] == 5 and "completions" not in spec
    assert spec["activeDeadlineSeconds"] == 6 * 3600
    pod = spec["template"]["spec"]
    [worker] = pod["containers"]
    [init] = pod["initContainers"]
    assert worker["command"] == worker_argv(CONTAINER_STUDY_FILE, study_name="k8s_Sweep.v2")
    assert init["command"] == create_argv(CONTAINER_STUDY_FILE, study_name="k8s_Sweep.v2")
    assert worker["image"] == init["image"] == "registry.example/hpo:1.0"
    assert worker["resources"]["limits"] == {"nvidia.com/gpu": 2}
    assert pod["volumes"][0]["configMap"]["name"] == config_map["metadata"]["name"]
    env = {e["name"]: e for e in worker["env"]}
    assert env["HPO_STORAGE"]["valueFrom"]["secretKeyRef"] == {"name": "hpo-credentials", "key": "storage"}
    assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"]["key"] == "tracking-uri"
    assert all("value" not in e or "PASSWORD" not in e["name"] for e in worker["env"])

    nightly = cron_job["spec"]
    assert nightly["schedule"] == "15 3 * * *"
    assert nightly["concurrencyPolicy"] == "Forbid"
    nightly_pod = nightly["jobTemplate"]["spec"]["template"]["spec"]
    # Each night is its own study, named after the Job the CronJob created.
    assert nightly_pod["containers"][0]["command"] == worker_argv(CONTAINER_STUDY_FILE, study_name="$(HPO_STUDY_NAME)")
    nightly_env = {e["name"]: e for e in nightly_pod["containers"][0]["env"]}
    assert nightly_env["HPO_STUDY_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['job-name']"


def test_cron_target_prints_a_crontab_line_and_a_systemd_timer(
    cli: Callable[..., Any], write_study: Callable[..., Path]
) -> None:
    # The crontab line and the systemd ExecStart run the same shell command: a new dated study each
    # night with `hpo run --workers N`; both parse, and the command passes `bash -n`.
    study_file = write_study(tiny_boston(name="nightly"))
    result = cli(
        "schedule", "cron", study_file, "--workers", "3", "--time-limit", "2h", "--at", "01:30", "--storage", PG
    )
    assert result.exit_code == 0, result.output
    parts = sections(result.stdout)

    crontab = parts["crontab (crontab -e)"]
    fields = crontab.split(None, 5)
    assert fields[:5] == ["30", "1", "*", "*", "*"]
    command = fields[5]
    assert "%" not in command.replace(r"\%", "")  # cron would cut the line at a bare %
    bash_syntax_ok(command.replace(r"\%", "%"))
    assert "timeout --signal=TERM" in command and " 7200 " in command
    assert f"HPO_STORAGE={PG}" in command
    assert f"run {study_file.resolve()} --workers 3" in command

    service_name = next(k for k in parts if k.endswith(".service"))
    timer_name = next(k for k in parts if k.endswith(".timer"))
    service = configparser.ConfigParser(interpolation=None, strict=True)
    service.optionxform = str  # type: ignore[assignment,method-assign]
    service.read_string(parts[service_name])
    timer = configparser.ConfigParser(interpolation=None, strict=True)
    timer.optionxform = str  # type: ignore[assignment,method-assign]
    timer.read_string(parts[timer_name])
    assert timer["Timer"]["OnCalendar"] == "*-*-* 01:30:00"
    assert timer["Timer"]["Unit"] == Path(service_name).name
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["TimeoutStartSec"] == "7200"
    exec_start = shlex.split(service["Service"]["ExecStart"].replace("%%", "%").replace("$$", "$"))
    assert exec_start[:2] == ["/bin/sh", "-c"]
    bash_syntax_ok(exec_start[2])
    assert exec_start[2].startswith("exec ") and '--study-name "nightly-$(date +%Y%m%d)"' in exec_start[2]


@pytest.mark.parametrize("target", ["slurm", "k8s", "cron"])
def test_a_password_is_never_written_into_a_script(
    cli: Callable[..., Any], write_study: Callable[..., Path], target: str
) -> None:
    # A URL with a password is refused (exit 2, one line naming the option), and the password is not echoed.
    study_file = write_study(tiny_boston())
    result = cli("schedule", target, study_file, "--storage", "postgresql://hpo:s3cret@db/hpo")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "--storage" in result.stderr and "s3cret" not in result.stderr


def test_kubernetes_refuses_a_study_file_whose_storage_holds_a_password(
    cli: Callable[..., Any], write_study: Callable[..., Path]
) -> None:
    # The study file is copied into the ConfigMap, so a password in it would be published.
    study_file = write_study(tiny_boston(storage="postgresql://hpo:s3cret@db/hpo"))
    result = cli("schedule", "k8s", study_file)
    assert result.exit_code == 2 and result.stdout == ""
    assert "s3cret" not in result.stderr


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90m", 5400), ("4h", 14400), ("1d", 86400), ("02:30:00", 9000), ("1-00:00:30", 86430), ("45s", 45)],
)
def test_time_limits_are_read_in_common_forms(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--time-limit", "soon"], "--time-limit"),
        (["--at", "25:00"], "--at"),
        (["--time-limit", "0m"], "--time-limit"),
        (["--image", ""], "--image"),  # kubectl would reject the manifest
        (["--secret", "Bad_Name"], "--secret"),
    ],
)
def test_bad_options_are_refused_with_the_option_named(
    cli: Callable[..., Any], write_study: Callable[..., Path], args: list[str], named: str
) -> None:
    result = cli("schedule", "slurm", write_study(tiny_boston()), *args)
    assert result.exit_code == 2 and result.stdout == ""
    assert named in result.stderr


def test_a_file_objective_travels_with_the_kubernetes_study_and_is_named_elsewhere(
    cli: Callable[..., Any], write_study: Callable[..., Path], tmp_path: Path
) -> None:
    # An objective file beside the study file goes into the ConfigMap, so the pods' mounted folder holds
    # both and the study's relative `objective:` resolves there; one in another folder cannot travel and
    # the command says what the workers need.
    (tmp_path / "own.py").write_text("def train(ctx):\n    return {'score': 1.0}\n")
    study = {"name": "own", "objective": "own.py:train", "metric": "score", "direction": "maximize", "n_trials": 1}
    result = cli("schedule", "k8s", write_study(study))
    assert result.exit_code == 0, result.output
    config_map = next(yaml.safe_load_all(result.stdout))
    mounted = tmp_path / "mounted"  # what the pods see at /etc/hpo
    mounted.mkdir()
    for name, text in config_map["data"].items():
        (mounted / name).write_text(text)
    assert sorted(config_map["data"]) == ["own.py", "study.yaml"]
    shown = cli("validate", mounted / "study.yaml")
    assert shown.exit_code == 0 and f"(file: {mounted / 'own.py'})" in shown.stdout

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "own.py").write_text("def train(ctx):\n    return {'score': 1.0}\n")
    for target in ("k8s", "slurm"):
        elsewhere = cli(
            "schedule",
            target,
            write_study({**study, "objective": "models/own.py:train"}, name="elsewhere.yaml"),
            "--storage",
            "postgresql://hpo@db:5432/hpo",
        )
        assert elsewhere.exit_code == 0, elsewhere.output
        assert (
            f"warning: objective models/own.py:train is the file {tmp_path / 'models' / 'own.py'}: the workers need it"
            in elsewhere.stderr
        )


@pytest.mark.parametrize("target", ["slurm", "k8s"])
def test_a_grpc_storage_proxy_is_passed_to_the_workers_and_named_in_the_output(
    cli: Callable[..., Any], write_study: Callable[..., Path], target: str
) -> None:
    # With --storage grpc://HOST:PORT the workers (and the create step) get the proxy's URL, and the
    # script says that the proxy must be running first and how to start it; nothing opens the database.
    study_file = write_study(tiny_boston(name="many"))
    result = cli("schedule", target, study_file, "--workers", "32", "--storage", "grpc://hpo-proxy:13000")
    assert result.exit_code == 0, result.output
    assert "gRPC storage proxy at hpo-proxy:13000" in result.stdout
    assert "hpo server --host 0.0.0.0 --grpc-port 13000 --storage postgresql://" in result.stdout
    if target == "slurm":
        bash_syntax_ok(result.stdout)
        assert "export HPO_STORAGE=grpc://hpo-proxy:13000" in result.stdout.splitlines()
    else:
        _, job, _ = yaml.safe_load_all(result.stdout)
        pod = job["spec"]["template"]["spec"]
        for container in (*pod["initContainers"], *pod["containers"]):
            assert {"name": "HPO_STORAGE", "value": "grpc://hpo-proxy:13000"} in container["env"]
    # without a proxy, the output points to it for sweeps of many workers
    plain = cli("schedule", target, study_file, "--storage", PG)
    assert "--storage grpc://HOST:13000" in plain.stdout
