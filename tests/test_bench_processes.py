"""bench/processes.py, the benchmarks' driver: each contender in a process of its own, rounds
alternating A, B, A, B, warm-up rounds dropped, medians and ratios, variables unset for one
contender alone and recorded, a failing contender reported with its error."""

import os
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS.parent / "bench"))

from processes import Spec, WorkerError, alternate, median  # noqa: E402

PROBE_VARIABLE = "OMP_BENCH_PROBE"    # an OMP_* name, so the environment record keeps it


class Probe:
    """A contender whose "step" takes `step_s`; each round reports the round's index as its
    step time (so the driver's choice of rounds is visible) and the wall time as its loss."""

    def __init__(self, step_s=0.0, fail=False):
        if fail:
            raise RuntimeError("probe asked to fail")
        import py_engine

        self.step_s, self.rounds = step_s, 0
        self.info = {"pid": os.getpid(), "probe": os.environ.get(PROBE_VARIABLE),
                     "py_engine": py_engine.__file__}

    def round(self):
        time.sleep(self.step_s)
        self.rounds += 1
        return {"seconds": [float(self.rounds - 1)], "loss": time.time()}

    def finish(self):
        return {"rounds": self.rounds}


def spec(**kwargs):
    unset = kwargs.pop("unset", ())
    root = kwargs.pop("engine_root", "")
    return Spec("test_bench_processes:Probe", kwargs, unset=unset, set={"PYTHONPATH": str(TESTS)},
                engine_root=root)


def test_contenders_alternate_in_their_own_processes(monkeypatch):
    monkeypatch.setenv(PROBE_VARIABLE, "1")
    out = alternate({"a": spec(), "b": spec(unset=(PROBE_VARIABLE,))}, baseline="a",
                    rounds=3, warmup=2, settle_s=0.0)
    a, b = out["a"], out["b"]
    pids = {a["info"]["pid"], b["info"]["pid"], os.getpid()}
    assert len(pids) == 3 and a["environment"]["pid"] == a["info"]["pid"]
    # warm-up rounds 0 and 1 dropped; rounds 2, 3, 4 measured; every round ran, finish saw them
    assert a["steps"] == b["steps"] == [2.0, 3.0, 4.0]
    assert a["finish"] == b["finish"] == {"rounds": 5}
    # A, B, A, B, A, B: each round of b falls between a's rounds
    assert a["losses"][0] < b["losses"][0] < a["losses"][1] < b["losses"][1] < a["losses"][2] < b["losses"][2]
    # the variable reached a, not b, and b's record says it was removed
    assert a["info"]["probe"] == "1" and b["info"]["probe"] is None
    assert a["environment"]["env"][PROBE_VARIABLE] == "1"
    assert PROBE_VARIABLE not in b["environment"]["env"]
    assert b["env_changes"][PROBE_VARIABLE] is None and PROBE_VARIABLE not in a["env_changes"]
    assert out["method"]["rounds"] == 3 and out["method"]["order"] == ["a", "b"]


def test_medians_and_ratio_to_the_baseline():
    out = alternate({"slow": spec(step_s=0.0), "fast": spec(step_s=0.0)}, baseline="slow",
                    rounds=4, warmup=1, settle_s=0.0)
    assert out["slow"]["seconds"] == median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert out["slow"]["round_medians"] == out["fast"]["round_medians"] == [1.0, 2.0, 3.0, 4.0]
    assert out["fast"]["vs_slow"] == pytest.approx(1.0) and out["fast"]["vs_slow_paired"] == pytest.approx(1.0)
    assert "vs_slow" not in out["slow"]


def test_budget_stops_rounds_early():
    out = alternate({"a": spec(step_s=0.05)}, rounds=50, warmup=0, settle_s=0.0, budget_s=0.2,
                    min_rounds=2)
    assert 2 <= out["method"]["rounds"] < 50
    assert len(out["a"]["steps"]) == out["method"]["rounds"]


def test_a_failing_contender_is_reported_with_its_error():
    with pytest.raises(WorkerError, match="probe asked to fail"):
        alternate({"ok": spec(), "bad": spec(fail=True)}, rounds=1, warmup=0, settle_s=0.0)


def test_unknown_baseline_is_refused():
    with pytest.raises(ValueError, match="baseline 'c'"):
        alternate({"a": spec()}, baseline="c")


def test_a_contender_can_run_another_trees_engine(tmp_path):
    other = tmp_path / "py_engine"
    other.mkdir()
    (other / "__init__.py").write_text("")
    out = alternate({"here": spec(), "there": spec(engine_root=str(tmp_path))}, rounds=1, warmup=0,
                    settle_s=0.0)
    assert Path(out["there"]["info"]["py_engine"]).parent == other
    assert out["there"]["info"]["engine"] == str(other)
    assert Path(out["here"]["info"]["py_engine"]).parent == TESTS.parent / "py_engine"


@pytest.mark.parametrize("script, option, value", [
    ("api_load.py", "--threads", "0"), ("bert_step.py", "--rounds", "-1"),
    ("compare_revisions.py", "--rounds", "0"), ("embedding_backward.py", "--vocab", "0"),
    ("tabs_base_models.py", "--sizes", "0"), ("tabs_corrections.py", "--sets", "two"),
    ("tabs_extension.py", "--singles", "0"), ("gpu_device.py", "--seconds", "nan"),
    ("gpu_device.py", "--parts", "tabs,bogus"), ("matmul_variants.py", "--seconds", "0"),
    ("attention_variants.py", "--seconds", "0"),
])
def test_a_benchmarks_counts_are_checked_before_it_starts(script, option, value):
    """A count of 0 (or a time that is not a number > 0) would run no round and report
    nothing or NaN; each benchmark refuses it as it reads its options, naming the option."""
    import subprocess

    done = subprocess.run([sys.executable, str(TESTS.parent / "bench" / script), option, value],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"argument {option}: " in done.stderr and value in done.stderr, done.stderr
