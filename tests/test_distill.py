"""Knowledge distillation (``keras_asc.training.distill``, ``train(..., teachers=...)``): the
loss against NumPy, per-clip teacher targets through the shuffled pipeline, stored and reused
teacher logits, run_config.json, and the refusal of teachers trained on another split."""

import io
import json
import os
import shutil
import sys

import keras
import numpy as np
import pytest
import soundfile

import keras_asc
from keras_asc.cli import main
from keras_asc.data import tau22
from keras_asc.data.pipeline import make_dataset
from keras_asc.training import build_ensemble, distill, load_model, train
from keras_asc.training.distill import (
    DistillationLoss,
    LabelAccuracy,
    check_teachers,
    teacher_logits,
    teacher_logits_path,
)


def _numpy_kd_loss(labels, teacher, student, temperature, kd_lambda):
    """The CP-JKU formula, written independently: KLDivLoss(log_target=True) then .mean()."""

    def log_softmax(x):
        x = x - x.max(axis=-1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))

    label_loss = -log_softmax(student)[np.arange(len(labels)), labels].mean()
    log_t = log_softmax(teacher / temperature)
    log_s = log_softmax(student / temperature)
    kd = (np.exp(log_t) * (log_t - log_s)).mean() * temperature**2  # mean over batch and classes
    return kd_lambda * label_loss + (1 - kd_lambda) * kd


@pytest.mark.parametrize("temperature,kd_lambda", [(2.0, 0.02), (1.0, 0.5), (4.0, 0.0)])
def test_loss_matches_numpy(temperature, kd_lambda):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=6)
    teacher = rng.normal(0, 3, size=(6, 10)).astype("float32")
    student = rng.normal(0, 3, size=(6, 10)).astype("float32")
    y_true = np.concatenate([labels[:, None].astype("float32"), teacher], axis=1)
    loss = DistillationLoss(temperature=temperature, kd_lambda=kd_lambda)
    got = float(keras.ops.convert_to_numpy(loss(y_true, student)))
    expected = _numpy_kd_loss(
        labels, teacher.astype("float64"), student.astype("float64"), temperature, kd_lambda
    )
    assert got == pytest.approx(expected, rel=1e-5)
    # A student equal to its teacher pays the label loss alone.
    same = float(keras.ops.convert_to_numpy(loss(y_true, teacher)))
    assert same == pytest.approx(
        _numpy_kd_loss(labels, teacher, teacher, temperature, kd_lambda), rel=1e-5
    )
    # Plain labels (a validation split): the cross-entropy.
    plain = float(keras.ops.convert_to_numpy(loss(labels.astype("int32"), student)))
    assert plain == pytest.approx(_numpy_kd_loss(labels, teacher, student, 1.0, 1.0), rel=1e-5)
    restored = DistillationLoss.from_config(loss.get_config())
    assert (restored.temperature, restored.kd_lambda) == (temperature, kd_lambda)

    accuracy = LabelAccuracy()
    accuracy.update_state(y_true, student)
    expected_accuracy = np.mean(student.argmax(axis=1) == labels)
    assert float(keras.ops.convert_to_numpy(accuracy.result())) == pytest.approx(expected_accuracy)


# --- runs ----------------------------------------------------------------------------------


def _fast_compile():
    return False if keras.backend.backend() == "tensorflow" else "auto"


def _train(model, root, out, split=100, **kwargs):
    return train(
        model,
        data_dir=root,
        split=split,
        epochs=1,
        batch_size=8,
        steps_per_epoch=1,
        out_dir=str(out),
        verbose=0,
        tensorboard=False,
        jit_compile=_fast_compile(),
        **kwargs,
    )


@pytest.fixture(scope="module")
def teachers(tiny_model, tmp_path_factory):
    """Two teacher folders as ``keras-asc train`` leaves them (model.keras, run_config.json
    naming the model and split 25), with differently initialised tiny models: the
    distillation code reads nothing else, and training them would only cost time."""
    folders = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        folder = tmp_path_factory.mktemp(f"teacher{seed}")
        keras_asc.build(tiny_model).save(str(folder / "model.keras"))
        config = {"model": tiny_model, "split": 25, "seed": seed}
        (folder / "run_config.json").write_text(json.dumps(config))
        folders.append(str(folder))
    return folders


