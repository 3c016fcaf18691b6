"""Every command and option explains itself."""
import argparse

import pytest

from conftest import vigil
from pipeline.cli import build_parser


def parsers(parser=None, path=("vigil",)):
    parser = parser or build_parser()
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, (*path, name))


def test_every_option_of_every_command_has_help():
    seen = 0
    for path, parser in parsers():
        assert parser.description or len(path) == 1, f"{' '.join(path)} lacks a description"
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help) > 10, f"{' '.join(path)} {action.dest} lacks help"
            seen += 1
    assert seen > 20


@pytest.mark.parametrize("command", [[], ["demo"], ["run"], ["config"], ["config", "check"], ["config", "example"]])
def test_help_runs(command):
    out = vigil(*command, "--help").stdout
    assert out.startswith("usage: vigil")
    if command == ["demo"]:
        for option in ("--seed", "--events", "--bad-rate", "--rate", "--metrics-port", "--run-dir", "--set", "--config"):
            assert option in out


def test_run_on_a_file_source(tmp_path):
    events = tmp_path / "events.jsonl"
    rows = [f'{{"key":"k{i % 2}","ts":{1767225600000 + i * 1000},"fields":{{"cpu":{50 + (i % 3)}}}}}' for i in range(200)]
    rows[150] = '{"key":"k0","ts":1767225750000,"fields":{"cpu":500}}'
    rows.insert(10, "{broken")
    events.write_text("\n".join(rows) + "\n")
    vigil("run", "--config", "pipeline/default.toml", "--set", "source.type='file'", "--set", f"source.path='{events}'",
          "--set", "operators.0.fields=['cpu']", "--set", "operators.0.params.alerting.warmup=20",
          "--run-dir", str(tmp_path / "out"), "--no-metrics")
    alerts = (tmp_path / "out" / "alerts.jsonl").read_text()
    dead = (tmp_path / "out" / "dead_letters.jsonl").read_text()
    assert '"line":152' in alerts and '"reason":"bad_json"' in dead and '"line":11' in dead


def test_config_params_documents_every_operator_parameter():
    import dataclasses

    from operators.registry import OPERATOR_TYPES

    out = vigil("config", "params").stdout
    for type_name, cls in OPERATOR_TYPES.items():
        assert f"type = {type_name!r}" in out
        for spec in dataclasses.fields(cls.Params):
            assert spec.metadata.get("doc"), f"{type_name}.{spec.name} has no documentation"
            assert f"  {spec.name} = " in out or f"  {spec.name}." in out, f"{type_name}.{spec.name} not listed"
    assert vigil("config", "params", "nope", check=False).returncode == 2
