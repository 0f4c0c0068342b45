"""Loading PyTorch state dicts into keras-asc presets (keras_asc.models.torch_weights).

The torch side is ``benchmarks/torch_reference.py``; the DCASE 2024 baseline and CP-JKU
CP-ResNet layouts are made by renaming its keys, so every layout is checked on logits.
"""

import importlib.util
import pathlib
import re
import sys

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import keras_asc  # noqa: E402
from keras_asc.layers import leaf_layers  # noqa: E402
from keras_asc.models.torch_weights import (  # noqa: E402
    LAYOUTS,
    TorchWeightsReport,
    load_torch_weights,
)

REFERENCE_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "torch_reference.py"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location("keras_asc_torch_reference", REFERENCE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def keras_model():
    """One spectrogram-input Keras model per preset for the whole module: every strict load
    overwrites all its weights, and reusing it spares the JAX backend a compile per test."""
    models = {}

    def get(preset):
        if preset not in models:
            models[preset] = keras_asc.build(preset).backbone
        return models[preset]

    return get


def build_torch(reference, preset, seed=0, waveform=False):
    """The torch reference with random BN affine parameters, running statistics and GRN scalars."""
    torch.manual_seed(seed)
    module, shape = reference.build_reference(preset, waveform=waveform)
    generator = torch.Generator().manual_seed(seed)

    def uniform(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=generator)

    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, torch.nn.BatchNorm2d):
                channels = sub.num_features
                sub.weight.copy_(uniform(channels, 0.5, 1.5))
                sub.bias.copy_(0.1 * torch.randn(channels, generator=generator))
                sub.running_mean.copy_(0.1 * torch.randn(channels, generator=generator))
                sub.running_var.copy_(uniform(channels, 0.5, 2.0))
                sub.num_batches_tracked.fill_(7)
            elif isinstance(sub, reference.GRN):
                sub.gamma.copy_(uniform((), 0.2, 0.6))
                sub.beta.copy_(uniform((), -0.1, 0.1))
    return module.eval(), shape


def spectrograms(shape, seed=1, batch=2):
    """(torch NCHW, Keras NHWC) copies of one random log-mel batch."""
    x = np.random.default_rng(seed).normal(0, 1, (batch, *shape)).astype("float32")
    return torch.from_numpy(x), np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def max_logit_difference(module, model, shape):
    torch_x, keras_x = spectrograms(shape)
    with torch.no_grad():
        expected = module(torch_x).numpy()
    logits = keras.ops.convert_to_numpy(model(keras_x, training=False))
    return float(np.max(np.abs(np.asarray(logits) - expected)))


def keras_weights(model):
    return [np.array(keras.ops.convert_to_numpy(w)) for w in model.weights]


def rename(state_dict, rules):
    """Apply the first matching (regex, replacement) of ``rules`` to every key."""
    renamed = {}
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            new_key, count = re.subn(pattern, replacement, key)
            if count:
                renamed[new_key] = value
                break
        else:
            raise AssertionError(f"no renaming rule for {key}")
    return renamed


# torch_reference MobileNetwork keys -> DCASE 2024 Task 1 baseline keys.
DCASE_BASELINE_RULES = [
    (r"^stem([12])\.conv\.", lambda m: f"in_c.{int(m.group(1)) - 1}.0."),
    (r"^stem([12])\.bn\.", lambda m: f"in_c.{int(m.group(1)) - 1}.1."),
    (
        r"^blocks\.stage(\d+)_block(\d+)\.(expand|depthwise|project)\.(conv|bn)\.",
        lambda m: (
            f"stages.s{m.group(1)}.b{m.group(2)}.block."
            f"{('expand', 'depthwise', 'project').index(m.group(3))}."
            f"{0 if m.group(4) == 'conv' else 1}."
        ),
    ),
    (r"^head\.conv\.", "feed_forward.0."),
    (r"^head\.bn\.", "feed_forward.1."),
]
# torch_reference CPResNet59 keys -> CP-JKU CP-ResNet keys.
CPJKU_RESNET_RULES = [
    (r"^stem\.conv\.", "in_c.0."),
    (r"^stem\.bn\.", "in_c.1."),
    (r"^(stage\d+)_(block\d+)\.conv([12])\.conv\.", r"\1.\2.conv\3."),
    (r"^(stage\d+)_(block\d+)\.conv([12])\.bn\.", r"\1.\2.bn\3."),
    (r"^(stage\d+)_(block\d+)\.shortcut\.", r"\1.\2.shortcut."),
    (r"^head\.conv\.", "feed_forward.0."),
    (r"^head\.bn\.", "feed_forward.1."),
]


