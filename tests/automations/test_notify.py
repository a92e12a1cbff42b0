"""An automation's notifications against real HTTP receivers on loopback: what Slack and a custom webhook receive,
retries and their bound, and that a secret value never reaches the recorded result or the log."""
from __future__ import annotations

import json
import logging
import time

import pytest

from akerbp.mlops.automations import messages, notify, webhook_delivery
from support import Receiver, unused_port

FAST = {"timeout_s": 0.5, "retries": 3, "backoff_s": 0.01}  # the file runs in a few seconds
TOKEN = "Bearer tok-0123456789-secret"


def report(**changes) -> messages.RunReport:
    base = dict(
        execution_id="exec-42", execution_time="2024-06-02T00:00:03Z", automation="retrain_well_density",
        model="well_density", env="test", status="success", version=3, model_id="well_density/test/3",
        verdicts=[
            {"kind": "build_metric", "metric": "r2", "direction": "above", "threshold": 0.8, "value": 0.91,
             "met": True, "detail": "r2 = 0.91 > 0.8: met", "live_value": None, "live_model_id": None, "env": None},
            {"kind": "deployed_model_metric", "metric": "rmse", "direction": "below", "threshold": 0.5,
             "value": 0.42, "met": True, "detail": "rmse 0.42 < live 0.5 - margin 0 (well_density/test/2)",
             "live_value": 0.5, "live_model_id": "well_density/test/2", "env": "test"}],
        deployed=[{"env": "test", "model_id": "well_density/test/3", "result": "deployed"}],
        commit="0123456789abcdef0123")
    base.update(changes)
    return messages.RunReport(**base)


def everything(message: dict) -> str:
    return json.dumps(message, ensure_ascii=False)


def test_slack_gets_text_and_blocks_with_every_fact_of_the_run():
    with Receiver() as slack:
        result = notify.send({"type": "slack", "webhook": slack.url + "/services/T0/B0/X", "webhook_secret": None},
                             report(), {}, **FAST)
        got = slack.wait_for(1)
    assert result is not None and result["delivered"] and result["attempts"] == 1, result
    assert result["kind"] == "slack" and result["status_code"] == 200 and result["error"] is None
    (request,) = got
    assert request.method == "POST" and request.path == "/services/T0/B0/X"
    assert request.headers["content-type"] == "application/json"
    message = request.json()
    assert "retrain_well_density" in message["text"] and "deployed to test" in message["text"]
    text = everything(message["blocks"])
    for fact in ("2024-06-02T00:00:03Z", "well_density", "retrain_well_density", "*Environment*", "success",
                 "3 (well_density/test/3)", "r2", "0.91, needs &gt; 0.8: met", "rmse", "0.42, needs &lt; 0.5: met",
                 "well_density/test/2", "*Deployed*", "test: well_density/test/3 (deployed)", "exec-42",
                 "0123456789ab"):
        assert fact in text, fact
    assert {b["type"] for b in message["blocks"]} == {"header", "section", "context"}


def test_slack_says_why_nothing_was_deployed_and_shows_a_failures_error():
    held = report(deployed=[], not_deployed_reason="r2 = 0.7 not > 0.8",
                  verdicts=[{"kind": "build_metric", "metric": "r2", "direction": "above", "threshold": 0.8,
                             "value": 0.7, "met": False, "detail": "r2 = 0.7 not > 0.8: not met"}])
    failed = report(status="failed", version=None, model_id=None, verdicts=[], deployed=[],
                    error="train raised ValueError: <no rows>")
    with Receiver() as slack:
        for run in (held, failed):
            assert notify.send({"type": "slack", "webhook": slack.url}, run, {}, **FAST)["delivered"]
        first, second = (r.json() for r in slack.wait_for(2))
    assert "not deployed: r2 = 0.7 not &gt; 0.8" in first["text"]  # Slack shows &gt; as >
    assert "0.7, needs &gt; 0.8: not met" in everything(first) and "*Not deployed*" in everything(first)
    assert "failed: train raised ValueError: &lt;no rows&gt;" in second["text"]
    assert "&lt;no rows&gt;" in everything(second["blocks"])  # Slack's mrkdwn escaping
    assert "none: every successful training deploys" in everything(second["blocks"])
    long = messages.slack_message(report(status="failed", error="x" * 5000))["blocks"]
    error_block = next(b["text"]["text"] for b in long if b.get("text", {}).get("text", "").startswith("*Error*"))
    assert len(error_block) <= messages.SLACK_TEXT_LIMIT and error_block.endswith("…```")  # cut, still a code block


