"""Optuna's and MLflow's schemas: the tables that identify each, and the revisions this install knows."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Schema:
    """One application's schema: the tables that identify it, where its migrations are, how to upgrade it."""

    name: str  # "optuna" | "mlflow"
    owner: str  # for messages
    tables: frozenset[str]
    data_query: str  # counts what a user would lose: studies, runs
    package: str  # holds the alembic migrations, under `migrations`
    migrations: tuple[str, ...]
    upgrade: str  # the command that migrates an older schema, with {url}
    models: str  # "module:attribute" of the SQLAlchemy metadata that lists every table of the schema

    def all_tables(self) -> frozenset[str]:
        """Every table the installed version defines (imported only for the rare half-built store)."""
        import importlib

        module, attribute = self.models.split(":")
        return frozenset(getattr(importlib.import_module(module), attribute).metadata.tables)

    def migrations_dir(self) -> Path:
        import importlib.util

        spec = importlib.util.find_spec(
            self.package
        )  # the package's folder, without importing it (mlflow's import costs seconds)
        assert spec is not None and spec.submodule_search_locations
        return Path(next(iter(spec.submodule_search_locations))).joinpath(*self.migrations)


OPTUNA = Schema(
    "optuna",
    "Optuna",
    frozenset({"studies", "trials", "version_info"}),
    "SELECT COUNT(*) FROM studies",
    "optuna",
    ("storages", "_rdb", "alembic"),
    "optuna storage upgrade --storage '{url}'",
    "optuna.storages._rdb.models:BaseModel",
)


MLFLOW = Schema(
    "mlflow",
    "MLflow",
    frozenset({"experiments", "runs", "metrics"}),
    # The Default experiment is always there.
    "SELECT (SELECT COUNT(*) FROM runs) + (SELECT COUNT(*) FROM experiments) - 1",
    "mlflow",
    ("store", "db_migrations"),
    "mlflow db upgrade '{url}'",
    "mlflow.store.db.utils:Base",
)


SCHEMAS = (OPTUNA, MLFLOW)


@functools.cache
def alembic_heads(schema: Schema) -> tuple[str, frozenset[str]]:
    """The schema's newest revision and every revision this installed version knows.

    Read from the migration scripts' `revision =` and `down_revision =` lines: alembic's own
    ScriptDirectory imports every script, which takes seconds for MLflow's hundred.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (schema.migrations_dir() / "versions").glob("*.py"):
        text = script.read_text(encoding="utf-8")
        found = re.search(r"^revision\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
        if found is None:
            continue
        revisions.add(found[1])
        down = re.search(r"^down_revision\s*(?::[^=]*)?=\s*(.+)$", text, re.MULTILINE)
        if down is not None:
            parents.update(re.findall(r"['\"]([^'\"]+)['\"]", down[1]))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"{schema.owner}'s migrations have {len(heads)} heads; expected one")
    return next(iter(heads)), frozenset(revisions)
