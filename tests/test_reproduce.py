"""``keras-asc reproduce``: tables, cells, resuming, locks and the results table.

The fast tests replace ``train`` by a stand-in that saves an untrained tiny model and reports
the optimiser steps it was told to (training is tested in test_train.py; tracing a training
step costs about 10 s per cell on a 2-core CPU), and run everything else for real on the
synthetic dataset: ensembles of member cells, evaluation, the done-markers, the Markdown/CSV/PNG
table. Processes sharing a table run the same stand-in in child processes through the command
line. The slow tests train and quantise for real.
"""

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import types

import keras
import numpy as np
import pytest

from keras_asc.files import FINAL_MODEL, RUN_CONFIG, FolderLock
from keras_asc.training.reproduce import (
    BUILTIN_TABLES,
    CELL_TRAINED,
    REPORT_RESULTS,
    cell_status,
    load_table,
    plan_cells,
    reproduce,
    split_fingerprint,
    summarize,
)
from keras_asc.training.reproduce import runner as reproduce_module

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import randomize_state  # noqa: E402


class FakeTrain:
    """Stands in for keras_asc.train: saves the tiny model with seed-dependent random weights
    (so seeds differ), reports ``steps`` optimiser steps as train's result does, and records
    every call; a complete run is returned as it is (as train loads it: no training model)."""

    def __init__(self, steps=3):
        self.calls = []
        self.steps = steps

    def __call__(self, model, data_dir, split, *, seed, out_dir, teachers=None, **kwargs):
        import keras_asc

        self.calls.append(
            {
                "model": model,
                "split": split,
                "seed": seed,
                "out_dir": out_dir,
                "teachers": teachers,
                **kwargs,
            }
        )
        if kwargs.get("overwrite") and os.path.isfile(os.path.join(out_dir, FINAL_MODEL)):
            os.remove(os.path.join(out_dir, FINAL_MODEL))
        if os.path.isfile(os.path.join(out_dir, FINAL_MODEL)):
            return types.SimpleNamespace(training_model=None, steps_trained=None)
        os.makedirs(out_dir, exist_ok=True)
        built = keras_asc.build(model)
        keras.utils.set_random_seed(seed)
        randomize_state(built, seed=1000 * seed + len(out_dir))
        built.save(os.path.join(out_dir, FINAL_MODEL))
        with open(os.path.join(out_dir, RUN_CONFIG), "w", encoding="utf-8") as handle:
            json.dump({"model": model, "split": split, "seed": seed}, handle)
        return types.SimpleNamespace(training_model=built, steps_trained=self.steps)

    def cells(self):
        return [
            (os.path.basename(os.path.dirname(os.path.dirname(c["out_dir"]))), c["seed"])
            for c in self.calls
        ]


class ChildTrain(FakeTrain):
    """FakeTrain in a child process of the tests below, steered by environment variables:
    ``REPRODUCE_TEST_LOG`` (a file that gets ``PID RUN_DIR`` per call), ``REPRODUCE_TEST_BARRIER``
    (a folder: the first call waits until that many processes have made their first call, so
    that every process holds a cell before any finishes) and ``REPRODUCE_TEST_HANG`` (write a
    partial file into the run folder, then hang until killed)."""

    def __call__(self, model, data_dir, split, *, out_dir, **kwargs):
        with open(os.environ["REPRODUCE_TEST_LOG"], "a", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()} {out_dir}\n")
        barrier = os.environ.get("REPRODUCE_TEST_BARRIER")
        if barrier and not self.calls:
            folder, count = barrier.rsplit(":", 1)
            open(os.path.join(folder, str(os.getpid())), "w").close()
            deadline = time.monotonic() + 300
            while len(os.listdir(folder)) < int(count) and time.monotonic() < deadline:
                time.sleep(0.1)
        if os.environ.get("REPRODUCE_TEST_HANG"):
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, "partial.txt"), "w", encoding="utf-8") as handle:
                handle.write(str(os.getpid()))
            time.sleep(3600)
        return super().__call__(model, data_dir, split, out_dir=out_dir, **kwargs)


