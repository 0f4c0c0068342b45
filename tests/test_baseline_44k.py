"""An imported DCASE 2024 baseline checkpoint decides as the PyTorch model does on 44.1 kHz
audio: keras-asc resamples with the baseline's resampler (torchaudio's default, ``sinc_hann``).

The PyTorch side is ``benchmarks/torch_reference.py`` (the baseline network and its torchaudio
front-end) fed the recordings resampled by ``sinc_hann``, which equals torchaudio's
``Resample`` within 1.2e-7 on its own outputs (``tests/test_resample.py``; torchaudio itself
does not import here). The keras-asc side is the command line on the 44.1 kHz files:
``import-torch``, ``predict --json`` and ``evaluate``.
"""

import importlib.util
import json
import pathlib

import numpy as np
import pytest
import soundfile

torch = pytest.importorskip("torch")

from keras_asc.cli import main  # noqa: E402
from keras_asc.data import resampling, tau22  # noqa: E402

REFERENCE_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "torch_reference.py"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, synthetic_root):
    """``(torch waveform model, imported .keras path)``: random weights (seed 11) whose
    BatchNorm statistics are those of the synthetic test clips, so that the decisions vary
    from clip to clip (with random statistics every clip gets the same class)."""
    spec = importlib.util.spec_from_file_location("keras_asc_torch_reference", REFERENCE_PATH)
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    torch.manual_seed(11)
    module, _ = reference.build_reference("dcase24_baseline", waveform=True)
    clips = tau22.load_split(synthetic_root, "test")
    waveforms = np.stack(
        [_resampled(pathlib.Path(synthetic_root) / clip.filename)[:32000] for clip in clips]
    )
    for sub in module.modules():
        if isinstance(sub, torch.nn.BatchNorm2d):
            sub.momentum = None  # a cumulative average over the one batch
            sub.reset_running_stats()
    module.train()
    with torch.no_grad():
        module(torch.from_numpy(waveforms.astype(np.float32)))
    module.eval()
    folder = tmp_path_factory.mktemp("baseline")
    checkpoint = folder / "last.ckpt"
    state = {f"model.{key}": value for key, value in module.network.state_dict().items()}
    torch.save({"epoch": 149, "state_dict": state}, checkpoint)
    out = folder / "baseline.keras"
    assert main(["import-torch", "dcase24_baseline", str(checkpoint), "--out", str(out)]) == 0
    return module, str(out)


def _resampled(path, resampler="sinc_hann"):
    samples, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    return resampling.resample(samples.mean(axis=1), rate, 32000, method=resampler)


def _torch_probabilities(module, paths, resampler):
    """Softmax of the PyTorch front-end and network on 1-s files, one batch."""
    windows = np.zeros((len(paths), 32000), np.float32)
    for row, path in enumerate(paths):
        waveform = _resampled(path, resampler)[:32000]
        windows[row, : len(waveform)] = waveform
    with torch.no_grad():
        logits = module(torch.from_numpy(windows)).numpy().astype(np.float64)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def _keras_predictions(model_path, paths, capsys):
    assert main(["predict", model_path, *map(str, paths), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    entries = out if isinstance(out, list) else out.get("predictions", out)
    return {entry["path"]: entry for entry in entries}


def _probabilities(entry):
    probabilities = entry["probabilities"]
    if isinstance(probabilities, dict):
        return np.array([probabilities[name] for name in tau22.SCENE_LABELS])
    return np.array([p["probability"] if isinstance(p, dict) else p for p in probabilities])


def _compare(baseline, paths, capsys):
    """``(keras classes, torch classes, |p difference| per clip, polyphase's per clip)``."""
    module, model_path = baseline
    predictions = _keras_predictions(model_path, paths, capsys)
    keras_probabilities = np.stack([_probabilities(predictions[str(path)]) for path in paths])
    expected = _torch_probabilities(module, paths, "sinc_hann")
    before = _torch_probabilities(module, paths, "polyphase")
    return (
        keras_probabilities.argmax(axis=1).tolist(),
        expected.argmax(axis=1).tolist(),
        np.abs(keras_probabilities - expected).max(axis=1),
        np.abs(before - expected).max(axis=1),
    )


def test_imported_baseline_gives_the_torch_class_on_every_synthetic_44k_clip(
    baseline, synthetic_root, capsys
):
    clips = tau22.load_split(synthetic_root, "test")
    paths = [pathlib.Path(synthetic_root) / clip.filename for clip in clips]
    assert soundfile.info(str(paths[0])).samplerate == 44100
    keras_classes, torch_classes, gaps, before = _compare(baseline, paths, capsys)
    assert keras_classes == torch_classes
    assert len(set(torch_classes)) >= 5  # the check is not one constant answer
    # Probabilities agree to float32 rounding; the resampler keras-asc used before moved them
    # by far more.
    assert gaps.max() <= 1e-4, gaps.max()
    assert before.max() > 10 * gaps.max()

    # evaluate reads the same clips through the pipeline: its confusion matrix is the torch
    # model's decisions against the labels.
    from keras_asc.training.evaluation import evaluate  # noqa: PLC0415

    result = evaluate(baseline[1], synthetic_root, "test", verbose=False)
    expected = np.zeros((10, 10), np.int64)
    for clip, predicted in zip(clips, torch_classes, strict=True):
        expected[tau22.SCENE_LABELS.index(clip.scene_label), predicted] += 1
    np.testing.assert_array_equal(np.asarray(result.confusion_matrix), expected)


def test_imported_baseline_gives_the_torch_class_on_real_recordings(
    baseline, shared_data, tmp_path, capsys
):
    # The two real 44.1 kHz recordings cut into 1-s clips (mono mean), 20 clips in all.
    paths = []
    for name in ("metro_station-paris.wav", "acoustic_scene.wav"):
        samples, rate = soundfile.read(str(shared_data / "audio" / name), always_2d=True)
        for index in range(10):
            path = tmp_path / f"{name[:-4]}-{index}.wav"
            piece = samples[index * rate : (index + 1) * rate].mean(axis=1)
            soundfile.write(str(path), piece, rate, subtype="FLOAT")
            paths.append(path)
    keras_classes, torch_classes, gaps, before = _compare(baseline, paths, capsys)
    assert keras_classes == torch_classes
    assert gaps.max() <= 1e-4, gaps.max()
    print(
        f"real clips: max |p keras - p torch| {gaps.max():.2e} (sinc_hann); "
        f"polyphase would move p by up to {before.max():.2e}"
    )
