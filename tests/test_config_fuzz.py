"""Fuzzing the study-file loader: whatever the file holds, the answer is a valid config or one clean
UsageError line naming the file, never another exception (a traceback for a user mistake)."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpo.config import StudyConfig, load_study, parse_study, study_to_yaml
from hpo.errors import UsageError
from tests.conftest import tiny_boston

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)

# Words the loader reacts to, so generated files reach deep into validation rather than stopping at
# the first unknown key.
KEYS = [
    "name",
    "objective",
    "metric",
    "direction",
    "seed",
    "n_trials",
    "timeout",
    "storage",
    "tracking_uri",
    "sampler",
    "pruner",
    "data",
    "params",
    "fixed",
    "evaluation",
    "execution",
    "type",
    "low",
    "high",
    "log",
    "step",
    "choices",
    "when",
    "lr",
    "width",
    "optimizer",
    "momentum",
    "epochs",
    "batch_norm",
    "val_fraction",
    "test_fraction",
    "drop_features",
    "nan_policy",
    "max_consecutive_failures",
    "n_startup_trials",
    "wrapped",
]
WORDS = [
    *KEYS,
    "boston",
    "cifar10",
    "float",
    "int",
    "categorical",
    "tpe",
    "grid",
    "median",
    "patient",
    "sgd",
    "adam",
    "minimize",
    "maximize",
    "val_rmse",
    "sqlite:///x.db",
    "http://h:1",
    "",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(-3, 3), st.booleans())
documents = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=30,
)


def _check(load: Any) -> None:
    """Run the loader: a config must also print and read back; an error must be one line."""
    try:
        config = load()
    except UsageError as exc:
        message = str(exc)
        assert message and "\n" not in message, message
        return
    assert isinstance(config, StudyConfig)
    printed = study_to_yaml(config)  # what `hpo validate` prints must never fail
    assert parse_study(yaml.safe_load(printed)).resolved() == config.resolved()


@FUZZ
@given(documents)
def test_generated_structures_load_or_fail_cleanly(data: Any) -> None:
    _check(lambda: parse_study(data, source="fuzz.yaml"))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


BASES = [
    tiny_boston(execution={"nan_policy": "fail"}, data={"val_fraction": 0.2}),
    {
        "name": "cifar",
        "objective": "cifar10",
        "params": {
            "model": {"type": "categorical", "choices": ["cnn", "resnet"]},
            "conv_blocks": {"type": "int", "low": 1, "high": 4},
            "pooling": {"type": "categorical", "choices": ["max", "avg"], "when": {"model": ["cnn"]}},
            "kernel_size": {"type": "int", "low": 3, "high": 5, "step": 2},
        },
        "fixed": {"epochs": 2, "stride": 1, "padding": "same", "filters": 8, "augment_flip": True},
    },
]


@st.composite
def mutated_studies(draw: st.DrawFn) -> Any:
    """A valid study with a few random edits: delete, replace or rename at a random place."""
    study: Any = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(study)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "rename"]))
        if not path:
            if action == "replace":
                study = draw(documents)
            continue
        parent = study
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        if action == "replace":
            parent[last] = draw(documents)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(keys)] = parent.pop(last)
    return study


@FUZZ
@given(mutated_studies())
def test_mutations_of_a_valid_study_load_or_fail_cleanly(study: Any) -> None:
    _check(lambda: parse_study(study, source="fuzz.yaml"))


@st.composite
def mutated_texts(draw: st.DrawFn) -> str:
    """The YAML text of a valid study with characters inserted, deleted or swapped."""
    text = yaml.safe_dump(tiny_boston(), sort_keys=False, default_flow_style=draw(st.booleans()))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["insert", "delete", "swap"]))
        piece = draw(
            st.one_of(
                st.sampled_from(
                    [
                        ":",
                        "-",
                        "[",
                        "]",
                        "{",
                        "}",
                        "&a ",
                        "*a",
                        "!!",
                        "'",
                        '"',
                        "#",
                        "\t",
                        "\n",
                        "  ",
                        "?",
                        "|",
                        ">",
                        "%",
                        "@",
                        "`",
                        ",",
                        ".inf",
                        "~",
                        "\x00",
                        "\u2028",
                    ]
                ),
                st.text(max_size=3),
            )
        )
        if edit == "insert":
            text = text[:at] + piece + text[at:]
        elif edit == "delete":
            text = text[:at] + text[at + len(piece) :]
        else:
            text = text[:at] + piece + text[at + len(piece) :]
    return text


@FUZZ
@given(mutated_texts())
def test_mutated_study_text_loads_or_fails_cleanly(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "study.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        _check(lambda: load_study(path))