def test_a_get_webhook_sends_the_fields_and_data_as_query_parameters():
    target = {"type": "webhook", "url": None, "url_secret": "ops-url", "http_method": "GET",
              "headers": {"X-Team": "geo"}, "header_secrets": {}, "data": {"a1": "b1", "status": "overridden?"}}
    with Receiver() as hook:
        result = notify.send(target, report(), {"ops-url": hook.url + "/hook/v1"}, **FAST)
        (request,) = hook.wait_for(1)
    assert result["delivered"] and result["target"] == "from secret 'ops-url'", result
    assert request.method == "GET" and request.path == "/hook/v1" and request.body == b""
    assert request.headers["x-team"] == "geo"
    assert request.query == {"a1": "b1", "execution_date": "2024-06-02T00:00:03Z", "model_id": "well_density/test/3",
                             "automation": "retrain_well_density", "status": "success", "build_id": "exec-42",
                             "model": "well_density", "environment": "test", "version": "3", "error": "",
                             "deployed": "test: well_density/test/3 (deployed)", "reason": "", "trigger": "",
                             "metric_value": "", "metric_threshold": "", "thresholds": "r2: 0.8; rmse: 0.5", "batch": ""}


def test_a_post_webhook_sends_a_json_body_and_the_secret_header_which_the_result_never_shows(caplog):
    target = {"type": "webhook", "url": "", "url_secret": None, "http_method": "POST", "headers": {"X-Team": "geo"},
              "header_secrets": {"Authorization": "ops-token"}, "data": {"k": "v"}}
    with Receiver() as hook, caplog.at_level(logging.DEBUG, logger="akerbp.mlops"):
        target["url"] = hook.url + "/hook?source=mlops"
        result = notify.send(target, report(status="failed", error="deploy failed"), {"ops-token": TOKEN}, **FAST)
        (request,) = hook.wait_for(1)
    assert result["delivered"], result
    assert request.method == "POST" and request.query == {"source": "mlops"}
    assert request.headers["authorization"] == TOKEN and request.headers["x-team"] == "geo"
    assert request.headers["content-type"] == "application/json"
    body = request.json()
    assert body["k"] == "v" and body["status"] == "failed" and body["error"] == "deploy failed"
    assert body["build_id"] == "exec-42" and body["model_id"] == "well_density/test/3"
    assert result["target"] == f"{hook.url}/hook"  # a plain URL is shown, without its query
    assert TOKEN not in json.dumps(result) and "tok-0123456789" not in caplog.text


def test_500_twice_then_200_is_delivered_on_the_third_attempt():
    with Receiver([500, 503, 200]) as slack:
        result = notify.send({"type": "slack", "webhook": slack.url}, report(), {}, **FAST)
        seen = slack.wait_for(3)
    assert result["delivered"] and result["attempts"] == 3 and result["status_code"] == 200, result
    assert len(seen) == 3


def test_a_429_is_retried_and_a_400_is_not():
    with Receiver([429], headers={"Retry-After": "0"}) as limited, Receiver([400], default=200) as refusing:
        retried = notify.send({"type": "slack", "webhook": limited.url}, report(), {}, **FAST)
        refused = notify.send({"type": "slack", "webhook": refusing.url}, report(), {}, **FAST)
        assert len(limited.wait_for(2)) == 2
        assert len(refusing.requests) == 1
    assert retried["delivered"] and retried["attempts"] == 2, retried
    assert not refused["delivered"] and refused["attempts"] == 1 and refused["status_code"] == 400, refused
    assert "answered 400: ok; not retried" in refused["error"]


