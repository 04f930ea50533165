"""`py-engine data`: importing files, directories and URLs into the queue (each input whole or
not at all, bad ones reported and skipped), cleaning it, exporting it with splits and reading
the export back, stats, and where the queue lives."""

import http.server
import json
import threading
from pathlib import Path

import pytest
from PIL import Image

from py_engine.cli import main
from py_engine.cli_data import default_queue_path

PAGES = Path(__file__).parent / "pages"
CHAT = {"messages": [{"role": "user", "content": "Where are my keys?"},
                     {"role": "assistant", "content": "On the hook by the door, under the red scarf."}]}


def run_cli(capsys, *args):
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:          # argparse's errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "in"
    (d / "nested").mkdir(parents=True)
    (d / "notes.md").write_text("# Notes\n\nWrite to ada.lovelace@example.org about the harbour "
                                "wall and the tide tables for next week's survey.\n")
    (d / "nested" / "chats.jsonl").write_text(json.dumps(CHAT) + "\n")
    (d / "page.html").write_bytes((PAGES / "news_article.html").read_bytes())
    Image.new("RGB", (8, 8)).save(d / "red bicycle on the beach.png")
    return d


def test_import_clean_export_stats(files, tmp_path, capsys):
    queue = tmp_path / "q.sqlite"
    code, out, err = run_cli(capsys, "data", "import", files, "--queue", queue)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["inputs"] == 4 and summary["failed"] == 0 and summary["added"] >= 4
    assert "[4/4]" in err
    code, out, _ = run_cli(capsys, "data", "import", files / "notes.md", "--queue", queue)
    assert json.loads(out)["duplicates"] == 1 and json.loads(out)["added"] == 0
    code, out, _ = run_cli(capsys, "data", "stats", "--queue", queue, "--json")
    stats = json.loads(out)
    assert stats["total"] == summary["added"] and stats["by_source"]["image"] == 1
    assert set(stats["by_source"]) == {"text", "website", "image"}

    code, out, _ = run_cli(capsys, "data", "clean", "--queue", queue, "--dry-run")
    assert json.loads(out)["pii_found"] == {"email": 1}
    before = json.loads(run_cli(capsys, "data", "stats", "--queue", queue, "--json")[1])
    assert before["total"] == stats["total"]
    code, out, _ = run_cli(capsys, "data", "clean", "--queue", queue)
    assert code == 0 and json.loads(out)["changed"]

    out_dir = tmp_path / "export"
    code, out, err = run_cli(capsys, "data", "export", "--queue", queue, "--format", "jsonl",
                             "--out", out_dir, "--split", "0.5,0.5", "--seed", "3")
    assert code == 0, err
    written = {p.name for p in out_dir.iterdir()}
    assert {"train.jsonl", "test.jsonl", "stats.json"} <= written
    text = (out_dir / "train.jsonl").read_text() + (out_dir / "test.jsonl").read_text()
    assert "ada.lovelace@example.org" not in text and "[EMAIL]" in text

    again = tmp_path / "again.sqlite"
    code, out, err = run_cli(capsys, "data", "import", out_dir / "train.jsonl", out_dir / "test.jsonl",
                             "--queue", again, "--format", "jsonl")
    assert code == 0, err
    back = json.loads(run_cli(capsys, "data", "stats", "--queue", again, "--json")[1])
    assert back["total"] == stats["total"] and back["by_source"] == stats["by_source"]


def test_a_bad_input_is_reported_and_the_others_are_imported(files, tmp_path, capsys):
    queue = tmp_path / "q.sqlite"
    (files / "broken.json").write_text('{"messages": [')
    (files / "blob.bin").write_bytes(b"%PDF-1.7\n" + bytes(range(256)))
    code, out, err = run_cli(capsys, "data", "import", files, "--queue", queue)
    assert code == 2
    assert "broken.json:1" in err and "a PDF document" in err and "2 of 6 inputs" in err
    assert json.loads(out)["failed"] == 2 and json.loads(out)["added"] >= 4
    code, _, err = run_cli(capsys, "data", "import", tmp_path / "missing.txt", "--queue", queue)
    assert code == 2 and "no file, directory or URL" in err


def test_urls_are_fetched_with_limits(tmp_path, capsys):
    page = (PAGES / "faq_page.html").read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = page if self.path == "/faq" else b"%PDF-1.7"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8" if self.path == "/faq"
                             else "application/pdf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        queue = tmp_path / "q.sqlite"
        code, out, err = run_cli(capsys, "data", "import", f"{base}/faq", f"{base}/paper",
                                 "--queue", queue, "--qa")
        assert code == 2 and "/paper" in err
        stats = json.loads(run_cli(capsys, "data", "stats", "--queue", queue, "--json")[1])
        assert stats["by_source"] == {"website": stats["total"]} and stats["total"] >= 2
    finally:
        server.shutdown()


def test_where_the_queue_lives(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PY_ENGINE_DATA", str(tmp_path / "data"))
    assert default_queue_path() == tmp_path / "data" / "queue.sqlite"
    code, _, err = run_cli(capsys, "data", "stats")
    assert code == 2 and "no queue at" in err
    monkeypatch.delenv("PY_ENGINE_DATA")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_queue_path() == tmp_path / "xdg" / "py-engine" / "queue.sqlite"


def test_export_writes_only_where_it_may(files, tmp_path, capsys):
    queue = tmp_path / "q.sqlite"
    run_cli(capsys, "data", "import", files / "notes.md", "--queue", queue)
    code, _, err = run_cli(capsys, "data", "export", "--queue", queue, "--format", "jsonl",
                           "--out", files)
    assert code == 2 and "py_engine did not write" in err
    code, _, err = run_cli(capsys, "data", "export", "--queue", queue, "--format", "jsonl",
                           "--out", tmp_path)
    assert code == 2 and "the queue" in err
    code, _, err = run_cli(capsys, "data", "export", "--queue", queue, "--format", "jsonl",
                           "--out", tmp_path / "x", "--split", "0.5,0.6")
    assert code == 2 and "adding up to 1" in err
    for options, words in ((["--split", "0.8,0.2", "--validation-split", 0.1],
                            "--split and --validation-split: give one of them"),
                           (["--system-prompt", "Be brief.", "--no-system"],
                            "--system-prompt and --no-system: give one of them"),
                           (["--validation-split", 1], "--validation-split: expected a number "
                                                       "in (0, 1), got '1'")):
        code, _, err = run_cli(capsys, "data", "export", "--queue", queue, "--format", "jsonl",
                               "--out", tmp_path / "x", *options)
        assert code == 2 and words in err, err
    code, _, err = run_cli(capsys, "data", "clean", "--queue", queue, "--near-threshold", 0)
    assert code == 2 and "--near-threshold: expected a number in (0, 1], got '0'" in err
    code, out, _ = run_cli(capsys, "data", "clean", "--queue", queue, "--near-threshold", 1,
                           "--dry-run")
    assert code == 0 and json.loads(out)["dry_run"] is True
    (tmp_path / "broken.json").write_text('{"messages": [')
    code, _, err = run_cli(capsys, "data", "import", tmp_path / "broken.json", "--queue", queue)
    assert code == 2 and "error: it could not be imported" in err and "others" not in err
