"""The README's compute API example runs as written (natively) and prints what it promises."""

import re
import warnings
from pathlib import Path

from py_engine.gpu import run_sync

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_runs(capsys):
    text = (ROOT / "README.md").read_text()
    section = text.split("## The compute API", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]      # the section's example
    body = "\n".join("    " + line for line in code.splitlines())
    namespace = {}
    exec(f"async def example():\n{body}\n", namespace)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_sync(namespace["example"]())
    assert capsys.readouterr().out.strip() == "array('f', [1.0, 3.0, 5.0, 7.0])"
    for command in ("python build.py demo", "python build.py test"):
        assert command in text.split("\n\n")[1], f"the README must start with `{command}`"


def test_readme_api_examples_run(tmp_path):
    """The fine-tuning API section's curl lines, run as written against a real server (the tiny
    BERT standing in for MiniLM, the README's port and token path mapped onto the test's)."""
    import json
    import os
    import subprocess
    import zipfile

    import peft_oracle as po
    from test_trainer import sentiment
    from py_engine.api import ApiServer

    section = (ROOT / "README.md").read_text().split("## The fine-tuning HTTP API", 1)[1]
    script = re.findall(r"```sh\n(.*?)```", section.split("\n## ", 1)[0], re.S)[0]
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    (work / "reviews.jsonl").write_text("".join(
        json.dumps({"text": e.text, "label": e.label}) + "\n" for e in sentiment(48, 2)))
    (work / "tags.jsonl").write_text("".join(      # multi-label: the names that apply
        json.dumps({"text": e.text, "label": [e.label] + (["film"] if "film" in e.text else [])})
        + "\n" for e in sentiment(24, 3)))
    bert = po.tiny_bert_dir(tmp_path / "bert", seed=3)
    with ApiServer(home / ".py_engine" / "api", {"minilm": str(bert)}, backend="numpy") as api:
        port = api.url.rstrip("/").rsplit(":", 1)[1]
        runnable = re.sub(r"curl -s(N?) ", r"curl -sS\1 --fail-with-body -w '\\n' ",
                          script.replace("127.0.0.1:8600", f"127.0.0.1:{port}"))
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", runnable], cwd=work,
                              env=dict(os.environ, HOME=str(home)), capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr + done.stdout
        answers = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        events = [line[7:] for line in done.stdout.splitlines() if line.startswith("event: ")]
        jobs = {j["id"]: j for j in api.engine.job_list()}
    upload, setup, status, by_form, by_json, export, adapters, second, cancel, listing, \
        documents, deleted, tags, multi = answers
    assert upload["documents"][0]["records"] == 48 and setup["job"]["id"] == "job-1"
    assert events[0] == "status" and events[-1] == "job"      # the stream ends with the job
    assert status["trained"] and status["adapter"]["id"] == "adapter-1"
    assert by_form["label"] in ("neg", "pos") and by_json["label"] in ("neg", "pos")
    assert sorted(export["files"]) == ["stats.json", "train.jsonl", "validation.jsonl"]
    assert adapters["current"] == "adapter-1" and second["job"]["id"] == "job-2"
    assert cancel["id"] == "job-2" and jobs["job-2"]["state"] == "cancelled"
    assert [j["id"] for j in listing["jobs"]] == ["job-1", "job-2"]
    assert [d["id"] for d in documents["documents"]] == ["doc-1"]
    assert deleted == {"deleted": "doc-1", "records_removed": 48}
    assert tags["documents"][0]["id"] == "doc-2" and tags["documents"][0]["records"] == 24
    assert multi["job"]["problem_type"] == "multi_label_classification"
    assert multi["job"]["documents"] == ["doc-2"]
    assert "adapter-1/adapter_config.json" in zipfile.ZipFile(work / "adapter-1.zip").namelist()
