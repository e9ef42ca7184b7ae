"""The budget lock and a worker's engines on PostgreSQL when the server refuses connections ("too many
clients" when many workers start at once): a worker waits for a connection to free up, and after its
patience ends with one line naming the storage and the way out, not a traceback. Real PostgreSQL, a role
limited to one connection."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg2
import pytest
import sqlalchemy

from hpo.errors import ServiceError
from hpo.running.databases import wait_for_connections
from hpo.running.storage import budget_lock
from tests.conftest import PG_HOST, PG_PORT, PG_USER

T = TypeVar("T")


@pytest.fixture
def one_connection_role(postgres_available: None) -> Iterator[str]:
    """A login role PostgreSQL lets hold a single connection (superusers are exempt from such limits)."""
    role = f"hpo_test_limited_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 1')
    try:
        yield role
    finally:
        admin.cursor().execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        admin.cursor().execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


def _url(role: str, database: str) -> str:
    return f"postgresql+psycopg2://{role}@{PG_HOST}:{PG_PORT}/{database}"


def _waits_until_released(held: Any, call: Callable[[], T]) -> T:
    """Run `call` in a thread while `held` (the role's only connection) is open: after 1.5 s it must still be
    waiting, neither done nor failed; once `held` closes it must finish. Its result."""
    done: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            done.append(call())
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(1.5)
    assert not done and not errors  # still waiting, not failed
    held.close()
    worker.join(timeout=30)
    assert not errors, errors
    assert done
    return done[0]


def test_a_worker_waits_for_a_connection_while_the_server_refuses_one(
    pg_url: Callable[[str], str], one_connection_role: str
) -> None:
    # The role's only connection is taken; budget_lock keeps retrying instead of failing, and enters the
    # lock once that connection closes (1.5 s later).
    database = pg_url("lock").rsplit("/", 1)[1]
    held = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=one_connection_role, dbname=database)

    def ask() -> float:
        started = time.monotonic()
        with budget_lock(_url(one_connection_role, database), f"study-{uuid.uuid4().hex}", patience=30):
            return time.monotonic() - started

    assert _waits_until_released(held, ask) >= 1.0


def test_a_worker_refused_past_its_patience_fails_with_one_line_naming_the_storage(
    pg_url: Callable[[str], str], one_connection_role: str
) -> None:
    # After the patience, a ServiceError (exit code 1): one line with the field, the refusal and what to do.
    database = pg_url("lock").rsplit("/", 1)[1]
    held = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=one_connection_role, dbname=database)
    try:
        started = time.monotonic()
        with pytest.raises(ServiceError) as raised, budget_lock(_url(one_connection_role, database), "s", patience=1):
            pytest.fail("the lock was entered with no connection to hold it")
        assert time.monotonic() - started < 15
    finally:
        held.close()
    message = str(raised.value)
    assert "\n" not in message and raised.value.exit_code == 1
    assert message.startswith("storage: ") and "too many connections" in message
    assert "hpo server --grpc-port" in message and "max_connections" in message


def test_an_engine_made_patient_waits_for_a_free_slot_and_fails_at_once_on_other_refusals(
    pg_url: Callable[[str], str], one_connection_role: str
) -> None:
    # A worker's storage and tracking engines (wait_for_connections): a query made while every slot is
    # taken waits until one frees (32 workers on a server of 100 connections), instead of failing the
    # worker; a refusal that will not pass by itself (no such database) fails at once.
    database = pg_url("lock").rsplit("/", 1)[1]
    engine = wait_for_connections(
        sqlalchemy.create_engine(_url(one_connection_role, database), poolclass=sqlalchemy.pool.NullPool)
    )
    held = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=one_connection_role, dbname=database)

    def query() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sqlalchemy.text("SELECT 1")).scalar_one())

    assert _waits_until_released(held, query) == 1
    missing = wait_for_connections(sqlalchemy.create_engine(_url(PG_USER, f"hpo_no_such_db_{uuid.uuid4().hex[:8]}")))
    started = time.monotonic()
    with pytest.raises(sqlalchemy.exc.OperationalError, match="does not exist"):
        missing.connect()
    assert time.monotonic() - started < 2
    for each in (engine, missing):
        each.dispose()
