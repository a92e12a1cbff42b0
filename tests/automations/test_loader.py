"""The automations file: the issue's example loads into the contract's JSON; every mistake is one message naming the
file, line, automation and field, all of them at once; the file cannot end or hang the command that reads it."""
import re
import textwrap

import pytest

from akerbp.mlops.automations import loader
from akerbp.mlops.automations.definition import AutomationDefinition
from akerbp.mlops.automations.loader import AutomationsFileError
from akerbp.mlops.errors import UsageError

from support import copy_template

MODELS = ["well_density", "other"]

EXAMPLE = '''\
from akerbp.mlops.automations import (Automation, ScheduledTrigger, TrainDeploy, TrainingSpecifications,
    BuildMetric, DeployedModelMetric, ThresholdDirection, DeploymentSpecifications, SlackNotification, CustomWebhook)

automations = [
    Automation(
        name="retrain_well_density",
        model="well_density",
        trigger=ScheduledTrigger(cron="0 0 * * 0", timezone="UTC"),
        action=TrainDeploy(
            training=TrainingSpecifications(data={}, env_vars={}),
            deployment_condition=[BuildMetric(metric_name="r2", direction=ThresholdDirection.ABOVE, threshold="0.8"),
                                  DeployedModelMetric(metric_name="rmse", direction=ThresholdDirection.BELOW)],
            deployment=DeploymentSpecifications(environments=["test"]),
        ),
        on_success=SlackNotification(webhook_secret="slack-hook"),
        on_error=CustomWebhook(url="https://ops.example/hook", http_method="POST", headers={"X-Team": "geo"},
                               header_secrets={"Authorization": "ops-token"}, data={"k": "v"}),
        execute_immediately=False, enabled=True,
    ),
]
'''

EXAMPLE_YAML = '''\
automations:
  - name: retrain_well_density
    model: well_density
    trigger: {type: schedule, cron: "0 0 * * 0", timezone: UTC}
    action:
      type: train_deploy
      training: {data: {}, env_vars: {}}
      deployment_condition:
        - {type: build_metric, metric_name: r2, direction: above, threshold: "0.8"}
        - {type: deployed_model_metric, metric_name: rmse, direction: below}
      deployment: {environments: [test]}
    on_success: {type: slack, webhook_secret: slack-hook}
    on_error: {type: webhook, url: "https://ops.example/hook", http_method: POST, headers: {X-Team: geo},
               header_secrets: {Authorization: ops-token}, data: {k: v}}
    execute_immediately: false
    enabled: true
'''

CONTRACT_JSON = {
    "name": "retrain_well_density", "model": "well_density", "description": "", "enabled": True,
    "execute_immediately": False, "env": "test",
    "trigger": {"type": "schedule", "cron": "0 0 * * 0", "timezone": "UTC", "interval": None},
    "action": {"type": "train_deploy",
               "training": {"data": {}, "env_vars": {}, "cpu": None, "memory": None},
               "deployment_condition": [
                   {"type": "build_metric", "metric_name": "r2", "direction": "above", "threshold": 0.8},
                   {"type": "deployed_model_metric", "metric_name": "rmse", "direction": "below", "margin": 0.0}],
               "deployment": {"environments": ["test"], "cpu": None, "memory": None, "env_vars": {}, "timeout": None}},
    "on_success": {"type": "slack", "webhook": None, "webhook_secret": "slack-hook"},
    "on_error": {"type": "webhook", "url": "https://ops.example/hook", "url_secret": None, "http_method": "POST",
                 "headers": {"X-Team": "geo"}, "header_secrets": {"Authorization": "ops-token"}, "data": {"k": "v"}},
}


def write(root, text, name="mlops_automations.py"):
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(textwrap.dedent(text))
    return root / name


def errors_of(root, text, name="mlops_automations.py", models=MODELS) -> list[str]:
    path = write(root, text, name)
    with pytest.raises(AutomationsFileError) as refused:
        loader.load(root, path, model_names=models)
    return refused.value.errors


