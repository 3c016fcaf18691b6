"""Property tests of the config loader: any TOML file, environment and ``--set`` overrides give a config that keeps
every declared type and bound, or a ConfigError whose issues each name a key; never another exception."""
import contextlib
import dataclasses
import json
import math
import re
import sys
import tempfile
import tomllib
import typing
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from operators.params import check_value, scalar_type_ok
from operators.registry import OPERATOR_TYPES
from pipeline.config import Config, ConfigError, load_config

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECTIONS = [f.name for f in dataclasses.fields(Config)]
# Operators cheap to build with small parameters; the others (torch models, river trees) are built only with their
# defaults here, since a property test must not allocate a model sized by an arbitrary parameter.
CHEAP = ["zscore", "drift", "metric_stream", "knn", "knn_rshash", "fairness_monitor", "fair_decision", "dp_count"]


# ---- TOML documents: values, an emitter, and documents shaped by the config's schema ----

def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    return '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F or c in '"\\' else c for c in text) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (int, datetime, date, time)):
        return value.isoformat() if not isinstance(value, int) else str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(doc: dict) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in doc.items())


# sys.executable: a file that is not UTF-8 text (a secret file that cannot be read); "a\x00b": a path no file can have.
texts = st.text(max_size=12) | st.sampled_from(["", "a.b", "events.jsonl", "cpu", "score:outlier", "kafka", "auto",
                                                sys.executable, "a\x00b"])
scalars = (st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.integers(-3, 70) | st.floats() | texts
           | st.datetimes(timezones=st.sampled_from([None, timezone.utc, timezone(timedelta(hours=5, minutes=30))]))
           | st.dates() | st.times())
toml_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                           max_leaves=8)


def typed(hint: Any, meta: dict) -> st.SearchStrategy | None:
    """Valid values of a config field's declared type, within its bounds and small (sizes of things); None for free
    text, left at its default (its meaning is checked across keys: paths, times, secrets)."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return tables(hint)
    if origin is Literal:
        return st.sampled_from(typing.get_args(hint))
    if hint is bool:
        return st.booleans()
    low, high = meta.get("min"), meta.get("max")
    if hint is int:
        low = -2 if low is None else int(low)
        return st.integers(low, low + 64 if high is None else min(int(high), low + 64))
    if hint is float:
        return st.floats(-100.0 if low is None else low, 1e6 if high is None else high)
    return None


def tables(cls: type) -> st.SearchStrategy:
    """A valid-looking table for a config dataclass: its required keys and some optional ones."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: typed(hints[f.name], dict(f.metadata)) for f in dataclasses.fields(cls)}
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return st.fixed_dictionaries({}, optional={k: v for k, v in fields.items() if v is not None and k not in required})


@st.composite
def operators(draw):
    kind = draw(st.sampled_from(CHEAP) | st.sampled_from(list(OPERATOR_TYPES)))
    table = {"name": draw(st.sampled_from(["a", "b", "c"])), "type": kind,
             "fields": draw(st.lists(st.sampled_from(["cpu", "mem", "score:a"]), min_size=1, max_size=2))}
    if kind in CHEAP:
        table["params"] = draw(tables(OPERATOR_TYPES[kind].Params))
        if kind == "metric_stream":  # levels ** pattern bits per entity: gigabytes at levels 40, pattern 6
            table["params"]["pattern"] = draw(st.integers(1, 3))
    return table


def places(node: Any, found: list) -> list:
    """Every (container, key) in a document, nested tables and arrays included."""
    for key in (range(len(node)) if isinstance(node, list) else list(node)):
        found.append((node, key))
        if isinstance(node[key], (dict, list)):
            places(node[key], found)
    return found


