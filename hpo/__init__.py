"""hpo: experiment-tracking hyperparameter search with Optuna and MLflow."""

__version__ = "0.1.0"

import warnings as _warnings

# hpo uses Optuna's heartbeat, retry and ask-and-tell APIs on purpose; their "experimental" and
# "use Study.optimize" notices would only confuse users of the CLI.
_warnings.filterwarnings("ignore", message=r".*experimental.*")
_warnings.filterwarnings("ignore", message=r"Heartbeat of storage is supposed to be used with Study.optimize")