# A `keras-asc` command line in a child process, train and evaluate replaced as in this file
# (unless REPRODUCE_TEST_REAL is set).
CHILD = """
import sys
sys.path.insert(0, {tests!r})
from helpers import TinyMofle
from keras_asc import plugins
plugins.register_plugin(TinyMofle(), name="tiny-mofle-tests")
import test_reproduce
from keras_asc.training.reproduce import runner
import os
if not os.environ.get("REPRODUCE_TEST_REAL"):
    runner.train = test_reproduce.ChildTrain()
    runner.evaluate = test_reproduce.fake_evaluate
from keras_asc.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start_child(tmp_path, args, **environment):
    """Start ``keras-asc ARGS`` in a child process (this checkout first on its path)."""
    script = tmp_path / "child.py"
    tests = os.path.dirname(os.path.abspath(__file__))
    script.write_text(CHILD.format(tests=tests), encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([os.path.dirname(tests), os.environ.get("PYTHONPATH", "")]),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        **environment,
    }
    return subprocess.Popen(
        [sys.executable, str(script), *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def fake_evaluate(model, data_dir, split="test", **kwargs):
    """Stands in for evaluate where the metric does not matter: ten clips, the first
    ``len(path) % 10 + 1`` of them right."""
    from keras_asc.training.evaluation import evaluate_predictions

    right = len(os.fspath(model)) % 10 + 1
    predicted = np.where(np.arange(10) < right, np.arange(10), (np.arange(10) + 1) % 10)
    return evaluate_predictions(np.eye(10)[predicted], np.arange(10), split=split)


TINY_TABLE = {
    "title": "tiny",
    "splits": [100],
    "seeds": [0, 1],
    "train": {"epochs": 1},
    "rows": [
        {"name": "a", "model": "tiny_mofle", "label": "tiny A"},
        {"name": "b", "model": "tiny_mofle", "train": {"batch_size": 8}, "show": False},
        {
            "name": "ens",
            "members": ["a", "b"],
            "weights": [0.6, 0.4],
            "report": "ensemble_v2_qat",
        },
    ],
}


# --- tables --------------------------------------------------------------------------------


def test_report_numbers_and_builtin_tables():
    assert REPORT_RESULTS["moflenet57_qat"]["accuracy"] == {
        100: 58.79,
        50: 56.71,
        25: 52.21,
        10: 45.40,
        5: 41.22,
    }
    assert REPORT_RESULTS["ensemble_v2_qat"]["accuracy"][5] == 47.58
    assert REPORT_RESULTS["dcase24_baseline_quantized"]["accuracy"][100] == 56.99
    assert REPORT_RESULTS["cp_resnet59_qat"]["accuracy"][25] == 54.81
    table = load_table("report")
    assert table.splits == (100, 50, 25, 10, 5) and len(table.seeds) >= 2
    assert [(row.name, row.quantize) for row in table.rows] == [
        ("dcase24_baseline", "qat"),
        ("moflenet57", "qat"),
        ("cp_resnet59", "qat"),
        ("moflenet57_cp_resnet59_v2", "qat"),
    ]
    ensemble = table.row("moflenet57_cp_resnet59_v2")
    assert ensemble.members == ("cp_resnet59", "moflenet57")
    assert ensemble.preset == "moflenet57_cp_resnet59_v2"
    assert ensemble.label == "ensemble v2"
    report_float = load_table("report-float")
    assert {row.quantize for row in report_float.rows} == {"none"}
    assert [row.label for row in report_float.rows] == [
        "DCASE24 baseline",
        "MofleNet57",
        "CP-ResNet59",
        "ensemble v2",
    ]
    assert set(BUILTIN_TABLES) == {"report", "report-float"}


def test_an_ensemble_preset_row_adds_hidden_member_rows(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(
        "splits = [25, 5]\nseeds = [3]\n[train]\nepochs = 2\n"
        '[[rows]]\nmodel = "v1"\nquantize = "ptq"\n',
        encoding="utf-8",
    )
    table = load_table(path)
    assert [(row.name, row.show) for row in table.rows] == [
        ("cp_resnet59", False),
        ("moflenet57", False),
        ("moflenet57_cp_resnet59_v1", True),
    ]
    assert table.train == {"epochs": 2}
    cells = plan_cells(table, tmp_path / "out")
    assert [cell.name for cell in cells] == [
        "cp_resnet59/split25-seed3",
        "moflenet57/split25-seed3",
        "moflenet57_cp_resnet59_v1/split25-seed3",
        "cp_resnet59/split5-seed3",
        "moflenet57/split5-seed3",
        "moflenet57_cp_resnet59_v1/split5-seed3",
    ]
    assert cells[2].folder == str(
        tmp_path / "out" / "cells" / "moflenet57_cp_resnet59_v1" / "split25-seed3"
    )
    restricted = load_table(path, splits=[10], seeds=[0, 1], rows=["moflenet57"])
    assert [row.name for row in restricted.rows] == ["moflenet57"]
    assert (restricted.splits, restricted.seeds) == ((10,), (0, 1))


@pytest.mark.parametrize(
    "table, message",
    [
        ({"rows": []}, "needs \\[\\[rows\\]\\]"),
        ({"rows": [{"model": "nope"}]}, "unknown model 'nope'"),
        ({"rows": [{"model": "moflenet57", "quantize": "int4"}]}, "quantize must be one of"),
        ({"rows": [{"model": "moflenet57"}], "splits": [30]}, "splits"),
        ({"rows": [{"model": "moflenet57"}], "train": {"epoch": 3}}, "'epoch'"),
        ({"rows": [{"model": "moflenet57"}], "train": {"seed": 3}}, "'seed'"),
        ({"rows": [{"model": "moflenet57"}], "qat": {"epochs": 1, "bogus": 1}}, "'bogus'"),
        ({"rows": [{"model": "moflenet57", "colour": 1}]}, "unknown keys \\['colour'\\]"),
        ({"rows": [{"model": "moflenet57"}, {"model": "moflenet57"}]}, "unique"),
        (
            {"rows": [{"name": "e", "members": ["x", "y"], "weights": [1, 1]}]},
            "'x', which is no row",
        ),
        ({"rows": [{"model": "moflenet57", "teachers": ["t"]}]}, "'t', which is no row"),
        ({"rows": [{"model": "moflenet57", "report": "table9"}]}, "unknown report row"),
    ],
)
def test_bad_tables_say_what_is_wrong(table, message):
    with pytest.raises(ValueError, match=message):
        load_table(table)


def test_the_example_table_parses():
    from conftest import PROJECT_ROOT

    table = load_table(PROJECT_ROOT / "examples" / "reproduce_table.toml")
    assert [(row.name, row.members, row.weights) for row in table.rows] == [
        ("moflenet57", (), None),
        ("cp_resnet59", (), None),
        ("moflenet57_cp_resnet59_v1", ("cp_resnet59", "moflenet57"), None),
        ("moflenet57_cp_resnet59_v2", ("cp_resnet59", "moflenet57"), None),
        ("mofle_resnet_70_30", ("cp_resnet59", "moflenet57"), (0.7, 0.3)),
    ]
    assert all(row.quantize == "qat" for row in table.rows) and table.seeds == (0, 1, 2)


def test_table_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="built-in tables: report, report-float"):
        load_table(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rows = [", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.toml.*not valid TOML"):
        load_table(bad)


def test_teacher_rows_come_before_their_students():
    table = load_table(
        {"rows": [{"model": "moflenet57", "teachers": ["cp_resnet59"]}, {"model": "cp_resnet59"}]}
    )
    assert [row.name for row in table.rows] == ["cp_resnet59", "moflenet57"]


# --- results -------------------------------------------------------------------------------


def _write_done(cell, accuracy, steps=10):
    """A finished cell as reproduce leaves it: a model in run/, the steps it trained recorded
    against that model's digest, and the evaluation record."""
    os.makedirs(cell.run_dir, exist_ok=True)
    model = os.path.join(cell.run_dir, FINAL_MODEL)
    with open(model, "wb") as handle:
        handle.write(cell.name.encode())
    digest = hashlib.sha256(cell.name.encode()).hexdigest()
    with open(os.path.join(cell.folder, CELL_TRAINED), "w", encoding="utf-8") as handle:
        json.dump({"steps": steps, "sha256": digest}, handle)
    with open(cell.done_path, "w", encoding="utf-8") as handle:
        json.dump({"macro_accuracy": accuracy, "quantization": cell.row.quantize}, handle)


