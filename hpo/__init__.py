"""hpo: experiment-tracking hyperparameter search with Optuna and MLflow.

Layout, lowest layer first (each package's docstring says what it holds and what may import it):

- ``config/``      the study file: schema, rules, one-line errors, safe YAML, storage/tracking settings.
                   No torch, Optuna or MLflow; it reads objectives' declarations to check a study.
- ``objectives/``  what a trial trains: the plug-in interface and the built-ins (``boston``, ``cifar10``);
                   declarations stay torch-free, training code is imported when a trial runs.
- ``data/``, ``models/``, ``training/``  datasets and splits, network families, the training loop;
                   used by objectives (and evaluation), importing only config and objectives' vocabulary.
- ``running/``     a study running: storage and databases, the runner, MLflow tracking (every MLflow call),
                   the names of attributes and tags (``meta``), results.
- ``evaluation/``  the once-only test evaluation, ensembles, registry, predictions.
- ``report/``      the HTML report and the comparison of two studies.
- ``operations/``  the server, ``hpo doctor`` and scheduler scripts.
- ``cli/``         the ``hpo`` command: the only package that imports operations.
"""

__version__ = "0.1.0"
