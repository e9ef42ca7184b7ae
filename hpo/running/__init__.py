"""Running a study: the Optuna storage (database or gRPC proxy), the runner that claims, trains and records trials,
the MLflow tracker, and what reads a study's results back (results, reconcile, resume).

May import `hpo.config`, `hpo.objectives`, `hpo.training` and `hpo.errors`; imported by the CLI, evaluation,
reports and operations. Nothing here is imported by `hpo.config`, so validating a study stays torch- and Optuna-free.
"""
