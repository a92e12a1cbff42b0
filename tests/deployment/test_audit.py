"""The audit trail as CDF events, through the real SDK and the local CDF; a failed write never raises."""
from __future__ import annotations

import json
import time

from cognite.client.data_classes import DataSetWrite

from akerbp.mlops import audit


def test_record_and_history_round_trip(client, monkeypatch):
    monkeypatch.setenv("BITBUCKET_COMMIT", "abc123")
    monkeypatch.setenv("BITBUCKET_STEP_TRIGGERER_UUID", "{user-uuid}")
    started = time.time() - 2.5
    audit.record(client, "deploy", model="m", env="dev", outcome="success", started=started, service="prediction",
                 version=3, model_id="m/dev/3", code_hash="0123456789abcdef" * 4, message="deployed\nin 2 steps",
                 extra={"function_id": 17, "tests": {"passed": 12}})
    [row] = audit.history(client, "m")
    assert row["action"] == "deploy" and row["outcome"] == "success"
    assert (row["model"], row["service"], row["env"]) == ("m", "prediction", "dev")
    assert (row["version"], row["model_id"], row["hash"]) == ("3", "m/dev/3", "0123456789abcdef" * 4)
    assert row["git_commit"] == "abc123" and row["who"] == "{user-uuid}"
    assert 2.4 <= float(row["duration_s"]) < 60 and row["message"] == "deployed\nin 2 steps"
    assert row["extra"] == {"function_id": "17", "tests": '{"passed": 12}'}
    assert row["time"].endswith("Z") and row["time"][:4].isdigit()

    [event] = client.events.list(type="mlops", limit=None)
    assert event.subtype == "deploy" and event.start_time == int(started * 1000) and event.end_time >= event.start_time
    assert event.description == "deploy m prediction in dev: success (m/dev/3, hash 0123456789)"
    assert all(isinstance(v, str) for v in event.metadata.values())
    assert event.data_set_id is None


def test_history_is_newest_first_filtered_by_model_and_env(client):
    now = time.time()
    # Written out of order: the order must come from startTime, not from creation.
    for started, action, env in ((now - 30, "deploy", "dev"), (now - 10, "rollback", "dev"),
                                 (now - 20, "promotion", "test"), (now - 40, "training", "dev")):
        audit.record(client, action, model="m", env=env, outcome="success", started=started)
    audit.record(client, "deploy", model="other", env="dev", outcome="failed", started=now)

    assert [r["action"] for r in audit.history(client, "m")] == ["rollback", "promotion", "deploy", "training"]
    assert [r["action"] for r in audit.history(client, "m", env="dev")] == ["rollback", "deploy", "training"]
    assert [r["action"] for r in audit.history(client, "m", limit=2)] == ["rollback", "promotion"]
    assert [(r["action"], r["outcome"]) for r in audit.history(client, "other")] == [("deploy", "failed")]
    assert audit.history(client, "nobody") == []


def test_long_messages_are_cut_and_the_data_set_is_used_only_if_it_exists(client):
    audit.record(client, "deploy", model="m", env="dev", outcome="failed", started=time.time(), message="x" * 5000,
                 dataset="mlops")
    [first] = client.events.list(type="mlops", limit=None)
    assert first.data_set_id is None and len(first.metadata["message"]) == audit.MESSAGE_LIMIT
    assert client.data_sets.retrieve(external_id="mlops") is None  # not created by the audit

    data_set = client.data_sets.create(DataSetWrite(external_id="mlops", name="mlops"))
    audit.record(client, "deploy", model="m", env="test", outcome="success", started=time.time(), dataset="mlops")
    [second] = client.events.list(type="mlops", metadata={"env": "test"}, limit=None)
    assert second.data_set_id == data_set.id


def test_a_long_list_stays_valid_json_keeping_its_first_items(client):
    verdicts = [{"metric": f"m{i}", "detail": "x" * 300, "met": True} for i in range(100)]  # ~33,000 characters
    audit.record(client, "automation", model="m", env="test", outcome="success", started=time.time(),
                 extra={"verdicts": verdicts, "short": [1, 2]})
    [row] = audit.history(client, "m")
    kept = json.loads(row["extra"]["verdicts"])
    assert len(row["extra"]["verdicts"]) <= audit.STRUCTURED_LIMIT and kept[:-1] == verdicts[:len(kept) - 1]
    assert kept[-1] == f"... and {100 - (len(kept) - 1)} more" and len(kept) > 20
    assert json.loads(row["extra"]["short"]) == [1, 2]


def test_a_failed_write_warns_and_does_not_raise(client, local_cdf, capsys):
    local_cdf.faults.add([{"path": "/events", "method": "POST", "status": 400}])
    audit.record(client, "deploy", model="m", env="prod", outcome="success", started=time.time(),
                 service="prediction")
    err = capsys.readouterr().err
    assert "warning: could not write the audit record (deploy of m prediction in prod, success)" in err
    assert "400" in err
    assert audit.history(client, "m") == []  # the fault was real: nothing was written

    audit.record(None, "rollback", model="m", env="dev", outcome="failed", started=time.time())  # no client at all
    assert "could not write the audit record (rollback of m in dev, failed)" in capsys.readouterr().err


def test_secrets_never_reach_the_record(client, monkeypatch):
    monkeypatch.setenv("MLOPS_SECRET_DB_PASSWORD", "hunter2-very-secret")
    audit.record(client, "deploy", model="m", env="dev", outcome="failed", started=time.time(),
                 message="connect failed with password hunter2-very-secret", extra={"dsn": "db:hunter2-very-secret"})
    [row] = audit.history(client, "m")
    assert "hunter2" not in row["message"] and "***" in row["message"]
    assert "hunter2" not in row["extra"]["dsn"]


def test_promotions_are_audited_with_their_outcome(client, tmp_path):
    from akerbp.mlops import model_manager
    from akerbp.mlops.errors import MlopsError

    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "w.json").write_text("{}")
    model_manager.upload_new_model_version("m", "test", tmp_path / "art", client=client)
    model_manager.promote_model("m", 1, to_env="prod", client=client)
    model_manager.promote_model("m", 1, to_env="prod", client=client)
    try:
        model_manager.promote_model("m", 7, to_env="prod", client=client)
    except MlopsError:
        pass
    rows = audit.history(client, "m", env="prod")
    assert [(r["action"], r["outcome"], r["model_id"]) for r in rows] == [
        ("promotion", "failed", "m/prod/7"), ("promotion", "unchanged", "m/prod/1"), ("promotion", "success", "m/prod/1")]
    assert rows[-1]["message"] == "from m/test/1"
