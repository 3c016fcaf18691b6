"""The Prometheus files with promtool (Debian's ``prometheus`` package; ``make test`` installs it when missing):
configs and rules check, the rule unit tests pass, every alert is unit-tested firing and not firing, and every
alert's runbook link leads to a section of docs/runbook.md."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS / "vigil-rules.yml"
RULE_TESTS = PROMETHEUS / "vigil-rules.test.yml"
RUNBOOK = REPO / "docs" / "runbook.md"


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: `make test` installs Debian's prometheus package (as root)"
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


@pytest.mark.parametrize("config", [PROMETHEUS / "prometheus.yml", REPO / "docker" / "prometheus-compose.yml"])
def test_scrape_configs_check(config, tmp_path):
    # Each config names vigil-rules.yml beside it (in the compose stack, both are mounted in /etc/prometheus).
    shutil.copy(config, tmp_path / "prometheus.yml")
    shutil.copy(RULES, tmp_path / "vigil-rules.yml")
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_rules_check_and_their_unit_tests_pass():
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_a_wrong_expectation_fails_the_unit_tests(tmp_path):
    """The unit tests can fail: the same tests with one expected value changed do."""
    shutil.copy(RULES, tmp_path / RULES.name)
    text = RULE_TESTS.read_text()
    assert "outlier has alerted at 1.5/s" in text
    (tmp_path / RULE_TESTS.name).write_text(text.replace("outlier has alerted at 1.5/s", "outlier has alerted at 2/s"))
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0 and "VigilAlertStorm" in result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing_and_not_firing():
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) >= 16 and len(set(names)) == len(names)
    assert {name: cases.get(name, set()) for name in names} == {name: {True, False} for name in names}


def test_every_alert_has_a_runbook_section_and_a_severity():
    anchors = {re.sub(r"[^a-z0-9-]", "", line[3:].strip().lower()) for line in RUNBOOK.read_text().splitlines()
               if line.startswith("## ")}
    for rule in alert_rules():
        link = rule["annotations"]["runbook_url"]
        assert link == f"docs/runbook.md#{rule['alert'].lower()}" and link.split("#")[1] in anchors, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
