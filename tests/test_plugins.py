"""The plugin system: built-ins through the hooks, runtime plugins, failure modes, kill switch,
and (when the example plugins in plugins/ are installed, as in the tox `plugins` env) discovery
through entry points and reload of saved models in a fresh process."""

import functools
import importlib.metadata
import os
import subprocess
import sys
import textwrap

import keras
import pluggy
import pytest

import keras_asc
from keras_asc import plugins, registry
from keras_asc.logs import KerasAscWarning
from keras_asc.models import AudioClassifier


def _installed(distribution):
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_examples = pytest.mark.skipif(
    not (_installed("keras-asc-timemask") and _installed("keras-asc-tinymobile")),
    reason="example plugins not installed (tox -e plugins installs ./plugins/*)",
)


class _Plugin:
    """A runtime plugin registering one model under a name given at construction."""

    def __init__(self, name, raises=False, channels_multiplier=1.0):
        self.name = name
        self.raises = raises
        self.channels_multiplier = channels_multiplier

    @keras_asc.hookimpl
    def register_models(self, register):
        if self.raises:
            raise RuntimeError("broken plugin")
        builder = functools.partial(AudioClassifier.from_preset, "moflenet57")
        register(self.name, builder, config={"channels_multiplier": self.channels_multiplier, "name": self.name}, description="test")


@pytest.fixture
def runtime_plugin():
    names = []

    def add(plugin, name):
        names.append(plugins.register_plugin(plugin, name=name))
        return name

    yield add
    for name in names:
        plugins.unregister_plugin(name)


def test_builtins_are_registered_through_the_hooks():
    entry = registry.get_model("moflenet57")
    assert entry.plugin == "keras_asc.builtin"
    assert registry.ensembles()["moflenet57_cp_resnet59_v2"].members == {"cp_resnet59": 0.6, "moflenet57": 0.4}
    stages = {name: e.stage for name, e in registry.augmentations().items()}
    assert stages["device_impulse_response"] == "waveform"
    assert stages["time_roll"] == "waveform"
    assert stages["freq_mixstyle"] == "spectrogram"


def test_runtime_plugin_adds_a_buildable_model(runtime_plugin):
    runtime_plugin(_Plugin("small_mofle"), "small-mofle-plugin")
    assert "small_mofle" in keras_asc.list_models()
    model = keras_asc.build("small_mofle", num_classes=3)
    assert tuple(model.output_shape) == (None, 3)
    assert registry.get_model("small_mofle").plugin == "small-mofle-plugin"


def test_plugin_that_raises_is_reported_and_the_rest_still_load(runtime_plugin):
    runtime_plugin(_Plugin("never", raises=True), "broken-plugin")
    with pytest.warns(KerasAscWarning, match="broken-plugin.*RuntimeError: broken plugin"):
        names = keras_asc.list_models()
    assert "moflenet57" in names and "never" not in names


def test_a_plugin_claiming_a_built_in_name_is_reported_and_the_built_in_kept(runtime_plugin):
    built_in = keras_asc.build("moflenet57").count_params()
    runtime_plugin(_Plugin("moflenet57", channels_multiplier=2.0), "impostor-plugin")
    with pytest.warns(KerasAscWarning, match="keras_asc.builtin.*impostor-plugin.*built-in one"):
        names = keras_asc.list_models()
    assert "moflenet57" in names and "cp_resnet59" in names
    assert registry.get_model("moflenet57").plugin == "keras_asc.builtin"
    assert keras_asc.build("moflenet57").count_params() == built_in  # not the impostor's


def test_two_plugins_claiming_one_name_leave_it_to_neither_and_the_rest_usable(runtime_plugin):
    runtime_plugin(_Plugin("twin_name"), "first-plugin")
    runtime_plugin(_Plugin("twin_name"), "second-plugin")
    with pytest.warns(KerasAscWarning, match="'twin_name'.*first-plugin.*second-plugin"):
        names = keras_asc.list_models()
    assert "twin_name" not in names and "moflenet57" in names
    with pytest.raises(registry.PluginConflictError, match="'twin_name'.*first-plugin.*second"):
        keras_asc.build("twin_name")


def test_misspelt_hook_fails_loudly():
    class Misspelt:
        @keras_asc.hookimpl
        def register_model(self, register):  # the hook is register_models
            pass

    with pytest.raises(pluggy.PluginValidationError, match="register_model"):
        plugins.register_plugin(Misspelt(), name="misspelt")
    plugins.pm.unregister(name="misspelt")
    registry.reset()


def test_bad_registrations_name_what_was_expected(runtime_plugin):
    class BadStage:
        @keras_asc.hookimpl
        def register_augmentations(self, register):
            register("odd", object, stage="cepstrum")

    runtime_plugin(BadStage(), "bad-stage")
    with pytest.warns(KerasAscWarning, match="stage must be one of \\('waveform', 'spectrogram'\\)"):
        assert "odd" not in keras_asc.list_augmentations()


def _run(code, **env):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result


@needs_examples
def test_entry_point_plugins_are_discovered_and_the_kill_switch_narrows_them():
    code = "import keras_asc; print(sorted(keras_asc.list_models())); print(keras_asc.list_augmentations())"
    everything = _run(code)
    assert everything.returncode == 0, everything.stderr
    assert "tiny_mobile" in everything.stdout and "time_mask" in everything.stdout
    assert "moflenet57_cp_resnet59_tiny" in everything.stdout

    none = _run(code, KERAS_ASC_PLUGINS="")
    assert none.returncode == 0, none.stderr
    assert "tiny_mobile" not in none.stdout and "time_mask" not in none.stdout
    assert "moflenet57" in none.stdout  # built-ins always load

    only = _run(code, KERAS_ASC_PLUGINS="timemask")
    assert "time_mask" in only.stdout and "tiny_mobile" not in only.stdout

    by_distribution = _run(code, KERAS_ASC_PLUGINS="keras-asc-tinymobile")
    assert "tiny_mobile" in by_distribution.stdout and "time_mask" not in by_distribution.stdout


@needs_examples
def test_models_saved_with_plugin_layers_reload_in_a_fresh_process(tmp_path):
    from keras_asc_timemask import TimeMasking

    # Training never saves augmentations in a model, but a user's own model may hold a plugin layer.
    model = keras.Sequential([keras.Input((256, 64, 1)), TimeMasking(seed=0)])
    path = tmp_path / "masked.keras"
    model.save(path)
    code = f"""
    import keras_asc
    model = keras_asc.load_model({str(path)!r})
    print(type(model.layers[0]).__module__)
    """
    fresh = _run(code)
    assert fresh.returncode == 0, fresh.stderr
    assert "keras_asc_timemask" in fresh.stdout
    blocked = _run(code, KERAS_ASC_PLUGINS="")
    assert blocked.returncode != 0
    assert "TimeMasking" in blocked.stderr