@st.composite
def documents(draw):
    """A TOML document shaped like a config (valid sections and operators), then broken in up to three places: a value
    replaced by any TOML value, an unknown key added (of any name), a key removed."""
    doc = {name: draw(tables(typing.get_type_hints(Config)[name]))
           for name in draw(st.lists(st.sampled_from([s for s in SECTIONS if s != "operators"]), unique=True, max_size=4))}
    if draw(st.integers(0, 9)):
        doc["operators"] = draw(st.lists(operators(), min_size=1, max_size=3))
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3]))):
        node, key = draw(st.sampled_from(places(doc, [(doc, None)])))
        action = draw(st.sampled_from(["replace", "add", "remove"]))
        if key is None or action == "add":
            target = node[key] if key is not None else node
            if isinstance(target, dict):
                target[draw(texts)] = draw(toml_values)
        elif action == "replace":
            node[key] = draw(toml_values)
        elif isinstance(node, dict):
            del node[key]
        else:
            node.pop(key)
    return doc


# ---- invariants ----

_SEGMENT = re.compile(r'"(?:[^"\\]|\\.)*"|[A-Za-z0-9_-]+|\[-?\d+\]')


def segments(key: str) -> list:
    """``a.b[0]."c.d"`` as ``["a", "b", 0, "c.d"]``; None when the key is not written that way."""
    parts, at = [], 0
    while at < len(key):
        match = _SEGMENT.match(key, at + (1 if parts and key[at] == "." else 0))
        if not match:
            return None
        token = match.group()
        parts.append(json.loads(token) if token[0] == '"' else int(token[1:-1]) if token[0] == "[" else token)
        at = match.end()
    return parts


def check_issues(error: ConfigError, doc: dict | None, path: Path, heads: set = frozenset()) -> None:
    """Every issue names a key: the file (when it is not TOML), an override, or a path into the config whose first
    segment is a section, a key of the document or one an override set (``heads``); an unknown key's path is in the
    document as written."""
    assert error.issues
    for issue in error.issues:
        assert issue.key and issue.message, issue
        if issue.key == str(path) or issue.key.startswith(("--set ", "VIGIL_")):
            continue
        parts = segments(issue.key)
        assert parts and (parts[0] in SECTIONS or parts[0] in heads or (doc is not None and parts[0] in doc)), issue
        if issue.message == "unknown key" and doc is not None:
            node = doc
            for part in parts:
                assert isinstance(node, (dict, list)) and (part in node if isinstance(node, dict) else part < len(node)), \
                    (issue, doc)
                node = node[part]


def check_config(value: Any) -> None:
    """A loaded config keeps every field's declared type and bounds, all the way down."""
    hints = typing.get_type_hints(type(value))
    for spec in dataclasses.fields(value):
        item, hint = getattr(value, spec.name), hints[spec.name]
        if dataclasses.is_dataclass(item):
            check_config(item)
        elif typing.get_origin(hint) is Literal:
            assert item in typing.get_args(hint), (spec.name, item)
        elif typing.get_origin(hint) is list:
            assert isinstance(item, list)
            for element in item:
                check_config(element) if dataclasses.is_dataclass(element) else None
        elif typing.get_origin(hint) is None and hint is not Any:
            assert scalar_type_ok(item, hint) and check_value(item, spec.metadata) is None, (spec.name, item)


def load(text: str, environ: dict | None = None, overrides: tuple = ()) -> tuple[Config | None, ConfigError | None, Path]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vigil.toml"
        path.write_text(text, encoding="utf-8")
        try:  # in the folder: building dp_count creates its ledger directory, relative to the working directory
            with contextlib.chdir(folder):
                return load_config(path, overrides, environ=environ or {}), None, path
        except ConfigError as error:
            return None, error, path


# ---- the properties ----

BASE = {"source": {"type": "file", "path": "events.jsonl"}, "operators": [{"name": "a", "type": "zscore", "fields": ["x"]}]}


