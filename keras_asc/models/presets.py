"""Model presets as plain data: backbone class and arguments, front-end arguments, waveform
length, description and the expected complexity (checked by the tests against
``keras_asc.complexity``). ``AudioClassifier.from_preset(name)`` builds one;
``keras_asc.build(name)`` does the same through the plugin registry."""

from keras_asc.layers.frontend import DCASE24_BASELINE_FRONTEND

MODEL_PRESETS = {
    "moflenet57": {
        "backbone": {
            "class_name": "keras_asc>MofleNetBackbone",
            "config": {"channels_multiplier": 1.8, "expansion_rate": 2.6},
        },
        "frontend": {"hop_length": 500, "resampler": "soxr_hq"},
        "num_samples": 32000,
        "description": "MofleNet57 (report Table 2): 256x64 log-mels, hop 500, about 60k params, 12.9M MACs.",
        "params": 60_440,
        "macs": 12_944_468,
    },
    "moflenet_128k": {
        "backbone": {
            "class_name": "keras_asc>MofleNetBackbone",
            "config": {"channels_multiplier": 2.5, "expansion_rate": 3.0},
        },
        "frontend": {"hop_length": 500, "resampler": "soxr_hq"},
        "num_samples": 32000,
        # Chosen by a grid over multiplier 2.0-2.5 x expansion 2.6-3.5: the largest model under
        # 128,000 int8 bytes (widths 32/80/200, expansions 96/240), well inside 30 M MACs.
        "description": "MofleNet scaled to the 128 kB int8 budget (multiplier 2.5, expansion 3.0): 126,072 params, 18.4M MACs.",
        "params": 126_072,
        "macs": 18_417_012,
    },
    "cp_resnet59": {
        "backbone": {
            "class_name": "keras_asc>CPResNetBackbone",
            "config": {"channels_multiplier": 1.4, "extra_pooling": True},
        },
        "frontend": {"hop_length": 750, "resampler": "soxr_hq"},
        "num_samples": 32000,
        "description": "CP-ResNet59 (report Table 1): 256x43 log-mels, hop 750, 58k params, 15.8M MACs.",
        "params": 58_360,
        "macs": 15_835_280,
    },
    "cp_resnet_128k": {
        "backbone": {
            "class_name": "keras_asc>CPResNetBackbone",
            "config": {"channels_multiplier": 2.0, "extra_pooling": False},
        },
        "frontend": {"hop_length": 750, "resampler": "soxr_hq"},
        "num_samples": 32000,
        "description": "CP-ResNet at the CP-JKU teacher width (multiplier 2.0): 127,684 params, 28.8M MACs.",
        "params": 127_684,
        "macs": 28_840_396,
    },
    "dcase24_baseline": {
        "backbone": {"class_name": "keras_asc>CPMobileBackbone", "config": {}},
        # The baseline's own front-end: periodic Hann window, HTK mel bank to 16 kHz, masking on
        # the power mel, log(x + 1e-5) without normalisation; resampled as torchaudio's default.
        "frontend": dict(DCASE24_BASELINE_FRONTEND),
        "num_samples": 32000,
        "description": "DCASE 2024 Task 1 baseline (CP-Mobile, no GRN): 256x65 log-mels, 61,148 params, 29.4M MACs.",
        "params": 61_148,
        "macs": 29_419_156,
    },
}

ENSEMBLE_PRESETS = {
    "moflenet57_cp_resnet59_v1": {
        "members": {"cp_resnet59": 0.5, "moflenet57": 0.5},
        "description": "Ensemble v1: CP-ResNet59 0.5 + MofleNet57 0.5 (weighted logits).",
    },
    "moflenet57_cp_resnet59_v2": {
        "members": {"cp_resnet59": 0.6, "moflenet57": 0.4},
        "description": "Ensemble v2: CP-ResNet59 0.6 + MofleNet57 0.4 (weighted logits).",
    },
}
