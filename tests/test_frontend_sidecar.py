"""The int8 front-end sidecar (NAME.frontend.npz): resampler recorded, content digest verified,
constants checked when loaded, every fault blamed on the sidecar; and the front-ends stay
finite on the loudest audio the decoder accepts."""

import io
import json
import zipfile

import numpy as np
import pytest

from keras_asc.cli import main
from keras_asc.data import audio
from keras_asc.layers.frontend import DCASE24_BASELINE_FRONTEND, LogMelSpectrogram
from keras_asc.quantization.frontend import (
    FrontendFileError,
    content_digest,
    frontend_numpy,
    frontend_params,
    load_frontend_params,
    save_frontend_params,
)


def _arrays(path):
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def _rewrite(path, arrays, digest=True):
    arrays = dict(arrays)
    if digest:
        arrays["sha256"] = np.array(content_digest(arrays))
    np.savez_compressed(path, **arrays)


@pytest.fixture
def sidecar(tmp_path):
    path = str(tmp_path / "m.frontend.npz")
    save_frontend_params(path, [frontend_params(LogMelSpectrogram(**DCASE24_BASELINE_FRONTEND))])
    return path


def test_sidecar_round_trip_records_the_resampler_and_a_digest(sidecar):
    arrays = _arrays(sidecar)
    assert str(arrays["sha256"]) == content_digest(arrays) and len(str(arrays["sha256"])) == 64
    (params,) = load_frontend_params(sidecar)
    assert params["resampler"] == "sinc_hann" and params["format"] == "keras_asc.logmel/3"
    assert json.loads(str(arrays["constants"]))[0]["resampler"] == "sinc_hann"


def test_changed_content_fails_the_digest(sidecar):
    arrays = _arrays(sidecar)
    arrays["input0_mel_filter_bank"] = arrays["input0_mel_filter_bank"] * 1.001
    _rewrite(sidecar, arrays, digest=False)
    with pytest.raises(FrontendFileError) as caught:
        load_frontend_params(sidecar)
    assert str(caught.value).startswith(f"{sidecar}: content digest mismatch: the file records ")
    assert "(changed after export); re-export the model" in str(caught.value)


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (
            lambda a: a.__setitem__("input0_mel_filter_bank", a["input0_mel_filter_bank"] * np.nan),
            "input 0: mel_filter_bank holds non-finite values (NaN or Inf)",
        ),
        (
            lambda a: a.__setitem__("input0_window", np.full_like(a["input0_window"], np.inf)),
            "input 0: window holds non-finite values",
        ),
        (
            lambda a: a.__setitem__("input0_window", a["input0_window"][:100]),
            "input 0: window has shape (100,); expected (4096,)",
        ),
        (
            lambda a: a.__setitem__(
                "input0_mel_band_start", a["input0_mel_band_start"][::-1].copy()
            ),
            "mel bands are not in ascending frequency order",
        ),
        (
            lambda a: a.__setitem__(
                "constants",
                np.array(json.dumps([{**json.loads(str(a["constants"]))[0], "log_offset": -1}])),
            ),
            "input 0: log_offset must be > 0. Received: -1",
        ),
        (
            lambda a: a.__setitem__(
                "constants",
                np.array(json.dumps([{**json.loads(str(a["constants"]))[0], "resampler": "x"}])),
            ),
            "input 0: resampler must be one of 'sinc_hann', 'soxr_hq', 'polyphase'",
        ),
    ],
    ids=["nan-bank", "inf-window", "short-window", "band-order", "log-offset", "resampler"],
)
def test_bad_constants_are_refused_even_with_a_matching_digest(sidecar, damage, fragment):
    arrays = _arrays(sidecar)
    damage(arrays)
    _rewrite(sidecar, arrays)  # a consistent digest: the constants themselves are checked
    with pytest.raises(FrontendFileError) as caught:
        load_frontend_params(sidecar)
    assert str(caught.value).startswith(f"{sidecar}: ")
    assert fragment in str(caught.value), str(caught.value)


