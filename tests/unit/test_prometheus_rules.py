"""The shipped Prometheus rules (deploy/prometheus/) under promtool, Debian's
package prometheus: they load, their unit test passes, and that unit test
catches a broken rule. The dashboard only queries series the rules record or
the collector exports."""
import json
import os
import re
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(REPO, "deploy", "prometheus")
RULES = os.path.join(DEPLOY, "tracker.rules.yml")
RULES_TEST = os.path.join(DEPLOY, "tracker.rules.test.yml")
DASHBOARD = os.path.join(DEPLOY, "tracker.dashboard.json")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

needs_promtool = pytest.mark.skipif(not os.path.exists(PROMTOOL),
                                    reason="promtool is not installed (Debian package prometheus)")


def promtool(*args, cwd=DEPLOY):
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@needs_promtool
def test_rules_load():
    done = promtool("check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"SUCCESS: \d+ rules found", done.stdout), done.stdout


@needs_promtool
def test_rules_unit_test_passes():
    done = promtool("test", "rules", RULES_TEST)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_rules_unit_test_catches_a_rule_without_the_cpu_count(tmp_path):
    """The per-dollar rule scaled by one CPU instead of tracker_cpus: the unit test fails."""
    with open(RULES) as fh:
        rules = fh.read()
    scaling = "* on (job, instance) max by (job, instance) (tracker_cpus)\n"
    assert rules.count(scaling) == 2
    (tmp_path / "tracker.rules.yml").write_text(rules.replace(scaling, "\n"))
    shutil.copy(RULES_TEST, tmp_path)
    done = promtool("test", "rules", "tracker.rules.test.yml", cwd=tmp_path)
    assert done.returncode != 0
    assert "tracker:requests_per_second_per_monthly_dollar:rate5m" in done.stdout + done.stderr


def metric_names_exported():
    """Every metric name engine/metrics.py declares."""
    with open(os.path.join(REPO, "engine", "metrics.py")) as fh:
        return set(re.findall(r'"(tracker_[a-z_]+)"', fh.read()))


def test_dashboard_queries_only_recorded_or_exported_series():
    with open(RULES) as fh:
        recorded = set(re.findall(r"^\s+- record: (\S+)$", fh.read(), re.M))
    exported = metric_names_exported()
    with open(DASHBOARD) as fh:
        dashboard = json.load(fh)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    used_rules, used_raw = set(), set()
    for expr in exprs:
        used_rules |= set(re.findall(r"\btracker(?:_[a-z]+)?:[a-z0-9_]+:[a-z0-9_]+", expr))
        used_raw |= set(re.findall(r"\b(tracker_[a-z_]+)\b(?!:)", expr))
    assert used_rules <= recorded, used_rules - recorded
    assert used_raw <= exported, used_raw - exported
    # The panels the issue asks for, by what they query.
    joined = "\n".join(exprs)
    for needed in ("tracker:requests_per_second:rate5m", "p50_rate5m", "p99_rate5m",
                   "tracker_role:cpu_seconds_per_request:rate5m",
                   "tracker:connections_per_second_per_monthly_dollar:rate5m",
                   "tracker_sink_lag_seconds", "tracker_spool_bytes"):
        assert needed in joined, needed
