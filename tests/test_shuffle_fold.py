"""The int8 export folds MofleNet's channel shuffle into the weights of the layers after it.

A tiny MofleNet (grouped expansion, shuffle, depthwise, projection, GRN, strided residual) is
exported with and without the fold: the folded file has no GATHER and gives bit-identical
logits. Small float graphs check which shuffles the fold leaves alone. TensorFlow only.
"""

import keras
import numpy as np
import pytest
from helpers import TINY_MOFLE_CONFIG, randomize_state

pytestmark = pytest.mark.tensorflow_only

tf = pytest.importorskip("tensorflow")


def _run(content, inputs):
    from keras_asc.quantization.export import make_interpreter

    interpreter = make_interpreter(model_content=content, num_threads=1)
    (detail,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(detail["index"], inputs.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], inputs)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _count(content, op_name):
    from keras_asc.quantization import read_graph

    return read_graph(content).op_names.count(op_name)


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory):
    """A tiny MofleNet's QAT-structured int8 conversion and its exports with and without the
    fold: ``(converted flatbuffer, export without fold, default export, spectrograms)``."""
    from keras_asc.models import AudioClassifier
    from keras_asc.quantization import (
        calibrate_activation_ranges,
        convert_int8,
        export_int8,
        quantize_model,
        to_tf_keras,
    )
    from keras_asc.quantization import export as export_module

    keras.utils.set_random_seed(0)
    model = AudioClassifier.from_preset("moflenet57", **TINY_MOFLE_CONFIG, name="tiny_mofle")
    randomize_state(model, seed=1)
    twin = to_tf_keras(model)
    qat_model = quantize_model(twin)
    rng = np.random.default_rng(0)
    spectrograms = rng.normal(0.0, 1.0, (32, 256, 64, 1)).astype("float32")
    calibrate_activation_ranges(qat_model, twin, iter([spectrograms[:16], spectrograms[16:]]))
    converted = convert_int8(qat_model)
    folder = tmp_path_factory.mktemp("fold")
    # Both exports start from the same conversion (the converter is the slow part).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export_module, "convert_int8", lambda *args, **kwargs: converted)
        # low_arena=False: the LiteRT layout, whose float pooling these tests check too.
        plain = export_int8(
            qat_model, None, folder / "plain.tflite", qat=True, fold_shuffle=False, low_arena=False
        )
        folded = export_int8(qat_model, None, folder / "folded.tflite", qat=True, low_arena=False)
    return converted, plain, folded, spectrograms


def test_folded_export_has_no_shuffle_and_bit_identical_logits(tiny_exports):
    from keras_asc.quantization import read_graph
    from keras_asc.quantization.export import float_average_pools, fold_channel_shuffles

    converted, plain, folded, spectrograms = tiny_exports
    plain_content = open(plain.path, "rb").read()
    folded_content = open(folded.path, "rb").read()
    assert plain_content == float_average_pools(converted)
    assert folded_content == float_average_pools(fold_channel_shuffles(converted))
    # One shuffle per MofleBlock (three stages of one block each).
    assert _count(plain_content, "GATHER") == 3
    assert _count(folded_content, "GATHER") == 0
    plain_ops, folded_ops = read_graph(plain_content).op_names, read_graph(folded_content).op_names
    assert [name for name in plain_ops if name != "GATHER"] == folded_ops
    # The weights moved, none was added or dropped; the gather indices are gone from the file.
    assert folded.parameters.total == plain.parameters.total
    assert folded.file_bytes < plain.file_bytes
    expected = _run(converted, spectrograms)
    assert np.abs(expected).max() > 0.1  # a network that computes something
    np.testing.assert_array_equal(_run(plain_content, spectrograms), expected)
    np.testing.assert_array_equal(_run(folded_content, spectrograms), expected)