def test_summary_has_mean_std_over_seeds_and_the_report(tmp_path):
    table = load_table("report", splits=[100, 5], seeds=[0, 1, 2])
    cells = {cell.name: cell for cell in plan_cells(table, tmp_path)}
    for seed, value in enumerate((0.60, 0.62, 0.64)):
        _write_done(cells[f"moflenet57/split100-seed{seed}"], value)
    _write_done(cells["cp_resnet59/split5-seed1"], 0.5)
    summary = summarize(table, tmp_path)
    entry = summary.entry("moflenet57", 100)
    assert entry.values == pytest.approx({0: 60.0, 1: 62.0, 2: 64.0})
    assert entry.mean == pytest.approx(62.0) and entry.std == pytest.approx(2.0)
    markdown = summary.markdown()
    assert "| model | 100 % | 5 % |" in markdown
    assert "| MofleNet57 (QAT) | 62.00 ± 2.00 (58.79) | - (41.22) |" in markdown
    assert "| CP-ResNet59 (QAT) | - (58.49) | 50.00 [1/3 seeds] (44.92) |" in markdown
    assert "Low complexity acoustic scene classification with MofleNet" in markdown
    rows = list(csv.DictReader(summary.csv().splitlines()))
    mofle = next(r for r in rows if r["row"] == "moflenet57" and r["split"] == "100")
    assert (mofle["seeds"], mofle["mean"], mofle["std"], mofle["report"]) == (
        "3",
        "62.0000",
        "2.0000",
        "58.79",
    )
    assert mofle["float_mean"] == "" and mofle["values"] == "0:60.0000 1:62.0000 2:64.0000"
    # A corrupt done-marker is not a finished cell.
    with open(cells["moflenet57/split100-seed2"].done_path, "w", encoding="utf-8") as handle:
        handle.write("{not json")
    assert cell_status(cells["moflenet57/split100-seed2"]) == "started"
    assert summarize(table, tmp_path).entry("moflenet57", 100).mean == pytest.approx(61.0)
    # A marker written for another quantisation (the table changed since) is not finished.
    with open(cells["moflenet57/split100-seed1"].done_path, "w", encoding="utf-8") as handle:
        json.dump({"macro_accuracy": 0.62, "quantization": "none"}, handle)
    assert summarize(table, tmp_path).entry("moflenet57", 100).values == pytest.approx({0: 60.0})


# --- running cells (train replaced, the rest real) -----------------------------------------


