"""Promotions of one version started at the same time: one copies, the others report it already promoted (exit 0).

Real processes running `mlops models promote` against one served local CDF, released together by a Barrier; the
copy's content upload is slowed down so every other promotion meets it unfinished. And the local CDF answering a
part upload whose upload was dropped meanwhile as CDF does (a 400), not with a 500 from its own file handling.
"""
from __future__ import annotations

import http.client
import multiprocessing
import os
import threading
import time
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from cognite.client.data_classes import FileMetadataWrite

from akerbp.mlops import model_manager as mm
from akerbp.mlops.local_cdf import LocalCDF
from support import inject_faults

PROMOTERS = 4


def make_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "weights.bin").write_bytes(os.urandom(200_000))
    return path


def promote_in_a_process(data_dir: str, cwd: str, out: str, barrier) -> None:
    """One `mlops models promote m --version 1 --to prod`, started when all the others are ready."""
    os.chdir(cwd)
    os.environ["MLOPS_LOCAL_CDF_DIR"] = data_dir
    for name in [n for n in os.environ if n.startswith("COGNITE_") or n in ("CI", "BITBUCKET_BUILD_NUMBER")]:
        del os.environ[name]
    from akerbp.mlops.cli import main  # imported before the barrier: the processes start promoting together

    with open(out, "w") as sink, redirect_stdout(sink), redirect_stderr(sink):
        barrier.wait()
        try:
            main(["models", "promote", "m", "--version", "1", "--to", "prod"])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        print(f"EXIT {code}", flush=True)


def test_four_concurrent_promotions_one_copies_the_others_say_already_promoted(tmp_path):
    with LocalCDF(tmp_path / "cdf") as cdf:
        cdf.announce()  # the processes use this server, as `mlops` commands do when one is served
        client = cdf.client(project="local")
        source = mm.upload_new_model_version("m", "test", make_folder(tmp_path / "artifact"), client=client)
        # The copy's content takes 1 s to arrive, so the other promotions all meet it claimed but unfinished.
        rules = [{"path": "/content", "method": "PUT", "delay": 1.0, "count": PROMOTERS}]
        inject_faults(cdf.base_url, rules)

        spawn = multiprocessing.get_context("spawn")
        barrier = spawn.Barrier(PROMOTERS, timeout=120)
        outs = [tmp_path / f"promote-{i}.txt" for i in range(PROMOTERS)]
        procs = [spawn.Process(target=promote_in_a_process, args=(str(cdf.data_dir), str(tmp_path), str(out), barrier))
                 for out in outs]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=180)
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
        cdf.withdraw()
        texts = [out.read_text() for out in outs]
        assert all(t.strip().endswith("EXIT 0") for t in texts), texts
        assert sum("promoted m/test/1 to m/prod/1" in t for t in texts) == 1, texts
        assert sum("m/prod/1 is already promoted" in t for t in texts) == PROMOTERS - 1, texts
        assert not any("Error" in t for t in texts), texts

        prod = client.files.retrieve(external_id="m/prod/1")
        assert prod.uploaded and prod.metadata["sha256"] == source["sha256"]
        got = mm.download_model_version("m", "prod", tmp_path / "out", client=client)
        assert got["sha256"] == source["sha256"]


def test_a_copy_being_uploaded_is_waited_for_and_one_left_unfinished_is_taken_over(client, tmp_path):
    mm.upload_new_model_version("m", "test", make_folder(tmp_path / "artifact"), client=client)
    source = client.files.retrieve(external_id="m/test/1")
    content = client.files.download_bytes(id=source.id)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")

    # Another promotion has just claimed m/prod/1 and is uploading it: it finishes once this one waits for it.
    other = client.files.multipart_upload_session(name="m-prod-1.tar.gz", external_id="m/prod/1", parts=1,
                                                  metadata={**source.metadata, "env": "prod", "promoted_at": now,
                                                            "promoted_from": "m/test/1"})
    waiting = threading.Event()

    def finish_the_other() -> None:
        if waiting.wait(timeout=30):
            with other:
                other.upload_part(0, content)

    def progress(what: str, done: int, total: int, finished: bool) -> None:
        if what.startswith("waiting for m/prod/1"):
            waiting.set()

    finisher = threading.Thread(target=finish_the_other)
    finisher.start()
    info = mm.promote_model("m", 1, client=client, progress=progress)
    finisher.join(timeout=60)
    assert waiting.is_set(), "the promotion overwrote a copy another promotion was uploading"
    assert info["unchanged"] is True and info["concurrent"] is True and info["file_id"] == other.file_metadata.id

    # A copy claimed long ago and never finished: interrupted; the next promotion redoes it at once.
    mm.upload_new_model_version("m", "test", make_folder(tmp_path / "artifact2"), client=client)
    second = client.files.retrieve(external_id="m/test/2")
    interrupted = {**second.metadata, "env": "prod", "promoted_at": "2020-01-01T00:00:00+00:00"}
    client.files.create(FileMetadataWrite(external_id="m/prod/2", name="m-prod-2.tar.gz", metadata=interrupted))
    started = time.monotonic()
    info = mm.promote_model("m", 2, client=client)
    assert info["unchanged"] is False and time.monotonic() - started < 30
    assert client.files.retrieve(external_id="m/prod/2").uploaded


def test_a_part_whose_upload_is_dropped_while_it_streams_is_a_400(local_cdf, client, tmp_path):
    session = client.files.multipart_upload_session(name="f", external_id="f", parts=1)
    url = urlsplit(session._upload_urls[0])
    file_id = session.file_metadata.id
    parts_dir = local_cdf.store.parts_dir("test", file_id, session._upload_id)
    body = b"x" * 2_000_000

    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("PUT", f"{url.path}?{url.query}")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    conn.send(body[:1000])
    deadline = time.monotonic() + 10
    while not (parts_dir.is_dir() and any(parts_dir.iterdir())):  # the server is writing the part now
        assert time.monotonic() < deadline, "the local CDF never started writing the part"
        time.sleep(0.01)
    client.files.upload_bytes(b"new content", name="f", external_id="f", overwrite=True)  # drops the upload
    conn.send(body[1000:])
    answer = conn.getresponse()
    text = answer.read().decode()
    assert answer.status == 400, text
    assert "Unknown or completed uploadId" in text
    assert not parts_dir.exists()  # nothing left behind
    assert client.files.download_bytes(external_id="f") == b"new content"

