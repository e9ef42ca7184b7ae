"""Optuna's trials read from its tables as plain rows, without the ORM.

Optuna's RDBStorage builds every trial it reads through SQLAlchemy's ORM: one mapped object per trial and
per param, value, curve point and attribute, each tracked by a session. With 32 workers re-reading each
other's running trials at every ask that was most of a worker's CPU. The same six queries read as tuples
build trials equal to Optuna's at a fraction of the cost. :class:`LeanRDBStorage` is Optuna's storage with
its trial reads done this way, and its heartbeat (written every interval by every worker) as one statement;
everything else it writes is Optuna's own code.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Container
from datetime import timedelta
from typing import Any

import sqlalchemy
from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

_TRIALS = models.TrialModel.__table__


def read_trials(
    conn: sqlalchemy.Connection,
    where: sqlalchemy.ColumnElement[bool],
    *,
    intermediate_values: bool = True,
    user_attrs: Collection[str] | None = None,
    system_attrs: Collection[str] | None = None,
) -> list[FrozenTrial]:
    """The trials whose `trials` row matches `where`, in trial-id order, built as Optuna builds them.

    Without `intermediate_values` their curves are left empty; `user_attrs`/`system_attrs` name the only
    attributes read (None: all). Optuna stores params in internal form with their distribution as JSON,
    values and curve points with their kind (finite, inf, nan) beside them, attributes as JSON.
    """
    ids = sqlalchemy.select(_TRIALS.c.trial_id).where(where)
    rows = conn.execute(
        sqlalchemy.select(
            _TRIALS.c.trial_id, _TRIALS.c.number, _TRIALS.c.state, _TRIALS.c.datetime_start, _TRIALS.c.datetime_complete
        )
        .where(where)
        .order_by(_TRIALS.c.trial_id)
    ).all()
    if not rows:
        return []
    v = models.TrialValueModel.__table__
    values: dict[int, dict[int, float]] = {}
    for trial_id, objective, value, kind in conn.execute(
        sqlalchemy.select(v.c.trial_id, v.c.objective, v.c.value, v.c.value_type).where(v.c.trial_id.in_(ids))
    ):
        values.setdefault(trial_id, {})[objective] = models.TrialValueModel.stored_repr_to_value(value, kind)
    p = models.TrialParamModel.__table__
    params: dict[int, dict[str, Any]] = {}
    dists: dict[int, dict[str, BaseDistribution]] = {}
    parsed: dict[str, BaseDistribution] = {}  # distributions are immutable: one object per JSON text
    for trial_id, name, value, dist_json in conn.execute(
        sqlalchemy.select(p.c.trial_id, p.c.param_name, p.c.param_value, p.c.distribution_json)
        .where(p.c.trial_id.in_(ids))
        .order_by(p.c.param_id)
    ):
        dist = parsed.get(dist_json) or parsed.setdefault(dist_json, json_to_distribution(dist_json))
        params.setdefault(trial_id, {})[name] = dist.to_external_repr(value)
        dists.setdefault(trial_id, {})[name] = dist
    attrs: dict[tuple[str, int], dict[str, Any]] = {}
    for kind, table, keys in (
        ("user", models.TrialUserAttributeModel.__table__, user_attrs),
        ("system", models.TrialSystemAttributeModel.__table__, system_attrs),
    ):
        if keys is not None and not keys:
            continue
        query = sqlalchemy.select(table.c.trial_id, table.c.key, table.c.value_json).where(table.c.trial_id.in_(ids))
        if keys is not None:
            query = query.where(table.c.key.in_(sorted(keys)))
        for trial_id, key, value_json in conn.execute(query):
            attrs.setdefault((kind, trial_id), {})[key] = json.loads(value_json)
    curves: dict[int, dict[int, float]] = {}
    if intermediate_values:
        iv = models.TrialIntermediateValueModel.__table__
        for trial_id, step, value, kind in conn.execute(
            sqlalchemy.select(iv.c.trial_id, iv.c.step, iv.c.intermediate_value, iv.c.intermediate_value_type).where(
                iv.c.trial_id.in_(ids)
            )
        ):
            curves.setdefault(trial_id, {})[step] = (
                models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(value, kind)
            )
    trials = []
    for trial_id, number, state, started, completed in rows:
        got = values.get(trial_id)
        trials.append(
            FrozenTrial(
                number=number,
                state=state,
                value=None,
                values=[got[i] for i in sorted(got)] if got else None,
                datetime_start=started,
                datetime_complete=completed,
                params=params.get(trial_id, {}),
                distributions=dists.get(trial_id, {}),
                user_attrs=attrs.get(("user", trial_id), {}),
                system_attrs=attrs.get(("system", trial_id), {}),
                intermediate_values=curves.get(trial_id, {}),
                trial_id=trial_id,
            )
        )
    return trials


def grace_seconds(heartbeat_interval: int, grace_period: int | None) -> int:
    """Optuna's grace period: a running trial whose last beat is older than this is stale (twice the
    heartbeat interval unless set). Every storage hpo opens applies it this way."""
    return 2 * heartbeat_interval if grace_period is None else grace_period


class LeanRDBStorage(RDBStorage):
    """Optuna's RDBStorage, its trials read by :func:`read_trials` (the same trials, without the ORM), its
    heartbeat written in one statement and its stale trials found with plain queries."""

    def record_heartbeat(self, trial_id: int) -> None:
        # Optuna's ORM took a read, a locking read, a read of the clock and a write for each beat; here the
        # row's time moves to the database's clock in one UPDATE, and a trial's first beat inserts the row
        # with the column's own default, as Optuna's does (trial_id is unique: one row per trial).
        beats = models.TrialHeartbeatModel.__table__
        with self.engine.begin() as conn:
            moved = conn.execute(
                beats.update().where(beats.c.trial_id == trial_id).values(heartbeat=sqlalchemy.func.now())
            )
            if moved.rowcount == 0:
                conn.execute(beats.insert().values(trial_id=trial_id))

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # Optuna's rule (a running trial whose last beat is older than the grace period, on the database's
        # clock; a trial that never beat is not stale) on two plain queries instead of every running trial
        # loaded through the ORM: each worker asks once a heartbeat interval.
        assert self.heartbeat_interval is not None
        grace = timedelta(seconds=grace_seconds(self.heartbeat_interval, self.grace_period))
        beats = models.TrialHeartbeatModel.__table__
        with self.engine.connect() as conn:
            now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar_one().replace(tzinfo=None)
            rows = conn.execute(
                sqlalchemy.select(beats.c.trial_id, beats.c.heartbeat)
                .join(_TRIALS, _TRIALS.c.trial_id == beats.c.trial_id)
                .where(_TRIALS.c.study_id == study_id, _TRIALS.c.state == TrialState.RUNNING)
                .order_by(beats.c.trial_id)
            ).all()
        return [trial_id for trial_id, beat in rows if now - beat > grace]

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self.engine.connect() as conn:
            trials = read_trials(conn, _TRIALS.c.trial_id == trial_id)
        if not trials:
            raise KeyError(models.NOT_FOUND_MSG)
        return trials[0]

    def _get_trials(
        self,
        study_id: int,
        states: Container[TrialState] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[FrozenTrial]:
        # Optuna's selection: the trials named, or newer than the id given, in the states given.
        where = _TRIALS.c.study_id == study_id
        if states is not None:
            where &= _TRIALS.c.state.in_([s for s in TrialState if s in states])
        included = sorted(i for i in included_trial_ids if i <= trial_id_greater_than)
        if trial_id_greater_than > -1:
            newer = _TRIALS.c.trial_id > trial_id_greater_than
            where &= (newer | _TRIALS.c.trial_id.in_(included)) if included else newer
        studies = models.StudyModel.__table__
        with self.engine.connect() as conn:
            if (
                conn.execute(sqlalchemy.select(studies.c.study_id).where(studies.c.study_id == study_id)).first()
                is None
            ):
                raise KeyError(models.NOT_FOUND_MSG)
            return read_trials(conn, where)


__all__ = ["LeanRDBStorage", "grace_seconds", "read_trials"]