def one_automation(**fields) -> str:
    """A .py file with one automation: the example's, with `fields` (source text) replacing or adding keywords."""
    base = {"name": '"a1"', "model": '"well_density"', "trigger": 'ScheduledTrigger(cron="0 0 * * 0")',
            "action": 'TrainDeploy(deployment=DeploymentSpecifications(environments=["test"]))'}
    base.update(fields)
    body = ",\n".join(f"        {k}={v}" for k, v in base.items() if v is not None)
    return ("from akerbp.mlops.automations import *\n\nautomations = [\n    Automation(\n" + body + ",\n    ),\n]\n")


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# --- the example --------------------------------------------------------------------------------------------------


def test_the_issues_example_loads_into_the_contracts_json(tmp_path):
    path = write(tmp_path, EXAMPLE)
    loaded = loader.load(tmp_path, model_names=MODELS)
    assert loaded.path == path
    [definition] = loaded.automations
    assert definition.as_dict() == CONTRACT_JSON
    assert definition.environments == ["test"] and definition.secret_names() == ["ops-token", "slack-hook"]
    assert AutomationDefinition.from_dict(definition.as_dict()) == definition
    assert definition.hash() == AutomationDefinition.from_dict(CONTRACT_JSON).hash()
    assert loaded.for_env("test") == [definition] and loaded.for_env("prod") == []


def test_the_yaml_equivalent_gives_the_same_definitions(tmp_path):
    write(tmp_path / "py", EXAMPLE)
    write(tmp_path / "yaml", EXAMPLE_YAML, "mlops_automations.yaml")
    from_py = loader.load(tmp_path / "py", model_names=MODELS).automations
    from_yaml = loader.load(tmp_path / "yaml", model_names=MODELS).automations
    assert [d.as_dict() for d in from_yaml] == [d.as_dict() for d in from_py]
    assert from_yaml[0].hash() == from_py[0].hash()


def test_no_file_is_none_and_both_files_are_an_error(tmp_path):
    assert loader.load(tmp_path, model_names=MODELS) is None
    write(tmp_path, EXAMPLE)
    write(tmp_path, EXAMPLE_YAML, "mlops_automations.yaml")
    with pytest.raises(AutomationsFileError, match="both mlops_automations.py and mlops_automations.yaml"):
        loader.load(tmp_path, model_names=MODELS)


def test_an_interval_becomes_its_cron_and_defaults_are_filled_in(tmp_path):
    path = write(tmp_path, one_automation(trigger='ScheduledTrigger(interval="Daily", timezone="Europe/Oslo")',
                                          action="TrainDeploy()", model_id='"other"', model=None,
                                          is_enabled="False"))
    [d] = loader.load(tmp_path, path, model_names=MODELS).automations
    assert d.trigger == {"type": "schedule", "cron": "0 0 * * *", "timezone": "Europe/Oslo", "interval": "Daily"}
    assert d.model == "other" and d.enabled is False  # JFrog's model_id and is_enabled
    assert d.action["deployment"]["environments"] == ["test"] and d.action["deployment_condition"] == []
    assert d.on_success is None and d.on_error is None and d.env == "test"


def test_one_condition_alone_and_test_then_prod(tmp_path):
    path = write(tmp_path, one_automation(action='TrainDeploy(deployment_condition=BuildMetric(metric_name="r2", '
                                          'direction="above_or_equals", threshold=0.7), deployment='
                                          'DeploymentSpecifications(environments=["test", "prod"], cpu=1, memory=2))'))
    [d] = loader.load(tmp_path, path, model_names=MODELS).automations
    assert d.action["deployment_condition"] == [{"type": "build_metric", "metric_name": "r2",
                                                 "direction": "above_or_equals", "threshold": 0.7}]
    assert d.env == "prod" and d.environments == ["test", "prod"]
    assert d.action["deployment"]["cpu"] == 1.0 and d.action["deployment"]["memory"] == 2.0


def test_the_model_is_checked_against_the_repos_settings(tmp_path):
    repo = copy_template(tmp_path / "repo")
    write(repo, one_automation(model='"no_such_model"'))
    with pytest.raises(AutomationsFileError) as refused:
        loader.load(repo)
    [error] = refused.value.errors
    assert "automation 'a1': model: 'no_such_model' is not a model of mlops_settings; the models are " \
           "well_density" in error
    write(repo, one_automation())
    assert [d.model for d in loader.load(repo).automations] == ["well_density"]