def test_targets_follow_their_clips_through_the_shuffle(synthetic_root):
    split = make_dataset(tau22.Split.load(synthetic_root, 100), training=False)
    targets = {
        clip.filename: np.array([clip.label * 10.0, index], np.float32)
        for index, clip in enumerate(split.clips)
    }
    dataset = make_dataset(synthetic_root, 100, batch_size=4, seed=5, clip_targets=targets)
    seen = []
    for _, (labels, rows) in dataset.dataset.as_numpy_iterator():
        np.testing.assert_array_equal(rows[:, 0], labels * 10.0)
        seen.extend(rows[:, 1].astype(int))
    assert sorted(seen) != seen  # shuffled ...
    assert len(set(seen)) == len(seen) == len(split.clips) // 4 * 4  # ... and each clip once


def test_distilled_run(tiny_model, synthetic_root, teachers, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    result = _train(
        tiny_model,
        synthetic_root,
        tmp_path / "student",
        split=25,
        teachers=teachers,
        cache_dir=str(cache),
        overrides={"kd_lambda": 0.5},
    )
    assert np.isfinite(result.history["loss"][0]) and 0 <= result.history["accuracy"][0] <= 1
    config = json.loads((tmp_path / "student" / "run_config.json").read_text())
    assert config["teachers"] == [{"path": t, "model": "tiny_mofle"} for t in teachers]
    split = tau22.Split.load(synthetic_root, 25)
    assert config["split_fingerprint"] == split.fingerprint
    stored = teacher_logits_path(cache, split, config["teachers"])
    assert config["distillation"] == {"temperature": 2.0, "lambda": 0.5, "teacher_logits": stored}
    assert result.recipe.kd_lambda == 0.5 and config["recipe"]["kd_lambda"] == 0.5

    # The stored logits are the mean of the teachers' logits on the clean clips.
    logits = np.load(stored)
    clean = make_dataset(synthetic_root, 25, batch_size=64, training=False)
    waveforms = np.concatenate([w for w, _ in clean.dataset.as_numpy_iterator()])
    models = [load_model(os.path.join(t, "model.keras")) for t in teachers]
    outputs = [keras.ops.convert_to_numpy(m(waveforms, training=False)) for m in models]
    assert logits.shape == (len(clean.clips), 10)
    np.testing.assert_allclose(logits, np.mean(outputs, axis=0), atol=1e-4)
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-2  # the mean of two different teachers

    # A second call with the same teachers reads them back instead of running the teachers.
    capsys.readouterr()
    mtime = os.path.getmtime(stored)
    by_name = teacher_logits(teachers, split, cache_dir=str(cache))
    assert "reused" in capsys.readouterr().out and os.path.getmtime(stored) == mtime
    np.testing.assert_array_equal(by_name[clean.clips[3].filename], logits[3])

    # Continuing the complete run without teachers takes the recorded ones (and overrides),
    # and loads the model without running any teacher; other teachers, or a folder that
    # refuses the run, are refused before the teachers run.
    def no_teacher_pass(*args, **kwargs):
        raise AssertionError("the teachers ran")

    monkeypatch.setattr(distill, "teacher_logits", no_teacher_pass)
    again = _train(tiny_model, synthetic_root, tmp_path / "student", split=25, cache_dir=str(cache))
    assert again.training_model is None and again.recipe.kd_lambda == 0.5
    with pytest.raises(ValueError, match=r"its settings differ \(teachers: run has"):
        _train(tiny_model, synthetic_root, tmp_path / "student", split=25, teachers=teachers[:1])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds files this run did not write"):
        _train(tiny_model, synthetic_root, tmp_path / "busy", split=25, teachers=teachers)


def _unreadable_wav():
    buffer = io.BytesIO()
    signal = np.zeros(1600, np.float32)
    signal[100] = np.nan  # the reader refuses non-finite samples
    soundfile.write(buffer, signal, 16000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def test_distilled_run_skips_an_unreadable_clip_without_cache(
    tiny_model, synthetic_root, teachers, tmp_path
):
    data = shutil.copytree(synthetic_root, tmp_path / "data")
    rows = (data / "split25.csv").read_text().splitlines()[1:]
    bad = rows[0].split("\t")[0]
    (data / bad).write_bytes(_unreadable_wav())

    targets = teacher_logits(teachers, str(data), 25, on_error="skip", verbose=0)
    # Every clip keeps a row, NaN for the unreadable one, which the pipeline drops as it reads.
    assert len(targets) == len(rows) and np.isnan(targets[bad]).all()
    assert all(np.isfinite(row).all() for name, row in targets.items() if name != bad)

    # One full pass (no steps_per_epoch), so the bad clip is met; its NaN row never reaches
    # the loss.
    result = train(
        tiny_model,
        data_dir=str(data),
        split=25,
        epochs=1,
        batch_size=8,
        out_dir=str(tmp_path / "student"),
        verbose=0,
        tensorboard=False,
        jit_compile=_fast_compile(),
        teachers=teachers,
        on_error="skip",
    )
    assert np.isfinite(result.history["loss"][0])
    assert list(result.skipped_clips.errors) == [str(data / bad)]


def test_a_model_compiled_for_distillation_loads_in_a_fresh_process(tmp_path, monkeypatch):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    model.compile(
        optimizer="sgd",
        loss=DistillationLoss(temperature=3.0, kd_lambda=0.1),
        metrics=[LabelAccuracy(name="accuracy")],
    )
    path = str(tmp_path / "kd.keras")
    model.save(path)
    # As in a new process, where nothing has imported the classes yet: Keras does not know
    # them until the loader imports them.
    registered = keras.saving.get_custom_objects()
    for name in ("keras_asc>DistillationLoss", "keras_asc>LabelAccuracy"):
        monkeypatch.delitem(registered, name)
    for module in ("keras_asc.training.distill", "keras_asc.training.losses"):
        monkeypatch.delitem(sys.modules, module)
        monkeypatch.delattr(module)
    loaded = load_model(path)
    assert type(loaded.loss).__name__ == "DistillationLoss"
    assert (loaded.loss.temperature, loaded.loss.kd_lambda) == (3.0, 0.1)
    y_true = np.array([[2.0, 0.5, 1.0, -1.0]], np.float32)
    metrics = loaded.evaluate(np.ones((1, 4), np.float32), y_true, verbose=0, return_dict=True)
    assert set(metrics) == {"loss", "accuracy"} and np.isfinite(metrics["loss"])


def test_teacher_from_another_split_is_refused(
    tiny_model, synthetic_root, teachers, tmp_path, capsys
):
    # A teacher trained on split100 would carry clips outside split25 into the student.
    big = tmp_path / "big"
    big.mkdir()
    (big / "model.keras").write_bytes(open(os.path.join(teachers[0], "model.keras"), "rb").read())
    (big / "run_config.json").write_text(json.dumps({"model": tiny_model, "split": 100}))
    with pytest.raises(
        ValueError,
        match=r"trained on split100, but the student trains on split25: DCASE 2024 Task 1",
    ):
        check_teachers([teachers[0], str(big)], 25)
    with pytest.raises(ValueError, match="trained on split100"):
        _train(tiny_model, synthetic_root, tmp_path / "s25", split=25, teachers=[str(big)])
    assert not (tmp_path / "s25").exists()  # refused before anything was written
    code = main(
        ["train", "--model", tiny_model, "--data", synthetic_root, "--split", "25",
         "--teachers", str(big), "--out", str(tmp_path / "cli")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "trained on split100" in err
    # Teachers on a smaller split are refused as well: the rules tie them to the split.
    with pytest.raises(ValueError, match="trained on split25, but the student trains on split50"):
        check_teachers(teachers, 50)

    # An ensemble folder is checked through its members' runs.
    ensemble_dir = tmp_path / "ensemble"
    build_ensemble(teachers, weights=[0.5, 0.5], out_dir=str(ensemble_dir))
    assert check_teachers([str(ensemble_dir)], 25)[0]["path"] == str(ensemble_dir)
    mixed = tmp_path / "mixed"
    build_ensemble([teachers[0], str(big)], weights=[0.5, 0.5], out_dir=str(mixed))
    with pytest.raises(ValueError, match=r"trained on split100, split25, but"):
        check_teachers([str(mixed)], 25)

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.keras").write_bytes((ensemble_dir / "model.keras").read_bytes())
    with pytest.raises(ValueError, match="has no run_config.json"):
        check_teachers([str(bare)], 25)
