"""Quantisation: the tf_keras twin, TF-MOT quantisation-aware training and int8 TFLite export.

TensorFlow-only. Nothing heavy is imported with the package: each name below loads its module
(and TensorFlow, tf_keras or TF-MOT) on first use, so ``keras_asc`` itself never imports them.

Example:
    >>> from keras_asc.quantization import quantize_aware_train, export_int8, TFLiteClassifier
    >>> from keras_asc.training import QAT_RECIPE, quantize_run
    >>> qat_model = quantize_aware_train(model, train_dataset, QAT_RECIPE.epochs,
    ...                                  **QAT_RECIPE.schedule_arguments())
    >>> export_int8(qat_model, None, "out/moflenet57.tflite", qat=True)
    >>> TFLiteClassifier("out/moflenet57.tflite").predict(waveforms)
    >>> print(quantize_run("runs/moflenet57", "/data/tau22").summary())  # what the CLI does
"""

import importlib

_EXPORTS = {
    "to_tf_keras": "twin",
    "twin_spec": "twin",
    "register_twin": "twin",
    "with_native_strides": "twin",
    "copy_weights_by_name": "twin",
    "UnsupportedTwinLayerError": "twin",
    "quantize_model": "qat",
    "quantize_aware_train": "qat",
    "QATLearningRate": "qat",
    "spectrogram_dataset": "qat",
    "member_models": "qat",
    "qat_histories": "qat",
    "calibrate_activation_ranges": "qat",
    "export_int8": "export",
    "convert_int8": "conversion",
    "parameter_bytes": "graph",
    "read_graph": "graph",
    "make_interpreter": "graph",
    "fold_channel_shuffles": "passes",
    "float_average_pools": "passes",
    "with_int8_io": "passes",
    "with_blockwise_grn": "low_arena",
    "QUANTIZATION_POLICY": "policy",
    "ExportResult": "export",
    "frontend_params": "frontend",
    "frontend_numpy": "frontend",
    "load_frontend_params": "frontend",
    "TFLiteClassifier": "interpreter",
    "prediction_agreement": "interpreter",
    "verify_tflite": "interpreter",
    "export_onnx": "onnx",
    "tf_frontend": "frontend_tf",
    "micro_agreement": "interpreter",
    "micro_report": "micro",
    "check_micro": "micro",
    "MicroInterpreter": "micro",
    "MicroUnsupportedError": "micro",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keras_asc.quantization' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"keras_asc.quantization.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