def test_not_an_npz_is_blamed_on_the_sidecar_not_pickles(tmp_path):
    for name, content in (
        ("text", b"garbage"),
        ("npy", _npy_bytes()),
        ("pickled", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01."),
    ):
        path = tmp_path / f"{name}.frontend.npz"
        path.write_bytes(content)
        with pytest.raises(FrontendFileError) as caught:
            load_frontend_params(str(path))
        message = str(caught.value)
        assert message == (
            f"{path}: unreadable front-end constants: not a NumPy .npz archive (a zip file) as "
            "keras-asc exports write; re-export the model"
        )
        assert "pickled data" not in message


def test_a_zip_without_the_constants_is_named(tmp_path):
    path = tmp_path / "empty.frontend.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("other.txt", "x")
    with pytest.raises(FrontendFileError, match=r"empty\.frontend\.npz: unreadable front-end "):
        load_frontend_params(str(path))


def _npy_bytes():
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    return buffer.getvalue()


def test_version_2_sidecars_still_load_with_the_default_resampler(tmp_path):
    params = frontend_params(LogMelSpectrogram(hop_length=750))
    arrays = {
        "input0_window": params["window"],
        "input0_mel_filter_bank": params["mel_filter_bank"],
        "input0_mel_band_start": params["mel_band_start"],
        "input0_mel_band_length": params["mel_band_length"],
        "input0_mel_band_weights": params["mel_band_weights"],
    }
    scalars = {k: v for k, v in params.items() if k not in arrays and not k.startswith("mel_")}
    scalars.pop("window", None)
    scalars.pop("resampler")
    scalars["format"] = "keras_asc.logmel/2"
    arrays["constants"] = np.array(json.dumps([scalars]))
    path = str(tmp_path / "v2.npz")
    np.savez_compressed(path, **arrays)
    (loaded,) = load_frontend_params(path)
    assert loaded["resampler"] == "soxr_hq"


# --- the loudest accepted audio -------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["moflenet", "baseline"])
def test_front_ends_stay_finite_at_the_accepted_peak(preset):
    import keras  # noqa: PLC0415

    config = dict(DCASE24_BASELINE_FRONTEND) if preset == "baseline" else {"hop_length": 500}
    layer = LogMelSpectrogram(**config)
    params = frontend_params(layer)
    # The most energy a clip within the bound can hold: a full-scale-16 square wave at the
    # Nyquist rate (alternating +-16), and a constant 16.
    peak = audio.MAX_PEAK
    loud = np.stack([peak * (-1.0) ** np.arange(32000), np.full(32000, peak)]).astype("float32")
    numpy_out = frontend_numpy(loud, params)
    keras_out = keras.ops.convert_to_numpy(layer(loud, training=False))
    for out in (numpy_out, keras_out):
        assert np.isfinite(out).all() and np.abs(out).max() < 100
    # The constant clip's pre-emphasised power sits near the log floor, where the float32 FFTs
    # of the backends differ: 2e-3 on TensorFlow, up to 0.06 on PyTorch.
    atol = 2e-3 if keras.backend.backend() == "tensorflow" else 0.1
    np.testing.assert_allclose(numpy_out, keras_out, atol=atol)


# --- through the command line -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory):
    import tensorflow as tf  # noqa: PLC0415

    from keras_asc.quantization.export import EXPORT_FORMAT  # noqa: PLC0415

    folder = tmp_path_factory.mktemp("tflite")

    @tf.function(input_signature=[tf.TensorSpec([1, 256, 64, 1], tf.float32)])
    def model(x):
        pooled = tf.reduce_mean(x, axis=[1, 2])
        return tf.concat([pooled * float(i) for i in range(10)], axis=-1)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [model.get_concrete_function()], model
    )
    (folder / "tiny.tflite").write_bytes(converter.convert())
    save_frontend_params(str(folder / "tiny.frontend.npz"), [frontend_params(LogMelSpectrogram())])
    (folder / "tiny.json").write_text(
        json.dumps(
            {
                "format": EXPORT_FORMAT,
                "model": "tiny",
                "num_samples": 32000,
                "inputs": [{"name": "x", "model_input": 0}],
            }
        )
    )
    return folder


def _wav(tmp_path):
    from keras_asc.data.synthetic import write_wav  # noqa: PLC0415

    return write_wav(tmp_path / "clip.wav", np.zeros(32000), 32000)


def test_predict_blames_a_nan_sidecar_on_the_sidecar(tiny_tflite, tmp_path, capsys):
    target = tmp_path / "m"
    target.mkdir()
    for name in ("tiny.tflite", "tiny.json"):
        (target / name).write_bytes((tiny_tflite / name).read_bytes())
    arrays = _arrays(tiny_tflite / "tiny.frontend.npz")
    arrays["input0_mel_band_weights"] = arrays["input0_mel_band_weights"] * np.nan
    _rewrite(target / "tiny.frontend.npz", arrays)
    clip = _wav(tmp_path)
    assert main(["predict", str(target / "tiny.tflite"), clip]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{target / 'tiny.frontend.npz'}: input 0: mel_band_weights holds non-finite" in err[0]
    assert "clip.wav" not in err[0]