@pytest.mark.parametrize("preset", ["moflenet57", "cp_resnet59", "dcase24_baseline"])
def test_reference_state_dict_file_gives_same_logits(reference, keras_model, preset, tmp_path):
    module, shape = build_torch(reference, preset)
    path = tmp_path / f"{preset}.pt"
    torch.save(module.state_dict(), path)
    model = keras_model(preset)

    report = load_torch_weights(model, path)

    assert isinstance(report, TorchWeightsReport)
    assert (report.layout, report.prefix) == ("torch_reference", "")
    assert len(report.mapped) == len(model.weights)
    assert {path for _, path in report.mapped} == {
        f"{layer.name}/{w.name}" for layer in leaf_layers(model) for w in layer.weights
    }
    assert all(key.endswith("num_batches_tracked") for key in report.ignored)
    difference = max_logit_difference(module, model, shape)
    print(f"{preset}: max |logit difference| {difference:.2e}")
    assert difference <= TOLERANCE


def test_waveform_model_and_network_prefix(reference, keras_model):
    module, _ = build_torch(reference, "moflenet57", waveform=True)
    spectrogram_model = keras_model("moflenet57")
    waveform_model = keras_asc.build("moflenet57")

    load_torch_weights(spectrogram_model, module.network.state_dict())
    report = load_torch_weights(waveform_model, module.state_dict())

    assert report.prefix == "network."
    assert report.mapped[0] == ("network.stem1.conv.weight", "moflenet57_stem1_conv/kernel")
    by_path = {w.path: w for w in waveform_model.weights}
    for weight in spectrogram_model.weights:
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(by_path[weight.path]), keras.ops.convert_to_numpy(weight)
        )


def test_lightning_checkpoint_dict(reference, keras_model, tmp_path):
    module, shape = build_torch(reference, "dcase24_baseline", seed=2)
    checkpoint = {
        "epoch": 3,
        "state_dict": {
            **{f"model.{key}": value for key, value in module.state_dict().items()},
            "mel.1.spectrogram.window": torch.hann_window(800),
            "mel.1.mel_scale.fb": torch.rand(513, 256),
        },
    }
    path = tmp_path / "epoch=3.ckpt"
    torch.save(checkpoint, path)
    model = keras_model("dcase24_baseline")

    report = load_torch_weights(model, str(path))

    assert report.prefix == "model."
    assert "mel.1.mel_scale.fb" in report.ignored
    assert max_logit_difference(module, model, shape) <= TOLERANCE


def test_dcase2024_baseline_layout(reference, keras_model, tmp_path):
    module, shape = build_torch(reference, "dcase24_baseline", seed=3)
    baseline = rename(module.state_dict(), DCASE_BASELINE_RULES)
    assert "stages.s2.b4.block.1.0.weight" in baseline  # the depthwise conv of block 4
    checkpoint = {
        "state_dict": {
            **{f"model.{key}": value for key, value in baseline.items()},
            "mel.0.kernel": torch.zeros(3),
        },
        "epoch": 3,
    }
    path = tmp_path / "baseline.ckpt"
    torch.save(checkpoint, path)
    model = keras_model("dcase24_baseline")

    report = load_torch_weights(model, path)

    assert (report.layout, report.prefix) == ("dcase2024_baseline", "model.")
    assert ("model.in_c.1.0.weight", "dcase24_baseline_stem2_conv/kernel") in report.mapped
    difference = max_logit_difference(module, model, shape)
    print(f"dcase2024_baseline layout: max |logit difference| {difference:.2e}")
    assert difference <= TOLERANCE


def test_cpjku_cp_resnet_layout(reference, keras_model):
    module, shape = build_torch(reference, "cp_resnet59", seed=4)
    cpjku = rename(module.state_dict(), CPJKU_RESNET_RULES)
    assert "stage2.block1.shortcut.conv.weight" in cpjku
    model = keras_model("cp_resnet59")

    report = load_torch_weights(model, cpjku)

    assert report.layout == "cpjku_cp_resnet"
    assert (
        "stage2.block1.bn2.running_var",
        "cp_resnet59_stage2_block1_conv2_bn/moving_variance",
    ) in (report.mapped)
    difference = max_logit_difference(module, model, shape)
    print(f"cpjku_cp_resnet layout: max |logit difference| {difference:.2e}")
    assert difference <= TOLERANCE

    cpjku["stage3.block2.conv1.weight"] = torch.zeros(26, 26, 3, 3)
    with pytest.raises(ValueError, match="5 CP-ResNet blocks"):
        load_torch_weights(model, cpjku)


@pytest.fixture(scope="module")
def baseline_state(reference):
    module, _ = build_torch(reference, "dcase24_baseline", seed=5)
    return dict(module.state_dict())


@pytest.fixture(scope="module")
def baseline_model(keras_model):
    return keras_model("dcase24_baseline")


