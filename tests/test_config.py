"""Config: every error names its key; env and CLI override the file; the shipped config is valid."""
import textwrap

import pytest

from conftest import REPO, vigil
from pipeline.config import ConfigError, load_config


def write(tmp_path, text):
    path = tmp_path / "vigil.toml"
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """
    [source]
    type = "file"
    path = "events.jsonl"
    [[operators]]
    name = "outlier"
    type = "zscore"
    fields = ["cpu"]
    [[operators]]
    name = "drift"
    type = "drift"
    fields = ["score:outlier", "cpu"]
    [operators.params]
    detector = "kswin"
    detector_params = { alpha = 0.001, window_size = 200 }
"""


def test_valid_file_loads_with_defaults(tmp_path):
    config = load_config(write(tmp_path, GOOD), environ={})
    assert config.metrics.port == 9108 and config.pipeline.shards == 16
    specs = config.operator_specs()
    assert [s.type for s in specs] == ["zscore", "drift"]
    assert specs[1].params.detector_params == {"alpha": 0.001, "window_size": 200}


def test_every_error_is_reported_with_its_key(tmp_path):
    bad = write(
        tmp_path,
        """
        [source]
        type = "file"
        [pipeline]
        shards = 0
        batch_max_sise = 10
        [[operators]]
        name = "outlier"
        type = "zscore"
        fields = ["cpu"]
        [operators.params]
        alpha = "fast"
        [[operators]]
        name = "drift"
        type = "drift"
        fields = ["score:nothing"]
        [operators.params]
        detector = "adwinn"
        [[operators]]
        name = "drift2"
        type = "drift"
        fields = ["cpu"]
        [operators.params]
        detector_params = { treshold = 5.0 }
        [metrics]
        port = 70000
        [demo]
        start = "2026-01-01 noon"
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_config(bad, environ={})
    text = str(caught.value)
    for key, hint in [
        ("source.path", "required"),
        ("pipeline.shards", "out of range"),
        ("pipeline.batch_max_sise", "did you mean 'batch_max_size'?"),
        ("operators[0].params.alpha", "expected float"),
        ("operators[1].fields[0]", "is not a column an earlier operator publishes"),
        ("operators[1].params.detector", "did you mean 'adwin'?"),
        ("operators[2].params.detector_params.treshold", "did you mean 'threshold'?"),
        ("metrics.port", "out of range"),
        ("demo.start", "not an RFC 3339 time"),
    ]:
        line = next((row for row in text.splitlines() if row.strip().startswith(key + ":")), None)
        assert line is not None, f"{key} not reported in:\n{text}"
        assert hint in line


def test_precedence_file_then_env_then_cli(tmp_path):
    path = write(tmp_path, GOOD + "\n[metrics]\nport = 9000\n")
    assert load_config(path, environ={}).metrics.port == 9000
    env = {"VIGIL_METRICS__PORT": "9100", "VIGIL_PIPELINE__SHARDS": "4", "VIGIL_DEVICE": "cpu"}
    config = load_config(path, environ=env)
    assert (config.metrics.port, config.pipeline.shards) == (9100, 4)
    assert load_config(path, ["metrics.port=9200", "operators.0.params.alpha=0.1"], environ=env).metrics.port == 9200
    assert load_config(path, ["operators.0.params.alpha=0.1"], environ={}).operator_specs()[0].params.alpha == 0.1


def test_unknown_env_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"metrics\.prot: unknown key \(did you mean 'port'\?\)"):
        load_config(write(tmp_path, GOOD), environ={"VIGIL_METRICS__PROT": "1"})


def test_config_check_cli(tmp_path):
    good = write(tmp_path, GOOD)
    assert "OK" in vigil("config", "check", str(good)).stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[metrics]\nport = "x"\nextra = 1\n')
    result = vigil("config", "check", str(bad), check=False)
    assert result.returncode == 2
    assert "metrics.port: expected int" in result.stderr and "metrics.extra: unknown key" in result.stderr
    assert "operators: no operators configured" in result.stderr


def test_shipped_example_is_valid_and_printed(tmp_path):
    example = vigil("config", "example").stdout
    path = tmp_path / "example.toml"
    path.write_text(example)
    assert "OK" in vigil("config", "check", str(path)).stdout
    assert example == (REPO / "pipeline" / "default.toml").read_text()


def test_kafka_settings_are_checked_and_secrets_stay_out_of_the_config(tmp_path):
    path = write(tmp_path, """
        [source]
        type = "kafka"
        [[operators]]
        name = "outlier"
        type = "zscore"
        fields = ["cpu"]
        [sinks.alerts]
        type = "kafka"
        [kafka]
        sasl_mechanism = "PLAIN"
        sasl_password_file = "/nonexistent/password"
        consumer = { "sasl.password" = "hunter2" }
    """)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    problems = {issue.key: issue.message for issue in error.value.issues}
    assert problems == {
        "source.topics": "required when source.type = 'kafka'",
        "sinks.alerts.topic": "required when type = 'kafka'",
        "kafka.security_protocol": "is PLAINTEXT but sasl_mechanism is set",
        "kafka.sasl_password_file": "cannot read /nonexistent/password: No such file or directory",
        "kafka.consumer.sasl.password": "secrets may not be written in the config",
    }
    assert "hunter2" not in str(error.value)


# ---- every bounded operator parameter is checked by `vigil config check` ----

def _bounded_params():
    """(type, dotted key, bad value, why) for every constrained parameter of every registered operator type."""
    import dataclasses

    from operators.registry import OPERATOR_TYPES

    def walk(params_class, prefix=""):
        for spec in dataclasses.fields(params_class):
            meta, key = spec.metadata, prefix + spec.name
            default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
            if dataclasses.is_dataclass(default):
                yield from walk(type(default), key + ".")
            elif meta.get("min") is not None or meta.get("max") is not None:
                low, high = meta.get("min"), meta.get("max")
                yield key, (low - 1 if low is not None else high + 1), "out of range"
                yield key, "many", "expected"
            elif meta.get("choices") or meta.get("pattern"):
                yield key, "nonsense", "is not allowed"
                yield key, 7, "is not allowed" if meta.get("choices") else "expected"

    for type_name, cls in sorted(OPERATOR_TYPES.items()):
        for key, value, why in walk(cls.Params):
            yield pytest.param(type_name, key, value, why, id=f"{type_name}.{key}={value!r}")


def _toml_value(value):
    return f'"{value}"' if isinstance(value, str) else repr(value)


@pytest.mark.parametrize("type_name,key,value,why", list(_bounded_params()))
def test_config_check_names_every_bad_operator_parameter(tmp_path, capsys, type_name, key, value, why):
    from operators.registry import OPERATOR_TYPES
    from pipeline.cli import main

    fields = OPERATOR_TYPES[type_name].contract_cases()[0][0]
    table, _, name = key.rpartition(".")
    params = f"[operators.params{'.' + table if table else ''}]\n{name} = {_toml_value(value)}\n"
    path = tmp_path / "vigil.toml"
    path.write_text(f'[source]\ntype = "file"\npath = "e.jsonl"\n[[operators]]\nname = "op"\ntype = "{type_name}"\n'
                    f"fields = {fields!r}\n{params}".replace("'", '"'))
    assert main(["config", "check", str(path)]) == 2
    errors = capsys.readouterr().err
    line = next((line for line in errors.splitlines() if line.strip().startswith(f"operators[0].params.{key}:")), None)
    assert line is not None and why in line, errors


def test_config_check_builds_the_operators(tmp_path):
    path = write(tmp_path, """
        [source]
        type = "file"
        path = "events.jsonl"
        [[operators]]
        name = "trees"
        type = "hst"
        fields = ["cpu"]
        [operators.params]
        limits = { mem = [0.0, 1.0] }
        [operators.params.alerting]
        window = 50
        tail = 60
        [[operators]]
        name = "drift"
        type = "drift"
        fields = ["cpu"]
        [operators.params]
        detector = "kswin"
        detector_params = { alpha = 2.0 }
        [entities]
        max_per_shard = 0
    """)
    result = vigil("config", "check", str(path), check=False)
    assert result.returncode == 2
    assert "operators[0].params.alerting.tail: 60 must be smaller than alerting.window (50)" in result.stderr
    assert "operators[1].params.detector_params: KSWIN refuses them" in result.stderr
    assert "entities.max_per_shard: 0 is out of range" in result.stderr