def test_int8_average_pools_run_in_float_with_the_same_int8_results(tiny_exports):
    from keras_asc.quantization import read_graph
    from keras_asc.quantization.export import float_average_pools

    converted, _, _, spectrograms = tiny_exports
    rewritten = float_average_pools(converted)

    def pooled(content):
        """Every int8 tensor that an AVERAGE_POOL_2D (or the QUANTIZE after it) writes, from
        LiteRT's own kernels (XNNPACK does not write the tensors inside its partitions)."""
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        graph = read_graph(content)
        interpreter = Interpreter(
            model_content=content,
            num_threads=1,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            experimental_preserve_all_tensors=True,
        )
        (detail,) = interpreter.get_input_details()
        interpreter.resize_tensor_input(detail["index"], spectrograms.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], spectrograms)
        interpreter.invoke()
        readers = {i: op for op in graph.ops for i in op.inputs}
        outputs = []
        for op in graph.ops:
            if op.name == "AVERAGE_POOL_2D":
                (index,) = op.outputs
                if graph.tensors[index].dtype == "float32":  # rewritten: read the QUANTIZE's
                    (index,) = readers[index].outputs
                outputs.append(interpreter.get_tensor(index))
        return graph, outputs

    before_graph, before = pooled(converted)
    after_graph, after = pooled(rewritten)
    int8_pools = [
        op
        for op in before_graph.ops
        if op.name == "AVERAGE_POOL_2D" and before_graph.tensors[op.inputs[0]].dtype == "int8"
    ]
    assert len(int8_pools) == len(before) >= 1
    assert after_graph.op_names.count("DEQUANTIZE") == before_graph.op_names.count(
        "DEQUANTIZE"
    ) + len(before)
    assert all(
        after_graph.tensors[op.inputs[0]].dtype == "float32"
        for op in after_graph.ops
        if op.name == "AVERAGE_POOL_2D"
    )
    for expected, result in zip(before, after, strict=True):
        assert result.dtype == np.int8 and np.ptp(expected.astype(int)) > 10
        np.testing.assert_array_equal(result, expected)


def test_fold_permutes_depthwise_weights_and_their_quantisation(tiny_exports):
    from keras_asc.quantization import read_graph
    from keras_asc.quantization.export import make_interpreter
    from keras_asc.quantization.twin import shuffle_permutation

    _, plain, folded, _ = tiny_exports

    def depthwise_filters(path):
        interpreter = make_interpreter(model_path=path)
        details = {d["index"]: d for d in interpreter.get_tensor_details()}
        return [
            (interpreter.get_tensor(op.inputs[1]), details[op.inputs[1]])
            for op in read_graph(path).ops
            if op.name == "DEPTHWISE_CONV_2D"
        ]

    pairs = list(zip(depthwise_filters(plain.path), depthwise_filters(folded.path), strict=True))
    assert len(pairs) == 3
    for (before, before_detail), (after, after_detail) in pairs:
        # Shuffle output channel j is input channel source[j]: without the shuffle, the filter
        # of old channel j must sit at position source[j], with its quantisation scale.
        source = shuffle_permutation(before.shape[-1], 2)
        np.testing.assert_array_equal(after[..., source], before)
        scales = before_detail["quantization_parameters"]["scales"]
        moved = after_detail["quantization_parameters"]["scales"]
        np.testing.assert_array_equal(moved[source], scales)
        assert not np.array_equal(moved, scales)


def _float_tflite(layers_fn, input_shape=(6, 5, 8)):
    """A float TFLite model of ``layers_fn(x)`` (tf_keras layers) and its Keras outputs."""
    import tf_keras

    inputs = tf_keras.Input(input_shape)
    outputs = layers_fn(inputs)
    model = tf_keras.Model(inputs, outputs)
    function = tf.function(lambda x: model(x, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec((1, *input_shape), tf.float32))
    content = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model).convert()
    x = np.random.default_rng(2).normal(size=(1, *input_shape)).astype("float32")
    expected = model(x)
    return (
        content,
        x,
        [np.asarray(e) for e in (expected if isinstance(expected, list) else [expected])],
    )


def test_fold_on_a_float_graph_and_shuffles_it_must_keep():
    import tf_keras

    from keras_asc.quantization.export import fold_channel_shuffles
    from keras_asc.quantization.twin import ChannelShuffle

    L = tf_keras.layers
    tf_keras.utils.set_random_seed(0)

    def absorbable(x):
        x = ChannelShuffle(2)(x)
        x = L.ZeroPadding2D(1)(x)
        x = L.DepthwiseConv2D(3, bias_initializer="glorot_uniform", use_bias=True)(x)
        x = L.ReLU()(x)
        return L.Conv2D(4, 1)(x)

    content, x, (expected,) = _float_tflite(absorbable)
    assert _count(content, "GATHER") == 1
    folded = fold_channel_shuffles(content)
    assert _count(folded, "GATHER") == 0
    np.testing.assert_allclose(_run(folded, x), expected, rtol=1e-5, atol=1e-5)

    # A grouped convolution sums within groups: a permutation across groups cannot move into it.
    grouped, _, _ = _float_tflite(lambda x: L.Conv2D(4, 1, groups=2)(ChannelShuffle(2)(x)))

    # A shuffled tensor that is also read elsewhere (here: a model output) must stay shuffled.
    def shared(x):
        shuffled = ChannelShuffle(2)(x)
        return [L.Conv2D(4, 1)(shuffled), shuffled]

    for content in (grouped, _float_tflite(shared)[0]):
        assert _count(content, "GATHER") == 1
        assert fold_channel_shuffles(content) == content
