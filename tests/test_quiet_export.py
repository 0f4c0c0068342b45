"""What an int8 export prints and writes: no TensorFlow/LiteRT noise, the tflite-micro hint
once in one line, and files that follow the umask. TensorFlow only."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow_only

pytest.importorskip("tensorflow")

_SCRIPT = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    sys.path.insert(0, {tests!r})
    from helpers import TINY_MOFLE_CONFIG, randomize_state
    from keras_asc.models import AudioClassifier
    from keras_asc.quantization import TFLiteClassifier, export_int8, micro, to_tf_keras

    micro.micro_available = lambda: False  # as on an install without the micro extra
    keras.utils.set_random_seed(0)
    model = AudioClassifier.from_preset("moflenet57", **TINY_MOFLE_CONFIG, name="tiny")
    randomize_state(model, 0)
    twin = to_tf_keras(model)
    waveforms = np.random.default_rng(0).normal(0, 0.1, (4, 32000)).astype("float32")
    for name in ("a", "b"):  # post-training quantisation (calibration), twice
        export_int8(twin, [waveforms], {out!r} + f"/{{name}}.tflite", max_calibration_samples=4)
    # Running the file: LiteRT applies (and announces) its XNNPACK delegate here.
    print(TFLiteClassifier({out!r} + "/a.tflite").predict(waveforms[:2]).shape)
    print("exported")
    """
)


def test_ptq_export_and_litert_run_print_one_hint_and_no_tensorflow_noise(tmp_path):
    script = _SCRIPT.format(tests=os.path.dirname(__file__), out=str(tmp_path))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    env.pop("KERAS_ASC_DEBUG", None)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("exported")
    stderr = done.stderr
    for noise in ("fully_quantize", "XNNPACK", "is deprecated", "inference_type"):
        assert noise not in stderr, stderr[-2000:]
    hints = [line for line in stderr.splitlines() if "tflite-micro is not installed" in line]
    assert len(hints) == 1, stderr[-2000:]
    (hint,) = hints
    assert hint.startswith("keras-asc: ")
    assert 'pip install "keras-asc[micro]"' in hint and 'pip install ".[micro]"' in hint
    assert ".py:" not in stderr  # no warning with a source line
    for name in ("a", "b"):
        assert (tmp_path / f"{name}.tflite").is_file()


def test_int8_exports_follow_the_umask(tmp_path):
    import keras
    from helpers import TINY_MOFLE_CONFIG, randomize_state

    from keras_asc.models import AudioClassifier
    from keras_asc.quantization import export_int8, to_tf_keras

    keras.utils.set_random_seed(0)
    model = AudioClassifier.from_preset("moflenet57", **TINY_MOFLE_CONFIG, name="tiny")
    randomize_state(model, 0)
    waveforms = np.random.default_rng(0).normal(0, 0.1, (4, 32000)).astype("float32")
    previous = os.umask(0o027)
    try:
        result = export_int8(
            to_tf_keras(model), [waveforms], tmp_path / "t.tflite", micro=False,
            max_calibration_samples=4,
        )
    finally:
        os.umask(previous)
    for path in (result.path, result.json_path, result.frontend_path):
        assert os.stat(path).st_mode & 0o777 == 0o640, path