def test_an_automations_file_error_is_a_usage_error_exit_2():
    assert issubclass(AutomationsFileError, UsageError) and AutomationsFileError(["x"]).exit_code == 2


# --- every mistake: one message with file, line, automation and field -------------------------------------------


DRIFT = 'SqlMetric(sql_query="SELECT avg(features.GR.mean) FROM calls")'
BAD_CASES = {
    "bad cron": ({"trigger": 'ScheduledTrigger(cron="61 * * * *")'}, "trigger.cron", "is not a valid cron expression",
                 "trigger="),
    "cron of 6 fields": ({"trigger": 'ScheduledTrigger(cron="0 0 * * 0 0")'}, "trigger.cron", "5 fields", "trigger="),
    "cron and interval": ({"trigger": 'ScheduledTrigger(cron="0 0 * * 0", interval="Daily")'}, "trigger.cron",
                          "give exactly one of cron and interval, not both", "trigger="),
    "neither": ({"trigger": "ScheduledTrigger()"}, "trigger.cron", "give exactly one of cron and interval", "trigger="),
    "bad interval": ({"trigger": 'ScheduledTrigger(interval="Monthly")'}, "trigger.interval",
                     "'Monthly' is not an interval; use one of Hourly (0 * * * *), Daily (0 0 * * *), Weekly "
                     "(0 0 * * 0)", "trigger="),
    "bad timezone": ({"trigger": 'ScheduledTrigger(cron="0 0 * * 0", timezone="Mars/Olympus")'}, "trigger.timezone",
                     "'Mars/Olympus' is not a known timezone", "trigger="),
    "unknown model": ({"model": '"nope"'}, "model", "'nope' is not a model of mlops_settings; the models are other, "
                      "well_density", "model="),
    "bad direction": ({"action": 'TrainDeploy(deployment_condition=BuildMetric(metric_name="r2", direction="over", '
                                 'threshold=1))'}, "action.deployment_condition.direction",
                      "'over' is not a direction; use one of above, below, above_or_equals", "action="),
    "threshold neither number nor SQL": ({"action": 'TrainDeploy(deployment_condition=[BuildMetric(metric_name="r2", '
                                                    'threshold="the best so far")])'},
                                         "action.deployment_condition[0].threshold",
                                         "'the best so far' is neither a number nor a SQL query", "action="),
    "bad cooldown": ({"trigger": f'MetricBasedTrigger(metric={DRIFT}, threshold=0.5, cooldown="1 day")'},
                     "trigger.cooldown", "'1 day' is not a duration: a number and a unit, e.g. '30m', '12h', '1d'",
                     "trigger="),
    "bad check_cron": ({"trigger": f'MetricBasedTrigger(metric={DRIFT}, threshold=0.5, override_cron="*/15 * *")'},
                       "trigger.check_cron", "is not a cron expression of 5 fields", "trigger="),
    "metric missing": ({"trigger": 'MetricBasedTrigger(threshold=0.5)'}, "trigger.metric", "is required",
                       "trigger="),
    "metric not SqlMetric": ({"trigger": 'MetricBasedTrigger(metric="SELECT 1", threshold=0.5)'}, "trigger.metric",
                             "expected SqlMetric(...)", "trigger="),
    "trigger threshold not a number": ({"trigger": f'MetricBasedTrigger(metric={DRIFT}, threshold=[1])'},
                                       "trigger.threshold", "[1] is not a number", "trigger="),
    "metric of two columns": ({"trigger": 'MetricBasedTrigger(metric=SqlMetric(sql_query="SELECT avg(rows), '
                                          'count(*) FROM calls"), threshold=1)'}, "trigger.metric.sql_query",
                              "a metric query must return one column, it returns 2", "trigger="),
    "threshold query of an unknown column": ({"action": 'TrainDeploy(deployment_condition=BuildMetric(metric_name='
                                                        '"r2", threshold="SELECT max(r2) FROM versions"))'},
                                             "action.deployment_condition.threshold",
                                             "it does not bind to the tables", "action="),
    "batch without input": ({"action": 'BatchExecution(batch_size=10)'}, "action.input", "is required", "action="),
    "batch size": ({"action": 'BatchExecution(input="logs/", batch_size=0)'}, "action.batch_size",
                   "0 is not a whole number of rows from 1 to 100000", "action="),
    "batch environment": ({"action": 'BatchExecution(input="logs/", environment="staging")'}, "action.environment",
                          "'staging': not an environment", "action="),
    "prod first": ({"action": 'TrainDeploy(deployment=DeploymentSpecifications(environments=["prod"]))'},
                   "action.deployment.environments", "train in test and promote: environments=['test', 'prod']",
                   "action="),
    "prod without test before it": ({"action": 'TrainDeploy(deployment=DeploymentSpecifications(environments='
                                               '["dev", "prod"]))'}, "action.deployment.environments",
                                    "prod may only follow test", "action="),
    "an environment twice": ({"action": 'TrainDeploy(deployment=DeploymentSpecifications(environments='
                                        '["test", "test"]))'}, "action.deployment.environments", "listed twice",
                             "action="),
    "JFrog-only field": ({"action": 'TrainDeploy(deployment=DeploymentSpecifications(number_of_pods=2))'},
                         "action.deployment.number_of_pods", "JFrog ML's number_of_pods has no meaning in CDF: a CDF "
                         "Function scales by itself; give cpu, memory, env_vars, timeout", "action="),
    "JFrog git field": ({"action": 'TrainDeploy(training=TrainingSpecifications(git_uri="https://x.git"))'},
                        "action.training.git_uri", "the code is the code registered: the pipeline re-registers",
                        "action="),
    "bad secret name": ({"on_success": 'SlackNotification(webhook_secret="Slack_Hook")'}, "on_success.webhook_secret",
                        "'Slack_Hook' is not a valid secret name", "on_success="),
    "bad http method": ({"on_error": 'CustomWebhook(url="https://x.example", http_method="FETCH")'},
                        "on_error.http_method", "'FETCH' is not an HTTP method; use one of GET, POST, PUT, PATCH, "
                        "DELETE, HEAD", "on_error="),
    "webhook not http": ({"on_error": 'CustomWebhook(url="ftp://x.example")'}, "on_error.url",
                         "'ftp://x.example' is not an http(s) URL", "on_error="),
    "slack with both": ({"on_success": 'SlackNotification(webhook="https://hooks.slack.com/x", webhook_secret="s")'},
                        "on_success.webhook", "give exactly one of webhook", "on_success="),
    "a typo": ({"descripton": '"weekly"'}, "descripton", "Automation has no field 'descripton'; did you mean "
               "'description'?", "descripton="),
    "alias and name": ({"model_id": '"well_density"'}, "model_id", "model_id is another name of model", "model_id="),
    "wrong class": ({"trigger": "TrainDeploy()"}, "trigger", "'TrainDeploy' is not a trigger: use ScheduledTrigger(...)",
                    "trigger="),
    "bad name": ({"name": '"Retrain-Me"'}, "name", "'Retrain-Me' is not a valid automation name", "name="),
    "negative margin": ({"action": 'TrainDeploy(deployment_condition=DeployedModelMetric(metric_name="rmse", '
                                   'direction="below", margin=-1))'}, "action.deployment_condition.margin",
                        "-1 is negative", "action="),
}