def test_missing_key(baseline_state, baseline_model):
    state = dict(baseline_state)
    del state["head.bn.running_var"]
    with pytest.raises(ValueError, match=re.escape("head.bn.running_var")) as info:
        load_torch_weights(baseline_model, state)
    assert "dcase24_baseline_head_bn/moving_variance" in str(info.value)
    assert "\n" not in str(info.value)


def test_extra_key(baseline_state, baseline_model):
    state = {**baseline_state, "head.conv.bias": torch.zeros(10)}
    with pytest.raises(ValueError, match=re.escape("head.conv.bias")) as info:
        load_torch_weights(baseline_model, state)
    assert "no Keras counterpart" in str(info.value)
    assert "\n" not in str(info.value)


def test_wrong_shape_leaves_model_unchanged(baseline_state, baseline_model):
    before = keras_weights(baseline_model)
    state = {
        **baseline_state,
        "blocks.stage1_block2.project.conv.weight": torch.zeros(32, 60, 1, 1),
    }
    with pytest.raises(ValueError) as info:
        load_torch_weights(baseline_model, state)
    message = str(info.value)
    assert "blocks.stage1_block2.project.conv.weight" in message
    assert "dcase24_baseline_stage1_block2_project_conv" in message
    assert "(32, 60, 1, 1)" in message and "(1, 1, 64, 32)" in message
    assert "\n" not in message
    for old, new in zip(before, keras_weights(baseline_model), strict=True):
        np.testing.assert_array_equal(old, new)


def test_not_strict_reports_and_skips(baseline_state, baseline_model):
    state = {**baseline_state, "head.conv.bias": torch.zeros(10)}
    del state["head.bn.weight"]
    report = load_torch_weights(baseline_model, state, strict=False)
    assert report.unexpected == ("head.conv.bias",)
    assert report.missing == ("dcase24_baseline_head_bn/gamma",)
    assert len(report.mapped) == len(baseline_model.weights) - 1
    assert "1 Keras weights left unchanged" in str(report)


def test_numpy_mapping(baseline_state, baseline_model):
    state = {key: value.numpy() for key, value in baseline_state.items()}
    report = load_torch_weights(baseline_model, state, layout="torch_reference")
    assert len(report.mapped) == len(baseline_model.weights)


def test_not_a_torch_file(baseline_model, tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"this is not a torch file\n" * 10)
    with pytest.raises(ValueError) as info:
        load_torch_weights(baseline_model, path)
    message = str(info.value)
    assert str(path) in message
    assert "safely" in message and 'torch.save(ckpt["state_dict"]' in message
    assert "\n" not in message


def test_pickled_objects_are_refused(baseline_model, tmp_path):
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": pathlib.PurePosixPath("x")}, path)
    with pytest.raises(ValueError, match="Could not read") as info:
        load_torch_weights(baseline_model, path)
    message = str(info.value)
    assert str(path) in message and "pathlib.PurePosixPath" in message and "\n" not in message


def test_layout_errors(baseline_state, baseline_model):
    with pytest.raises(ValueError, match="Accepted layouts") as info:
        load_torch_weights(baseline_model, baseline_state, layout="timm")
    for name in LAYOUTS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="Could not detect the layout"):
        load_torch_weights(baseline_model, {"encoder.weight": np.zeros(3)})
    with pytest.raises(ValueError, match="no key like"):
        load_torch_weights(baseline_model, baseline_state, layout="dcase2024_baseline")


def test_missing_torch_names_the_extra(baseline_model, tmp_path, monkeypatch):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=re.escape('pip install "keras-asc[torch]"')):
        load_torch_weights(baseline_model, path)


def test_import_torch_command_writes_a_model_that_evaluates_alike(reference, tmp_path, capsys):
    from keras_asc import cli

    module, shape = build_torch(reference, "dcase24_baseline", seed=5)
    weights = tmp_path / "baseline.pt"
    torch.save(rename(module.state_dict(), DCASE_BASELINE_RULES), weights)
    out = tmp_path / "baseline.keras"

    assert cli.main(["import-torch", "dcase24_baseline", str(weights), "--out", str(out)]) == 0
    assert "dcase2024_baseline layout" in capsys.readouterr().out

    model = keras_asc.load_model(str(out))
    network = keras_asc.build("dcase24_baseline").backbone
    network.set_weights(model.get_weights())  # the front-end has no weights
    assert max_logit_difference(module, network, shape) <= TOLERANCE

    assert cli.main(["import-torch", "dcase24_baseline", str(tmp_path / "absent.pt"), "--out", str(out)]) == 2
    assert cli.main(["import-torch", "cp_resnet59", str(weights), "--out", str(tmp_path / "r.keras")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("keras-asc import-torch: error:") for line in errors)
    assert not (tmp_path / "r.keras").exists()