def test_reproduce_runs_every_cell_once_and_resumes(
    tiny_model, synthetic_root, tmp_path, monkeypatch
):
    fake = FakeTrain()
    monkeypatch.setattr(reproduce_module, "train", fake)
    built = []
    real_build = reproduce_module.build_ensemble
    monkeypatch.setattr(
        reproduce_module,
        "build_ensemble",
        lambda *a, **k: built.append(k["out_dir"]) or real_build(*a, **k),
    )
    out = tmp_path / "out"
    real_evaluate = reproduce_module.evaluate

    def failing_evaluate(model, *args, **kwargs):
        if "ens" in str(model) and "seed1" in str(model):
            raise RuntimeError("injected failure")
        return real_evaluate(model, *args, **kwargs)

    # 1. Interrupted in the last cell's evaluation (after its ensemble was built).
    monkeypatch.setattr(reproduce_module, "evaluate", failing_evaluate)
    with pytest.raises(RuntimeError, match="injected failure"):
        reproduce(
            TINY_TABLE, synthetic_root, out, train_overrides={"steps_per_epoch": 2}, verbose=0
        )
    table = load_table(TINY_TABLE)
    cells = {cell.name: cell for cell in plan_cells(table, out)}
    assert [name for name, cell in cells.items() if cell.done] == [
        "a/split100-seed0",
        "b/split100-seed0",
        "ens/split100-seed0",
        "a/split100-seed1",
        "b/split100-seed1",
    ]
    assert fake.cells() == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    first = fake.calls[0]
    assert (first["split"], first["epochs"], first["steps_per_epoch"], first["verbose"]) == (
        100,
        1,
        2,
        0,
    )
    assert fake.calls[1]["batch_size"] == 8 and "batch_size" not in first
    assert len(built) == 2
    # 2. Rerun: only the unfinished cell runs; its ensemble is reused, not rebuilt.
    monkeypatch.setattr(reproduce_module, "evaluate", real_evaluate)
    fake.calls.clear()
    result = reproduce(TINY_TABLE, synthetic_root, out, verbose=0)
    assert result.ran == ("ens/split100-seed1",) and fake.calls == [] and len(built) == 2
    assert all(cell.done for cell in cells.values())
    # 3. A deleted and a corrupt done-marker: those two cells run again, nothing else.
    os.remove(cells["a/split100-seed0"].done_path)
    with open(cells["ens/split100-seed1"].done_path, "w", encoding="utf-8") as handle:
        handle.write("")
    result = reproduce(TINY_TABLE, synthetic_root, out, verbose=0)
    assert result.ran == ("a/split100-seed0", "ens/split100-seed1")
    assert fake.cells() == [("a", 0)] and len(built) == 2

    # The results: two seeds per shown row, the hidden member row left out, the report beside.
    summary = result.summary
    assert [row.name for row in summary.rows] == ["a", "ens"]
    for name in ("a", "ens"):
        entry = summary.entry(name, 100)
        assert sorted(entry.values) == [0, 1] and entry.std is not None
        records = [json.load(open(cells[f"{name}/split100-seed{s}"].done_path)) for s in (0, 1)]
        assert entry.values == pytest.approx(
            {r["seed"]: 100 * r["macro_accuracy"] for r in records}
        )
        assert all(r["float"]["num_clips"] == 90 and r["int8"] is None for r in records)
    ens = summary.entry("ens", 100)
    markdown = (out / "results.md").read_text(encoding="utf-8")
    assert markdown == result.markdown
    assert (
        f"| tiny A (float) | {summary.entry('a', 100).mean:.2f} ± {summary.entry('a', 100).std:.2f} |"
        in markdown
    )
    # The row ran float: the report's number beside it says it was measured after QAT.
    assert f"| ensemble v2 (float) | {ens.mean:.2f} ± {ens.std:.2f} (62.51 QAT) |" in markdown
    rows = list(csv.DictReader((out / "results.csv").read_text(encoding="utf-8").splitlines()))
    assert [(r["row"], r["seeds"]) for r in rows] == [("a", "2"), ("ens", "2")]
    assert float(rows[1]["float_mean"]) == pytest.approx(ens.mean, abs=1e-4)  # not quantised
    png = out / "results.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.load(open(cells["ens/split100-seed0"].run_dir + "/" + RUN_CONFIG))
    assert config["kind"] == "ensemble" and config["weights"] == [0.6, 0.4]
    assert [m["source"] for m in config["members"]] == [
        os.path.abspath(cells["a/split100-seed0"].run_dir),
        os.path.abspath(cells["b/split100-seed0"].run_dir),
    ]
    # 4. A member's model.keras deleted: the member trains again, and the ensemble of that
    # split and seed is rebuilt from the new member (the old ensemble no longer counts).
    os.remove(os.path.join(cells["a/split100-seed1"].run_dir, FINAL_MODEL))
    assert [cell_status(cell) for cell in cells.values()] == [
        *["done"] * 3,
        "started",  # a, seed 1
        "done",
        "started",  # its ensemble
    ]
    fake.calls.clear()
    result = reproduce(TINY_TABLE, synthetic_root, out, verbose=0)
    assert result.ran == ("a/split100-seed1", "ens/split100-seed1")
    assert fake.cells() == [("a", 1)] and len(built) == 3


def test_cells_locked_by_another_process_are_left_to_it(
    tiny_model, synthetic_root, tmp_path, monkeypatch
):
    fake = FakeTrain()
    monkeypatch.setattr(reproduce_module, "train", fake)
    monkeypatch.setattr(reproduce_module, "evaluate", fake_evaluate)
    table = load_table({**TINY_TABLE, "seeds": [0]})
    cells = {cell.name: cell for cell in plan_cells(table, tmp_path)}
    held = cells["b/split100-seed0"]
    os.makedirs(held.folder)
    with FolderLock(held.folder, owner="keras-asc reproduce"):
        assert cell_status(held) == "running"
        result = reproduce(table, synthetic_root, tmp_path, cells=["0-2"], verbose=0)
    # a ran; b is another process's, so the ensemble that needs it waits too.
    assert result.ran == ("a/split100-seed0",)
    assert result.busy == ("b/split100-seed0", "ens/split100-seed0")
    assert (
        "| tiny A (float) |" in result.markdown
        and "| ensemble v2 (float) | - (62.51 QAT) |" in result.markdown
    )
    # One cell by name: it runs the member it needs first.
    result = reproduce(table, synthetic_root, tmp_path, cells=["ens/split100-seed0"], verbose=0)
    assert result.ran == ("b/split100-seed0", "ens/split100-seed0") and result.busy == ()
    with pytest.raises(ValueError, match="--cell '7' is neither a cell index \\(0 to 2"):
        reproduce(table, synthetic_root, tmp_path, cells=["7"])