@pytest.mark.parametrize("fields, field, message, line_needle", BAD_CASES.values(), ids=BAD_CASES.keys())
def test_each_mistake_is_one_message_with_file_line_automation_and_field(tmp_path, fields, field, message,
                                                                           line_needle):
    text = one_automation(**fields)
    [error] = errors_of(tmp_path, text)
    line = line_of(text, line_needle)
    name = fields.get("name", '"a1"').strip('"')
    assert error.startswith(f"{tmp_path / 'mlops_automations.py'}:{line}: automation '{name}': {field}: "), error
    assert message in error


METRIC_AUTOMATIONS = '''\
from akerbp.mlops.automations import *

automations = [
    Automation(name="on_drift", model="well_density",
               trigger=MetricBasedTrigger(name="drift", metric=SqlMetric(sql_query="SELECT avg(latency_total_ms) FROM calls"),
                                          directive=ThresholdDirection.ABOVE, threshold=250, override_cron="0 * * * *"),
               action=TrainDeploy(deployment_condition=BuildMetric(metric_name="r2", direction="above_or_equals",
                                                                   threshold="SELECT max(metrics.r2) FROM versions"))),
    Automation(name="nightly_scoring", model="other", trigger=ScheduledTrigger(interval="Daily"),
               action=BatchExecution(input="logs/", output="scores/")),
]
'''