@SETTINGS
@given(text=st.text(max_size=200) | documents().map(toml_document).map(lambda t: t[: len(t) // 2]))
def test_any_text_gives_a_config_or_errors_naming_the_file_or_keys(text):
    """Text that is not TOML (or is cut short) is one issue naming the file; TOML text is a config or issues."""
    config, error, path = load(text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        doc = None
    if error is None:
        check_config(config)
    elif doc is None:
        assert [issue.key for issue in error.issues] == [str(path)] and "not valid TOML" in error.issues[0].message
    else:
        check_issues(error, doc, path)


@SETTINGS
@given(doc=documents())
@example(doc={"": 1, "a.b": {"c": 2}})  # issue keys were "" and "a.b.c", which name no key
@example(doc={**BASE, "kafka": {"sasl_password_file": "a\x00b", "ssl_key_password_file": sys.executable}})  # ValueErrors
# TypeError: an operator type that is a list (unhashable) was looked up in the registry to resolve model paths.
@example(doc={"operators": [{"name": "a", "type": ["zscore"], "fields": ["x"], "params": {}}]})
# MemoryError: metric_stream allocates levels ** pattern bits per entity, 64 ** 12 here (numpy refuses at once).
@example(doc={**BASE, "operators": [{"name": "a", "type": "metric_stream", "fields": ["x"],
                                    "params": {"levels": 64, "pattern": 12}}]})
# FileExistsError: dp_count's ledger folder is a file.
@example(doc={**BASE, "operators": [{"name": "a", "type": "dp_count", "fields": ["x"],
                                    "params": {"ledger": sys.executable, "categories": ["a", "b"]}}]})
# An operator that fails conversion is left out of config.operators: the next one's issues were named operators[0].
@example(doc={"operators": [{"name": "a", "type": "zscore", "fields": False}, {**BASE["operators"][0], "params": {"x": 1}}]})
def test_any_toml_document_gives_a_config_or_errors_naming_keys(doc):
    """Any TOML document (shaped like a config or not) loads into a config that keeps its declared types and bounds,
    or raises ConfigError, every issue naming a key of the document or a section."""
    text = toml_document(doc)
    config, error, path = load(text)
    if error is None:
        check_config(config)
        assert config.operators
    else:
        check_issues(error, doc, path)


override_keys = st.lists(st.sampled_from(SECTIONS + ["path", "type", "port", "name", "fields", "params", "0", "1", "-1",
                                                     "x"]) | texts, min_size=1, max_size=4).map(".".join)
override_values = st.sampled_from(["1", "-1", "true", '"text"', "[1, 2]", "{a = 1}", "inf", "", "a.b"]) | texts


@SETTINGS
@given(env=st.dictionaries(override_keys, override_values, max_size=3),
       sets=st.lists(st.tuples(override_keys, override_values).map("=".join) | texts, max_size=3))
@example(env={"source.path.x": "1"}, sets=[])  # TypeError: a key under a string
@example(env={"operators.x": "1"}, sets=[])  # ValueError: a list index that is not a number
@example(env={"operators.5.name": "1"}, sets=[])  # IndexError
@example(env={}, sets=["source.path.x.y=1"])  # AttributeError: str has no setdefault
def test_any_overrides_give_a_config_or_errors_naming_keys(env, sets):
    """Environment variables and --set items that address nothing (a key under a string, a list index that is not
    one or is past the end) are issues naming the override, like every other error."""
    environ = {"VIGIL_" + key.upper().replace(".", "__"): value for key, value in env.items()}
    config, error, path = load(toml_document(BASE), environ, tuple(sets))
    heads = {name[len("VIGIL_"):].lower().replace("__", ".").split(".")[0] for name in environ if "__" in name}
    heads |= {item.partition("=")[0].strip().split(".")[0] for item in sets}
    if error is None:
        check_config(config)
    else:
        check_issues(error, None, path, heads)


@pytest.mark.parametrize("value", ["1", '"x"', "[1]"])
def test_an_override_under_a_scalar_is_an_issue_naming_it(value):
    """The findings above, stated plainly: the env variable or --set item is named, nothing is raised."""
    _, error, _ = load(toml_document(BASE), {"VIGIL_SOURCE__PATH__X": value}, ("operators.x.y=1",))
    assert [issue.key for issue in error.issues] == ["VIGIL_SOURCE__PATH__X", "--set operators.x.y"]
