"""Fingerprint the int8 export: op list, parameter bytes, file SHA-256 and int8/QAT agreement
of moflenet57, cp_resnet59 and the v2 ensemble, with the same (randomised) weights.

For a before/after check of a change, run it with ``MODE=dump`` against the old checkout
(which writes the weights, by layer name, to WEIGHTS) and then against the new one (which
loads them), and compare the two JSON files. The script uses only APIs both checkouts have;
``tests/`` of the checkout provides ``randomize_state``.

Usage:
    MODE=dump PYTHONPATH=OLD:OLD/tests KERAS_BACKEND=tensorflow python benchmarks/int8_fingerprint.py before.json
    PYTHONPATH=NEW:NEW/tests KERAS_BACKEND=tensorflow python benchmarks/int8_fingerprint.py after.json

``LOW_ARENA=0`` or ``LOW_ARENA=1`` passes ``low_arena`` to ``export_int8`` explicitly, so two
checkouts whose default layout differs are compared on the same layout.
"""

import hashlib
import json
import os
import pickle
import sys
import tempfile

import keras
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from helpers import randomize_state

import keras_asc
from keras_asc.quantization import (
    TFLiteClassifier,
    calibrate_activation_ranges,
    export_int8,
    member_models,
    quantize_model,
    to_tf_keras,
)

OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def ops_of(path):
    model = schema.ModelT.InitFromPackedBuf(bytearray(open(path, "rb").read()), 0)
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return [OP_NAMES[codes[op.opcodeIndex]] for op in model.subgraphs[0].operators]


WEIGHTS = os.environ.get("WEIGHTS", os.path.join(tempfile.gettempdir(), "keras_asc_int8_fingerprint.pkl"))


def _leaves(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaves(layer)
        elif hasattr(layer, "sublayers"):
            yield from layer.sublayers
        else:
            yield layer


def build(preset):
    keras.utils.set_random_seed(0)
    model = keras_asc.build(preset)
    members = list(getattr(model, "members", [model]))
    if os.environ.get("MODE") == "dump":
        store = pickle.load(open(WEIGHTS, "rb")) if os.path.exists(WEIGHTS) else {}
        for seed, member in enumerate(members):
            randomize_state(member, seed=seed + 1)
            store[(preset, member.name)] = {layer.name: layer.get_weights() for layer in _leaves(member) if layer.weights}
        pickle.dump(store, open(WEIGHTS, "wb"))
    else:
        store = pickle.load(open(WEIGHTS, "rb"))
        for member in members:
            saved = store[(preset, member.name)]
            layers = {layer.name: layer for layer in _leaves(member) if layer.weights}
            assert sorted(layers) == sorted(saved), (preset, set(layers) ^ set(saved))
            for name, weights in saved.items():
                layers[name].set_weights(weights)
    return model


rng = np.random.default_rng(0)
calibration = rng.normal(0, 0.1, (16, 32000)).astype("float32")
evaluation = rng.normal(0, 0.1, (64, 32000)).astype("float32")
results = {}
for preset in ["moflenet57", "cp_resnet59", "moflenet57_cp_resnet59_v2"]:
    model = build(preset)
    keras_members = list(getattr(model, "members", [model]))
    twin = to_tf_keras(model)
    qat = quantize_model(twin)
    for qat_member, twin_member, keras_member in zip(member_models(qat), member_models(twin), keras_members, strict=True):
        batches = [keras.ops.convert_to_numpy(keras_member.frontend(calibration[i:i + 8])) for i in (0, 8)]
        calibrate_activation_ranges(qat_member, twin_member, iter(batches))
    with tempfile.TemporaryDirectory() as tmp:
        layout = {} if "LOW_ARENA" not in os.environ else {"low_arena": os.environ["LOW_ARENA"] == "1"}
        result = export_int8(qat, None, f"{tmp}/{preset}.tflite", qat=True, **layout)
        content = open(result.path, "rb").read()
        classifier = TFLiteClassifier(result.path)
        int8 = classifier.predict(evaluation)
        spectrograms = [keras.ops.convert_to_numpy(m.frontend(evaluation)) for m in keras_members]
        reference = qat.predict(spectrograms if len(spectrograms) > 1 else spectrograms[0], verbose=0)
        p = result.parameters
        results[preset] = {
            "ops": ops_of(result.path),
            "param_total": p.total, "storage_bytes": p.storage_bytes, "int8_weights": p.int8_weights,
            "int32_biases": p.int32_biases, "float_parameters": p.float_parameters,
            "param_tensors": [list(map(str, (t.name, t.dtype, t.shape, t.role))) for t in p.tensors],
            "file_bytes": len(content), "sha256": hashlib.sha256(content).hexdigest(),
            "agreement": float(np.mean(int8.argmax(1) == reference.argmax(1))),
            "max_abs_logit_error": float(np.abs(int8 - reference).max()),
            "logit_scale": float(np.abs(reference).max()),
        }
    r = results[preset]
    print(preset, len(r["ops"]), "ops", r["param_total"], r["storage_bytes"], r["file_bytes"], r["sha256"][:12],
          r["agreement"], r["max_abs_logit_error"], r["logit_scale"], flush=True)
json.dump(results, open(sys.argv[1], "w"), indent=1)
