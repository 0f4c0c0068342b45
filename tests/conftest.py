"""Shared fixtures. Tests select the Keras backend through KERAS_BACKEND (tox sets it)."""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    import keras

    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"needs the TensorFlow backend; running on {keras.backend.backend()}")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data():
    """``../shared/data`` beside the project root; tests that use it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data fixtures not found at {SHARED_DATA} (a fresh clone has no ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def tiny_model():
    """A tiny MofleNet registered through a plugin as ``"tiny_mofle"``, for fast training tests."""
    from helpers import TinyMofle

    from keras_asc import plugins

    name = plugins.register_plugin(TinyMofle(), name="tiny-mofle-tests")
    yield "tiny_mofle"
    plugins.unregister_plugin(name)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    """A small synthetic TAU22 tree: 20 clips per class in split 100, 9 per class in test."""
    from keras_asc.data.synthetic import make_synthetic_tau22

    return make_synthetic_tau22(
        str(tmp_path_factory.mktemp("tau22") / "synth"),
        clips_per_class=20,
        test_clips_per_class=9,
        seed=0,
    )


@pytest.fixture
def backend():
    import keras

    return keras.backend.backend()
