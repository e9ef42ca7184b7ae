"""`python -m hpo` runs the same CLI as the `hpo` console script."""

from hpo.cli import main

main()
