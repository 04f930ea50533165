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
