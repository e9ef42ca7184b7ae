"""`hpo doctor`: check the storage, the tracking server, the data cache and the devices; say what is wrong.

Each finding is one line with its fix. Nothing is written anywhere: databases are only connected to
and read (an empty one is fine, hpo creates the schema on its first run). Network checks run in daemon
threads with connect timeouts and one shared deadline, so a host that is down costs a few seconds and
never a hang, and a check that misses the deadline is itself reported.

Modules: `_findings` (the report), `_diagnose` (running the checks under the deadline), `_storage`
(Optuna), `_tracking` (MLflow), `_databases` (connecting to a database server or SQLite file), `_host`
(data, devices, versions).
"""

from hpo.operations.doctor._databases import check_separate_databases
from hpo.operations.doctor._diagnose import diagnose
from hpo.operations.doctor._findings import CONNECT_TIMEOUT, DEADLINE, Finding, Report, Sources
from hpo.operations.doctor._host import check_data, check_devices, check_versions
from hpo.operations.doctor._storage import check_grpc_proxy, check_storage
from hpo.operations.doctor._tracking import check_tracking

__all__ = [
    "CONNECT_TIMEOUT",
    "DEADLINE",
    "Finding",
    "Report",
    "Sources",
    "check_data",
    "check_devices",
    "check_grpc_proxy",
    "check_separate_databases",
    "check_storage",
    "check_tracking",
    "check_versions",
    "diagnose",
]
