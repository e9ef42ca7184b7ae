"""The databases Optuna and MLflow keep their schemas in: created once, crash-safe, and never another's.

Workers that start together on a fresh SQLite file used to race to create the same tables, and a worker
killed while MLflow migrated its schema left a half-migrated file that every later run refused. So:

- creation is serialized across processes: a file lock beside a SQLite file, a PostgreSQL advisory lock;
- a new SQLite store is built in a temporary file beside the target and moved into place, so the target
  is either absent or complete (a crash leaves only a temporary file, removed by the next start);
- before anything is written, a database is inspected read-only: a file that is not SQLite, a database
  holding another application's tables (or the other schema: Optuna's vs MLflow's), and a half-migrated
  or outdated schema are refused with the file and the fix. A half-built store that holds no data is
  rebuilt instead.

Modules: `_schemas` (Optuna's and MLflow's), `_sqlite` (how hpo opens SQLite files), `_inspect` (reading and
judging a database without writing), `_prepare` (creating a schema once), `_locks`.
"""

from hpo.running.databases._inspect import (
    Contents,
    Verdict,
    check_database,
    check_stores,
    judge,
    read_database,
    read_sqlite,
    same_database,
)
from hpo.running.databases._locks import (
    CONNECT_PATIENCE,
    advisory_lock,
    connect_patiently,
    database_init_lock,
    file_lock,
    lock_key,
    wait_for_connections,
)
from hpo.running.databases._prepare import Build, ensure_database, first_line, prepared_database
from hpo.running.databases._schemas import MLFLOW, OPTUNA, SCHEMAS, Schema, alembic_heads
from hpo.running.databases._sqlite import SQLITE_HEADER, connect_readonly, use_write_ahead_log

__all__ = [
    "CONNECT_PATIENCE",
    "MLFLOW",
    "OPTUNA",
    "SCHEMAS",
    "SQLITE_HEADER",
    "Build",
    "Contents",
    "Schema",
    "Verdict",
    "advisory_lock",
    "alembic_heads",
    "check_database",
    "check_stores",
    "connect_patiently",
    "connect_readonly",
    "database_init_lock",
    "ensure_database",
    "file_lock",
    "first_line",
    "judge",
    "lock_key",
    "prepared_database",
    "read_database",
    "read_sqlite",
    "same_database",
    "use_write_ahead_log",
    "wait_for_connections",
]
