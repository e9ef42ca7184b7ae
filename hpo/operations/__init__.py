"""Operating hpo beside a study: the MLflow + gRPC server, health checks (`hpo doctor`), scheduler scripts and
database administration (`hpo db`).

May import everything below the CLI (`hpo.config`, `hpo.running`); only the CLI imports it.
"""