def test_a_lock_held_for_an_instant_does_not_lose_the_cell(
    tiny_model, synthetic_root, tmp_path, monkeypatch
):
    """`--list` tests a cell's lock by taking it for an instant; a process starting that cell
    at that moment tries again instead of leaving the cell to a process that is not there."""
    from keras_asc.files import FolderLockedError

    monkeypatch.setattr(reproduce_module, "train", FakeTrain())
    monkeypatch.setattr(reproduce_module, "evaluate", fake_evaluate)
    table = load_table(TINY_TABLE)
    cell = plan_cells(table, tmp_path)[0]
    os.makedirs(cell.folder)
    held = FolderLock(cell.folder, owner="keras-asc reproduce").__enter__()
    refused = []

    class ListedMeanwhile(FolderLock):  # the lock goes right after the first refusal
        def __enter__(self):
            try:
                return super().__enter__()
            except FolderLockedError:
                refused.append(self.folder)
                held.__exit__(None, None, None)
                raise

    monkeypatch.setattr(reproduce_module, "FolderLock", ListedMeanwhile)
    result = reproduce(table, synthetic_root, tmp_path, cells=["0"], verbose=0, plots=False)
    assert refused == [cell.folder]
    assert result.ran == ("a/split100-seed0",) and result.busy == ()


