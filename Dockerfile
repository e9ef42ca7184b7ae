# The image of docker-compose.yml's services: hpo on CPU (the MLflow server, the study creator, the
# workers and optuna-dashboard). torch and torchvision are the versions pinned in pyproject.toml, from
# PyTorch's CPU wheel index: the default index would bring the much larger CUDA build.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 HPO_DATA_DIR=/data
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1

WORKDIR /work
COPY pyproject.toml README.md ./
COPY hpo ./hpo
RUN pip install '.[dashboard]'
COPY studies ./studies

# A user of its own; the volumes mounted at /data and /mlartifacts start out owned by it.
RUN useradd --create-home --uid 1000 hpo && mkdir -p /data /mlartifacts && chown hpo /data /mlartifacts /work
USER hpo
CMD ["hpo", "--help"]