METRIC_AUTOMATIONS_YAML = '''\
automations:
  - name: on_drift
    model: well_density
    trigger: {type: metric, name: drift, metric: {sql_query: "SELECT avg(latency_total_ms) FROM calls"},
              direction: above, threshold: 250, check_cron: "0 * * * *"}
    action:
      deployment_condition: {type: build_metric, metric_name: r2, direction: above_or_equals,
                             threshold: "SELECT max(metrics.r2) FROM versions"}
  - name: nightly_scoring
    model: other
    trigger: {interval: Daily}
    action: {type: batch, input: logs/, output: scores/}
'''


def test_metric_triggers_dynamic_thresholds_and_batch_load_with_their_defaults(tmp_path):
    write(tmp_path, METRIC_AUTOMATIONS)
    drift, scoring = loader.load(tmp_path, tmp_path / "mlops_automations.py", model_names=MODELS).automations
    assert drift.trigger == {"type": "metric", "name": "drift",
                             "metric": {"sql_query": "SELECT avg(latency_total_ms) FROM calls"},
                             "direction": "above", "threshold": 250.0, "cron": "0 * * * *", "timezone": "UTC",
                             "cooldown": "1d", "cooldown_s": 86400.0}
    assert drift.action["deployment_condition"][0]["threshold"] == "SELECT max(metrics.r2) FROM versions"
    assert drift.uses_sql() and not scoring.uses_sql()
    assert scoring.action == {"type": "batch", "input": "logs/", "output": "scores/", "batch_size": 1000,
                              "environment": "test"}
    assert scoring.env == "test" and scoring.environments == ["test"]
    yaml_root = tmp_path / "yaml"
    write(yaml_root, METRIC_AUTOMATIONS_YAML, "mlops_automations.yaml")
    from_yaml = loader.load(yaml_root, yaml_root / "mlops_automations.yaml", model_names=MODELS).automations
    assert [d.as_dict() for d in from_yaml] == [drift.as_dict(), scoring.as_dict()]


@pytest.mark.parametrize("cooldown, seconds", [("30m", 1800.0), ("12h", 43200.0), ("1w", 604800.0), ("0d", 0.0)])
def test_a_cooldown_is_a_duration(tmp_path, cooldown, seconds):
    write(tmp_path, one_automation(trigger=f'MetricBasedTrigger(metric={DRIFT}, threshold=1, cooldown="{cooldown}")'))
    [d] = loader.load(tmp_path, tmp_path / "mlops_automations.py", model_names=MODELS).automations
    assert d.trigger["cooldown_s"] == seconds and d.trigger["cron"] == "*/15 * * * *"


def test_a_metric_trigger_reports_every_problem_at_once(tmp_path):
    text = one_automation(trigger='MetricBasedTrigger(metric=SqlMetric(sql_query=""), direction="over", '
                                  'threshold="many", check_cron="x", cooldown="soon", timezone="Mars/Olympus")')
    errors = errors_of(tmp_path, text)
    fields = sorted(e.split(": ")[2] for e in errors)
    assert fields == ["trigger.check_cron", "trigger.cooldown", "trigger.direction", "trigger.metric.sql_query",
                      "trigger.threshold", "trigger.timezone"], errors