def test_a_receiver_that_never_answers_times_out_within_the_bound():
    settings = {"timeout_s": 0.3, "retries": 2, "backoff_s": 0.01}
    with Receiver(hang=True) as silent:
        started = time.monotonic()
        result = notify.send({"type": "slack", "webhook": silent.url}, report(), {}, **settings)
        took = time.monotonic() - started
        assert len(silent.wait_for(3)) == 3
    assert not result["delivered"] and result["attempts"] == 3 and result["status_code"] is None, result
    assert "did not answer within 0.3 s on attempt 3 of 3" in result["error"]
    assert 0.9 <= took <= webhook_delivery.worst_case_seconds(0.3, 2), took
    assert webhook_delivery.worst_case_seconds() == 52.0  # the defaults' bound, as the module says


def test_a_receiver_dribbling_its_answer_is_cut_at_the_attempts_timeout():
    """A byte every 50 ms never trips a socket timeout of 0.3 s: the attempt's own wall-time bound must."""
    with Receiver(dribble=0.05) as slow:
        started = time.monotonic()
        result = notify.send({"type": "slack", "webhook": slow.url}, report(), {}, timeout_s=0.3, retries=0)
        took = time.monotonic() - started
        slow.wait_for(1)
    assert not result["delivered"] and result["attempts"] == 1, result
    assert "did not answer within 0.3 s" in result["error"]
    assert took <= webhook_delivery.worst_case_seconds(0.3, 0) + 0.2, took


def test_an_unreachable_receiver_is_not_delivered_and_its_secret_url_not_shown(caplog):
    url = f"http://127.0.0.1:{unused_port()}/services/T0/B0/hidden-path-token"
    with caplog.at_level(logging.DEBUG, logger="akerbp.mlops"):
        result = notify.send({"type": "slack", "webhook_secret": "slack-hook"}, report(), {"slack-hook": url},
                             timeout_s=0.5, retries=1, backoff_s=0.01)
    assert not result["delivered"] and result["attempts"] == 2, result
    assert "could not be reached (Connection refused)" in result["error"], result
    assert "from secret 'slack-hook'" in result["error"]
    assert "hidden-path-token" not in json.dumps(result) + caplog.text
    assert str(url.split(":")[2].split("/")[0]) not in result["error"]  # not even the port


@pytest.mark.parametrize("target, secrets, expected", [
    ({"type": "slack", "webhook_secret": "slack-hook"}, {},
     "secret 'slack-hook' (the notification's webhook) is not among the automation function's secrets: set "
     "MLOPS_SECRET_SLACK_HOOK"),
    ({"type": "webhook", "url": "https://ops.example/hook", "http_method": "POST",
      "header_secrets": {"Authorization": "ops-token"}}, {"other": "value-not-shown"},
     "secret 'ops-token' (the notification's header Authorization) is not among"),
    ({"type": "slack", "webhook_secret": "slack-hook"}, {"slack-hook": "not-a-url-value"},
     "the webhook from secret 'slack-hook' is not an http(s) URL"),
    ({"type": "webhook", "url": "ftp://ops.example/hook"}, {}, "the url 'ftp://ops.example/hook' is not an http(s)"),
    ({"type": "webhook", "url": "https://ops.example/hook", "http_method": "TRACE"}, {}, "http_method 'TRACE'"),
])
def test_a_notification_that_cannot_be_sent_is_not_delivered_and_says_why(target, secrets, expected):
    result = notify.send(target, report(), secrets, **FAST)
    assert result is not None and not result["delivered"] and result["attempts"] == 0, result
    assert expected in result["error"], result["error"]
    assert "value-not-shown" not in json.dumps(result) and "not-a-url-value" not in json.dumps(result)


def test_no_target_is_no_notification():
    assert notify.send(None, report(), {}) is None


def test_a_webhook_says_why_nothing_was_deployed():
    held = messages.webhook_fields(report(deployed=[], not_deployed_reason="r2 = 0.7 not > 0.8"), {"k": "v"})
    assert held["reason"] == "r2 = 0.7 not > 0.8" and held["deployed"] == "" and held["status"] == "success"
