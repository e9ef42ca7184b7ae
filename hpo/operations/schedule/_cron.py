"""cron and systemd: a nightly crontab line and a systemd service with its timer."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from hpo.operations.schedule._commands import STOP_GRACE_SECONDS
from hpo.operations.schedule._kubernetes import _k8s_name
from hpo.operations.schedule._plan import SweepPlan


def cron_entries(plan: SweepPlan) -> str:
    """A crontab line and, as an alternative, a systemd service and timer: a new study every night."""
    name = plan.study_name
    hour, minute = plan.at
    workdir = plan.study_file.parent
    log = workdir / f"hpo-{name}.log"
    command = _nightly_command(plan)
    pairs = _cron_env_pairs(plan)
    prefix = ["env", *(f"{k}={v}" for k, v in pairs)] if pairs else []
    if plan.time_limit:
        # SIGTERM at the limit: the workers close and re-queue their trials; killed if still there later.
        prefix += ["timeout", "--signal=TERM", f"--kill-after={STOP_GRACE_SECONDS}", str(plan.time_limit)]
    crontab_command = f"{shlex.join(prefix)} {command}" if prefix else command
    crontab = (
        f"{minute} {hour} * * * cd {shlex.quote(str(workdir))} && {crontab_command} >> {shlex.quote(str(log))} 2>&1"
    )
    crontab = crontab.replace("%", r"\%")  # a bare % ends the command in a crontab

    unit = f"hpo-{_k8s_name(name)}"
    service = [
        "[Unit]",
        f"Description=hpo nightly sweep of study {name}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        f"WorkingDirectory={_systemd_escape(str(workdir))}",
        *(f'Environment="{_systemd_escape(f"{k}={v}")}"' for k, v in _cron_env_pairs(plan)),
        f"EnvironmentFile=-/etc/hpo/{unit}.env",
        f'ExecStart=/bin/sh -c "{_systemd_escape("exec " + command)}"',
        # Only hpo run itself gets SIGTERM; it forwards one signal to each worker, which closes its trial.
        "KillMode=mixed",
        f"TimeoutStartSec={plan.time_limit or 'infinity'}",
        f"TimeoutStopSec={STOP_GRACE_SECONDS}",
    ]
    timer = [
        "[Unit]",
        f"Description=Nightly hpo sweep of study {name}",
        "",
        "[Timer]",
        f"OnCalendar=*-*-* {hour:02d}:{minute:02d}:00",
        "Persistent=true",
        f"Unit={unit}.service",
        "",
        "[Install]",
        "WantedBy=timers.target",
    ]
    return (
        "\n".join(
            [
                f"# hpo nightly sweep of study {name}: each night a new study {name}-YYYYMMDD,"
                f" {plan.workers} workers on this machine.",
                "# No credential is written here: PostgreSQL reads ~/.pgpass, MLflow ~/.mlflow/credentials;",
                f"# with systemd, secrets may also go in /etc/hpo/{unit}.env (mode 600).",
                "# --- crontab (crontab -e) ---",
                crontab,
                f"# --- /etc/systemd/system/{unit}.service ---",
                *service,
                f"# --- /etc/systemd/system/{unit}.timer ---",
                *timer,
                f"# --- enable: systemctl daemon-reload && systemctl enable --now {unit}.timer ---",
            ]
        )
        + "\n"
    )


def _hpo_program() -> list[str]:
    """hpo as an absolute path: cron and systemd start with a bare PATH."""
    script = Path(sys.executable).with_name("hpo")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hpo"]


def _nightly_command(plan: SweepPlan) -> str:
    """`hpo run` of tonight's study, as shell text (the date is the shell's)."""
    argv = [*_hpo_program(), "run", str(plan.study_file), "--workers", str(plan.workers), "--quiet"]
    return f'{shlex.join(argv)} --study-name "{plan.study_name}-$(date +%Y%m%d)"'


def _cron_env_pairs(plan: SweepPlan) -> list[tuple[str, str]]:
    pairs = [
        (k, v) for k, v in (("HPO_STORAGE", plan.storage), ("MLFLOW_TRACKING_URI", plan.tracking_uri)) if v is not None
    ]
    if plan.gpus is not None:
        pairs.append(("CUDA_VISIBLE_DEVICES", ",".join(str(i) for i in range(plan.gpus))))
    return pairs


def _systemd_escape(text: str) -> str:
    """Escape for a double-quoted systemd value: backslashes and quotes, then specifiers and variables."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