def test_a_nested_keyword_is_reported_at_its_own_line(tmp_path):
    text = one_automation(action='TrainDeploy(\n            deployment=DeploymentSpecifications(\n'
                                 '                environments=["prod"],\n            ),\n        )')
    [error] = errors_of(tmp_path, text)
    assert error.startswith(f"{tmp_path / 'mlops_automations.py'}:{line_of(text, 'environments=')}: ")


def test_several_problems_are_reported_together_with_duplicate_names(tmp_path):
    text = '''\
        from akerbp.mlops.automations import *

        automations = [
            Automation(name="a1", model="well_density", trigger=ScheduledTrigger(cron="bad"), action=TrainDeploy()),
            Automation(name="a1", model="nope", trigger=ScheduledTrigger(interval="Daily"), action=TrainDeploy(
                deployment=DeploymentSpecifications(variation_name="B"))),
        ]
        '''
    errors = errors_of(tmp_path, text)
    joined = "\n".join(errors)
    assert len(errors) == 4, joined
    assert ":4: automation 'a1': trigger.cron: 'bad' is not a cron expression of 5 fields" in joined
    assert ":5: automation 'a1': name: 'a1' is the name of automation #1 too: names must be unique" in joined
    assert ":5: automation 'a1': model: 'nope' is not a model of mlops_settings" in joined
    assert ":6: automation 'a1': action.deployment.variation_name: JFrog ML's variation_name has no meaning" in joined


def test_automations_sharing_a_function_must_agree_on_its_options(tmp_path):
    text = '''\
        from akerbp.mlops.automations import *

        automations = [
            Automation(name="a1", model="well_density", trigger=ScheduledTrigger(interval="Daily"),
                       action=TrainDeploy(training=TrainingSpecifications(cpu=1))),
            Automation(name="a2", model="well_density", trigger=ScheduledTrigger(interval="Weekly"),
                       action=TrainDeploy(training=TrainingSpecifications(cpu=2))),
        ]
        '''
    [error] = errors_of(tmp_path, text)
    assert ":7: automation 'a2': action.training.cpu: 2.0 differs from automation 'a1''s 1.0" in error
    assert "share one function" in error


def test_yaml_mistakes_name_their_lines_too(tmp_path):
    text = EXAMPLE_YAML.replace('cron: "0 0 * * 0"', 'cron: "0 0 * *"').replace("direction: below",
                                                                               "direction: sideways")
    errors = errors_of(tmp_path, text, "mlops_automations.yaml")
    name = tmp_path / "mlops_automations.yaml"
    assert errors[0].startswith(f"{name}:4: automation 'retrain_well_density': trigger.cron: ")
    assert errors[1].startswith(f"{name}:10: automation 'retrain_well_density': "
                                "action.deployment_condition[1].direction: 'sideways' is not a direction")


# --- files that do not end in automations ---------------------------------------------------------------------------


@pytest.mark.parametrize("source, message", [
    ("raise RuntimeError('boom')\n", r"mlops_automations.py, line 1: RuntimeError: boom"),
    ("import sys\nsys.exit(0)\n", r"mlops_automations.py, line 2: called sys.exit\(0\): an automations file must only "
                                  r"define `automations`, never exit"),
    ("x = 1\n", r"mlops_automations.py: defines no `automations`: add `automations = \[Automation\(name=..."),
    ("automations = {}\n", r"`automations` must be a list of Automation\(...\), not dict"),
    ("automations = [Automation(name='a')]\n", r"NameError: name 'Automation' is not defined; add `from "
                                               r"akerbp.mlops.automations import Automation, ...`"),
])
def test_a_file_that_does_not_end_in_automations_is_one_error_naming_it(tmp_path, source, message):
    [error] = errors_of(tmp_path, source)
    assert re.search(message, error), error


def test_an_empty_list_is_no_automations(tmp_path):
    write(tmp_path, "automations = []\n")
    assert loader.load(tmp_path, model_names=MODELS).automations == []


def test_yaml_without_automations_is_an_error(tmp_path):
    [error] = errors_of(tmp_path, "models: []\n", "mlops_automations.yaml")
    assert "defines no `automations:`" in error