def test_a_job_array_task_waits_for_the_member_cell_another_task_runs(
    tiny_model, synthetic_root, tmp_path, monkeypatch, capsys
):
    """Array task 2 (the ensemble) with --wait: its member b is locked by another task, so it
    runs member a, polls until b's lock goes (the other task died before training b), then
    runs b itself and the ensemble."""
    import threading

    from keras_asc.cli import main

    fake = FakeTrain()
    monkeypatch.setattr(reproduce_module, "train", fake)
    monkeypatch.setattr(reproduce_module, "evaluate", fake_evaluate)
    table_data = {**TINY_TABLE, "seeds": [0]}
    table = tmp_path / "t.toml"
    table.write_text(
        'splits = [100]\nseeds = [0]\n[[rows]]\nname = "a"\nmodel = "tiny_mofle"\n'
        '[[rows]]\nname = "b"\nmodel = "tiny_mofle"\n'
        '[[rows]]\nname = "ens"\nmembers = ["a", "b"]\nweights = [0.6, 0.4]\n',
        encoding="utf-8",
    )
    cells = plan_cells(load_table(table_data), tmp_path / "out")
    held = cells[1]
    os.makedirs(held.folder)
    lock = FolderLock(held.folder, owner="keras-asc reproduce").__enter__()

    def release_after_a():  # the other task lets go of b a second after a is finished
        deadline = time.monotonic() + 300
        while not os.path.exists(cells[0].done_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        lock.__exit__(None, None, None)

    releaser = threading.Thread(target=release_after_a)
    releaser.start()
    try:
        args = ["reproduce", str(table), "--out", str(tmp_path / "out"), "--data", synthetic_root]
        assert main([*args, "--cell", "2", "--wait", "--poll", "0.2", "--verbose", "0"]) == 0
    finally:
        releaser.join()
    err = capsys.readouterr().err
    assert "cell 2 ens/split100-seed0: waiting, b/split100-seed0 is run by another process" in err
    # While waiting it ran a, and b once free (here nobody else did), then the ensemble.
    assert [c.name for c in cells if c.done] == [c.name for c in cells]
    assert fake.cells() == [("a", 0), ("b", 0)]


def test_teachers_are_the_teacher_rows_cells(tiny_model, synthetic_root, tmp_path, monkeypatch):
    fake = FakeTrain()
    monkeypatch.setattr(reproduce_module, "train", fake)
    monkeypatch.setattr(reproduce_module, "evaluate", fake_evaluate)
    table = {
        "splits": [100],
        "seeds": [4],
        "rows": [
            {"name": "student", "model": "tiny_mofle", "teachers": ["teacher"]},
            {"name": "teacher", "model": "tiny_mofle"},
        ],
    }
    result = reproduce(table, synthetic_root, tmp_path, verbose=0, plots=False)
    assert result.ran == ("teacher/split100-seed4", "student/split100-seed4")
    assert fake.calls[0]["teachers"] is None
    assert fake.calls[1]["teachers"] == [
        str(tmp_path / "cells" / "teacher" / "split100-seed4" / "run")
    ]
    assert not (tmp_path / "results.png").exists()


def test_command_line(tiny_model, synthetic_root, tmp_path, monkeypatch, capsys):
    from keras_asc.cli import main

    monkeypatch.setattr(reproduce_module, "train", FakeTrain())
    monkeypatch.setattr(reproduce_module, "evaluate", fake_evaluate)
    table = tmp_path / "table.toml"
    table.write_text(
        'title = "cli"\nsplits = [100]\nseeds = [0, 1]\n'
        '[[rows]]\nname = "a"\nmodel = "tiny_mofle"\nreport = "moflenet57_qat"\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    assert main(["reproduce", str(table), "--out", str(out), "--list"]) == 0
    listed = capsys.readouterr()
    assert [line.split()[:3] for line in listed.out.splitlines()] == [
        ["0", "a/split100-seed0", "pending"],
        ["1", "a/split100-seed1", "pending"],
    ]
    assert "--cell takes an index from 0 to 1 (a job array: --array=0-1," in listed.err
    assert (
        main(
            [
                "reproduce",
                str(table),
                "--out",
                str(out),
                "--data",
                synthetic_root,
                "--cell",
                "1",
                "--epochs",
                "1",
                "--verbose",
                "0",
            ]
        )
        == 0
    )
    output = capsys.readouterr().out
    assert "| MofleNet57 (float) |" in output and "[1/2 seeds] (58.79 QAT)" in output
    assert main(["reproduce", str(table), "--out", str(out), "--list"]) == 0
    assert [line.split()[2] for line in capsys.readouterr().out.splitlines()] == ["pending", "done"]
    assert main(["reproduce", str(table), "--out", str(out), "--summarize"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["reproduce", str(table), "--out", str(out)]) == 2
    assert "--data DIR" in capsys.readouterr().err
    assert main(["reproduce", str(table), "--out", str(out), "--seeds", "0,x"]) == 2
    assert "--seeds must be comma-separated integers" in capsys.readouterr().err
    assert main(["reproduce", str(table), "--out", str(out), "--data", "x", "--poll", "0"]) == 2
    assert "--poll must be a positive number of seconds" in capsys.readouterr().err
    assert main(["reproduce", "nope", "--out", str(out)]) == 2
    assert "built-in tables: report, report-float" in capsys.readouterr().err


# --- the real workflow ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_reproduce_trains_quantises_and_evaluates(tiny_model, synthetic_root, tmp_path):
    table = {
        "title": "tiny, trained and quantised",
        "splits": [100],
        "seeds": [0, 1],
        "train": {
            "epochs": 1,
            "steps_per_epoch": 2,
            "batch_size": 16,
            "jit_compile": False,
            "tensorboard": False,
        },
        "qat": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 10, "calibration_clips": 20},
        "rows": [
            {"name": "a", "model": "tiny_mofle", "quantize": "qat", "report": "moflenet57_qat"}
        ],
    }
    result = reproduce(table, synthetic_root, tmp_path, verbose=0)
    assert result.ran == ("a/split100-seed0", "a/split100-seed1")
    entry = result.summary.entry("a", 100)
    for seed in (0, 1):
        cell_dir = tmp_path / "cells" / "a" / f"split100-seed{seed}"
        record = json.loads((cell_dir / "evaluation.json").read_text(encoding="utf-8"))
        assert record["quantization"] == "qat" and record["int8_file"] == "int8/tiny_mofle.tflite"
        assert record["macro_accuracy"] == record["int8"]["macro_accuracy"]
        assert record["int8"]["num_clips"] == record["float"]["num_clips"] == 90
        assert entry.values[seed] == pytest.approx(100 * record["macro_accuracy"])
        assert (cell_dir / "run" / "complete.json").is_file()
    assert np.isfinite(entry.std)
    assert reproduce(table, synthetic_root, tmp_path, verbose=0).ran == ()


# --- a cell is done only with a trained model ----------------------------------------------

ONE_ROW = (
    'title = "one row"\nsplits = [100]\nseeds = [0, 1]\n'
    '[[rows]]\nname = "a"\nmodel = "tiny_mofle"\n'
)


def _list_statuses(main, table, out, capsys):
    capsys.readouterr()
    assert main(["reproduce", str(table), "--out", str(out), "--list"]) == 0
    return [line.split()[2] for line in capsys.readouterr().out.splitlines()]


def test_a_cell_is_done_only_with_a_trained_model(
    tiny_model, synthetic_root, tmp_path, monkeypatch, capsys
):
    from keras_asc.cli import main

    fake = FakeTrain(steps=0)
    monkeypatch.setattr(reproduce_module, "train", fake)
    monkeypatch.setattr(reproduce_module, "evaluate", fake_evaluate)
    table = tmp_path / "t.toml"
    table.write_text(ONE_ROW, encoding="utf-8")
    out = tmp_path / "out"
    run = ["reproduce", str(table), "--out", str(out), "--data", synthetic_root, "--verbose", "0"]
    cells = plan_cells(load_table(table), out)
    # 1. A training run that took 0 optimiser steps: one line naming the cell, nothing done.
    assert main([*run, "--cell", "0"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-2:-1] == ["keras-asc reproduce: cell 0 a/split100-seed0: starting"]
    error = lines[-1]  # after the progress lines, one line says what is wrong
    assert error.startswith("keras-asc reproduce: error: Cell 0 a/split100-seed0: the run in ")
    assert "took 0 optimiser steps" in error and "no trained model" in error
    assert not os.path.exists(cells[0].done_path)
    assert _list_statuses(main, table, out, capsys) == ["started", "pending"]
    # 2. Run again once training takes steps: the 0-step run is replaced, not reused.
    fake.steps = 5
    assert main([*run, "--cell", "0"]) == 0
    assert [call.get("overwrite") for call in fake.calls] == [None, True]
    record = json.loads(open(cells[0].done_path, encoding="utf-8").read())
    assert record["steps_trained"] == {"a": 5}
    assert _list_statuses(main, table, out, capsys) == ["done", "pending"]
    # 3. A finished cell whose model.keras was deleted is not done, and is trained again.
    assert main(run) == 0
    fake.calls.clear()
    os.remove(os.path.join(cells[1].run_dir, FINAL_MODEL))
    assert _list_statuses(main, table, out, capsys) == ["done", "started"]
    assert main(run) == 0
    assert [(c["seed"], c.get("overwrite")) for c in fake.calls] == [(1, None)]
    assert os.path.isfile(os.path.join(cells[1].run_dir, FINAL_MODEL))
    assert _list_statuses(main, table, out, capsys) == ["done", "done"]
    # 4. A model replaced behind the record's back is not the one the record counts.
    with open(os.path.join(cells[1].run_dir, FINAL_MODEL), "ab") as handle:
        handle.write(b"changed")
    assert _list_statuses(main, table, out, capsys) == ["done", "started"]


def test_labels_and_records_say_what_ran(
    tiny_model, synthetic_root, tmp_path, monkeypatch, capsys
):
    """A PTQ row compared with the report's QAT row says PTQ in results.md, results.csv and the
    plot legend, and each cell records the split it was trained on with its fingerprint."""
    from keras_asc.cli import main
    from keras_asc.training import plots

    monkeypatch.setattr(reproduce_module, "train", FakeTrain())
    monkeypatch.setattr(reproduce_module, "evaluate", fake_evaluate)
    quantized = []

    def fake_quantize_run(run, data_dir, *, split, seed, ptq, out_dir, **kwargs):
        quantized.append((split, ptq))
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "model.tflite")
        with open(path, "wb") as handle:
            handle.write(b"int8")
        export = types.SimpleNamespace(path=path)
        return types.SimpleNamespace(exports=[(None, export)], quantization="ptq" if ptq else "qat")

    monkeypatch.setattr(reproduce_module, "_quantize_run_function", lambda: fake_quantize_run)
    legends = []
    real_save = plots._save
    monkeypatch.setattr(
        plots,
        "_save",
        lambda figure, path: legends.append(figure.axes[0].get_legend_handles_labels()[1])
        or real_save(figure, path),
    )
    table = tmp_path / "t.toml"
    table.write_text(
        'splits = [100]\nseeds = [0]\n[[rows]]\nmodel = "tiny_mofle"\nquantize = "ptq"\n'
        'report = "moflenet57_qat"\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    assert main(["reproduce", str(table), "--out", str(out), "--data", synthetic_root]) == 0
    assert quantized == [(100, True)]
    markdown = (out / "results.md").read_text(encoding="utf-8")
    assert "| MofleNet57 (PTQ) |" in markdown and "(58.79 QAT) |" in markdown
    assert "after QAT |" not in markdown
    rows = list(csv.DictReader((out / "results.csv").read_text(encoding="utf-8").splitlines()))
    assert [(r["label"], r["quantization"]) for r in rows] == [("MofleNet57", "PTQ")]
    assert [sorted(labels) for labels in legends] == [
        ["MofleNet57 (PTQ)", "MofleNet57 after QAT (report)"]
    ]
    cell = plan_cells(load_table(table), out)[0]
    record = json.loads(open(cell.done_path, encoding="utf-8").read())
    assert (record["split"], record["quantization"], record["int8_file"]) == (
        100,
        "ptq",
        os.path.join("int8", "model.tflite"),
    )
    # The fingerprint: SHA-256 of the split file's "filename<TAB>label" lines, sorted.
    rows = open(os.path.join(synthetic_root, "split100.csv"), encoding="utf-8").read()
    rows = rows.splitlines()[1:]
    assert len(rows) == 200
    expected = hashlib.sha256("".join(f"{r}\n" for r in sorted(rows)).encode()).hexdigest()
    assert record["split_fingerprint"] == expected == split_fingerprint(synthetic_root, 100)
    assert split_fingerprint(synthetic_root, 5) != expected
    # A rerun quantises nothing again; a retrained float model is quantised anew.
    assert main(["reproduce", str(table), "--out", str(out), "--data", synthetic_root]) == 0
    assert quantized == [(100, True)]
    os.remove(os.path.join(cell.run_dir, FINAL_MODEL))
    assert main(["reproduce", str(table), "--out", str(out), "--data", synthetic_root]) == 0
    assert quantized == [(100, True), (100, True)]


# --- several processes on one table ---------------------------------------------------------

FOUR_CELLS = (
    'title = "four"\nsplits = [100]\nseeds = [0, 1, 2, 3]\n'
    '[[rows]]\nname = "a"\nmodel = "tiny_mofle"\n'
)


def _finish(process, timeout=600):
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out, err


@pytest.mark.slow  # two child processes importing TensorFlow: about a minute on 2 cores
def test_two_processes_finish_a_table_together(tiny_model, synthetic_root, tmp_path):
    table = tmp_path / "t.toml"
    table.write_text(FOUR_CELLS, encoding="utf-8")
    out, log, barrier = tmp_path / "out", tmp_path / "calls.log", tmp_path / "barrier"
    barrier.mkdir()
    args = ["reproduce", table, "--out", out, "--data", synthetic_root, "--verbose", "0"]
    environment = {"REPRODUCE_TEST_LOG": str(log), "REPRODUCE_TEST_BARRIER": f"{barrier}:2"}
    children = [start_child(tmp_path, args, **environment) for _ in range(2)]
    finished = [_finish(child) for child in children]
    for returncode, _, err in finished:
        assert returncode == 0, err
    calls = [line.split() for line in log.read_text(encoding="utf-8").splitlines()]
    cells = plan_cells(load_table(table), out)
    # Every cell trained exactly once, by one of the two processes, and both took cells.
    assert sorted(run_dir for _, run_dir in calls) == sorted(cell.run_dir for cell in cells)
    assert {int(pid) for pid, _ in calls} == {child.pid for child in children}
    assert all(cell.done for cell in cells)
    # Whichever process wrote the results last wrote all four seeds.
    markdown = (out / "results.md").read_text(encoding="utf-8")
    entry = summarize(load_table(table), out).entry("a", 100)
    assert sorted(entry.values) == [0, 1, 2, 3]
    assert f"| a (float) | {entry.mean:.2f} ± {entry.std:.2f} |" in markdown


def test_a_killed_cell_is_taken_over(
    tiny_model, synthetic_root, tmp_path, monkeypatch, capsys
):
    from keras_asc.cli import main
    from keras_asc.files import LOCK_FILE

    table = tmp_path / "t.toml"
    table.write_text(FOUR_CELLS, encoding="utf-8")
    out, log = tmp_path / "out", tmp_path / "calls.log"
    args = ["reproduce", table, "--out", out, "--data", synthetic_root, "--verbose", "0"]
    child = start_child(
        tmp_path, [*args, "--cell", "2"], REPRODUCE_TEST_LOG=str(log), REPRODUCE_TEST_HANG="1"
    )
    cell = plan_cells(load_table(table), out)[2]
    deadline = time.monotonic() + 300
    while not os.path.isfile(os.path.join(cell.run_dir, "partial.txt")):
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the child process did not start the cell"
        time.sleep(0.2)
    assert _list_statuses(main, table, out, capsys)[2] == "running"
    # Another process asked for the same cell leaves it to the one running it.
    monkeypatch.setattr(reproduce_module, "train", FakeTrain())
    monkeypatch.setattr(reproduce_module, "evaluate", fake_evaluate)
    assert main([*map(str, args), "--cell", "2"]) == 0
    assert "a/split100-seed2 is run by another process" in capsys.readouterr().err
    # Killed (no chance to clean up): the kernel drops its lock, and the cell is taken over.
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    assert _list_statuses(main, table, out, capsys)[2] == "started"
    assert main([*map(str, args), "--cell", "2"]) == 0
    assert _list_statuses(main, table, out, capsys) == ["pending", "pending", "done", "pending"]
    # The same folder was continued (the killed process's file is still there), now locked by
    # this process.
    assert open(os.path.join(cell.run_dir, "partial.txt")).read() == str(child.pid)
    lock = open(os.path.join(cell.folder, LOCK_FILE), encoding="utf-8").read()
    assert lock.split() == [str(os.getpid())]


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_a_killed_training_cell_is_taken_over_and_resumed(
    tiny_model, synthetic_root, tmp_path, capsys
):
    """Real training, killed after its first epoch: another process takes the cell over and
    continues the same run from its backup (same run id, every epoch logged once)."""
    from keras_asc.cli import main

    table = tmp_path / "t.toml"
    table.write_text(
        'splits = [100]\nseeds = [0]\n[train]\nepochs = 4\nsteps_per_epoch = 3\n'
        "batch_size = 16\nbackup_every_steps = 1\njit_compile = false\ntensorboard = false\n"
        '[[rows]]\nname = "a"\nmodel = "tiny_mofle"\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    args = ["reproduce", table, "--out", out, "--data", synthetic_root, "--verbose", "0"]
    cell = plan_cells(load_table(table), out)[0]
    log_csv = os.path.join(cell.run_dir, "log.csv")
    child = start_child(tmp_path, args, REPRODUCE_TEST_REAL="1")
    deadline = time.monotonic() + 600
    while not (os.path.isfile(log_csv) and len(open(log_csv).read().splitlines()) >= 2):
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the child process did not finish an epoch"
        time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    run_config = os.path.join(cell.run_dir, RUN_CONFIG)
    run_id = json.loads(open(run_config, encoding="utf-8").read())["run_id"]
    assert not os.path.exists(os.path.join(cell.run_dir, FINAL_MODEL))
    assert _list_statuses(main, table, out, capsys) == ["started"]
    assert main([*map(str, args)]) == 0
    assert _list_statuses(main, table, out, capsys) == ["done"]
    assert json.loads(open(run_config, encoding="utf-8").read())["run_id"] == run_id
    with open(log_csv, encoding="utf-8") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1", "2", "3"]
    record = json.loads(open(cell.done_path, encoding="utf-8").read())
    assert record["steps_trained"]["a"] == 12


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_a_split_smaller_than_one_batch_never_counts_as_done(
    tiny_model, synthetic_root, tmp_path, capsys
):
    """Split 5 of the synthetic set has 10 clips: batches of 16 with a fixed step count train
    nothing. The cell fails with one line and stays unfinished; nothing enters the table."""
    from keras_asc.cli import main

    table = tmp_path / "t.toml"
    table.write_text(
        'splits = [5]\nseeds = [0]\n[train]\nbatch_size = 16\njit_compile = false\n'
        'tensorboard = false\n[[rows]]\nname = "a"\nmodel = "tiny_mofle"\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    args = ["reproduce", str(table), "--out", str(out), "--data", synthetic_root]
    assert main([*args, "--epochs", "1", "--steps-per-epoch", "2", "--verbose", "0"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and " 0 " in errors[0], errors
    cell = plan_cells(load_table(table), out)[0]
    assert not os.path.exists(cell.done_path)
    assert _list_statuses(main, table, out, capsys) == ["started"]
    assert main([*args, "--summarize"]) == 0
    assert "| a (float) | - |" in (out / "results.md").read_text(encoding="utf-8")
