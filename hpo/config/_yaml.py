"""The safe YAML reader for study files: no duplicate keys, and size and nesting capped before PyYAML runs."""

from __future__ import annotations

from typing import Any

import yaml

from hpo.errors import UsageError


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice, which plain YAML silently lets the last win."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            repeated = key in seen
        except TypeError:  # a list or mapping used as a key: valid YAML, never a study-file key
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain word, not a list or mapping", key_node.start_mark
            ) from None
        if repeated:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


MAX_VALUES = 50_000
MAX_FILE_BYTES = 1_000_000  # the shipped studies are under 2 kB; a long `enqueue` list fits easily
MAX_NESTING = 32  # the study file nests 4 levels (params.lr.when.optimizer); room for `patient` pruners


def _beyond_caps(text: str) -> str | None:
    """Why `text` is too big or too deeply nested to parse, judged without parsing it (or None).

    Items are counted by their separators (commas, line breaks, "- "), nesting by open brackets and by
    indentation; quoted text can only make the counts higher, never hide a large file.
    """
    if len(text) > MAX_FILE_BYTES:
        return f"the study file has {len(text):,} characters; a study file may have at most {MAX_FILE_BYTES:,}"
    items = text.count(",") + text.count("\n") + text.count("- ")
    if items > MAX_VALUES:
        return f"the study file holds about {items:,} values; a study file may hold at most {MAX_VALUES:,}"
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    indent = max((len(line) - len(line.lstrip(" -")) for line in text.splitlines()), default=0)
    if deepest > MAX_NESTING or indent > 2 * MAX_NESTING * 4:
        return (
            f"malformed YAML: nested more than {MAX_NESTING} levels deep "
            "(a study file nests a few levels, e.g. params.NAME.when)"
        )
    return None


def too_large(data: Any) -> bool:
    """True if the data, with YAML aliases expanded, holds more than MAX_VALUES values.

    Aliases let a few lines expand exponentially ("billion laughs") or refer to themselves; counting
    with a budget stops early either way, before validation or an error message walks the structure.
    """
    budget = MAX_VALUES
    stack = [data]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            return True
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple, set)):
            stack.extend(node)
    return False


def parse_yaml(text: str, *, source: str) -> Any:
    """YAML text -> data, or a UsageError naming the line and column of the first problem.

    Size and nesting are capped before parsing: PyYAML needs minutes and gigabytes for a few megabytes
    of list items, and recurses once per level of nesting.
    """
    problem = _beyond_caps(text)
    if problem:
        raise UsageError(f"{source}: {problem}")
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        detail = (
            f"{problem} ({context})"
            if context and mark is not None and mark is getattr(exc, "problem_mark", None)
            else problem
        )
        raise UsageError(f"{source}{where}: malformed YAML: {detail}") from None
    except RecursionError:
        raise UsageError(f"{source}: malformed YAML: nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # e.g. a timestamp PyYAML recognises but cannot build
        raise UsageError(f"{source}: malformed YAML: {exc}") from None
