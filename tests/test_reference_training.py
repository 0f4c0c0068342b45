"""Training as the CP-JKU reference code trains: initialisation, Adam with coupled L2 weight
decay, and a GRN whose gradient stays finite at all-zero channels."""

import keras
import numpy as np
import pytest

import keras_asc
from keras_asc.layers import GlobalResponseNormalization, leaf_layers
from keras_asc.training import AdamL2, get_recipe


def _variance_ratio_bound(num_elements):
    # n * sample_var / var ~ chi-square(n): the ratio has standard deviation sqrt(2 / n).
    return 5.0 * np.sqrt(2.0 / num_elements)


def _expected_mobile_variance(layer, kernel):
    kh, kw, _, out = kernel.shape
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        # torch weight (C, 1, kh, kw): fan_out = C * kh * kw.
        return 2.0 / (kh * kw * kernel.shape[2])
    return 2.0 / (kh * kw * out)


def _expected_cp_resnet_variance(name, kernel, num_blocks):
    kh, kw, in_per_group, out = kernel.shape
    if name.endswith("_conv2_conv") or name.endswith("_head_conv"):
        return 0.0
    if name.endswith("_conv1_conv"):
        return 2.0 / (kh * kw * out) / num_blocks  # Fixup: L^-0.5 on the std
    if name.endswith("_shortcut_conv"):
        return 2.0 / out
    return 2.0 / (kh * kw * in_per_group)  # stem: He fan-in


@pytest.mark.parametrize(
    "preset", ["moflenet57", "dcase24_baseline", "cp_resnet59", "cp_resnet_128k"]
)
def test_initial_kernel_std_follows_the_reference(preset):
    keras.utils.set_random_seed(3)
    model = keras_asc.build(preset).backbone
    convolutions = [
        layer for layer in leaf_layers(model) if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
    ]
    num_blocks = sum(layer.name.endswith("_conv1_conv") for layer in convolutions)
    checked = 0
    for layer in convolutions:
        kernel = keras.ops.convert_to_numpy(layer.weights[0])
        if preset.startswith("cp_resnet"):
            assert num_blocks == 4
            expected = _expected_cp_resnet_variance(layer.name, kernel, num_blocks)
        else:
            expected = _expected_mobile_variance(layer, kernel)
        if expected == 0.0:
            assert not np.any(kernel), f"{layer.name} must start at zero"
        else:
            ratio = float(np.mean(kernel.astype("float64") ** 2)) / expected
            assert abs(ratio - 1.0) < _variance_ratio_bound(kernel.size), (layer.name, ratio)
        checked += 1
    assert checked == len(convolutions) >= 8


def test_depthwise_kernels_no_longer_start_sqrt_c_times_too_large():
    keras.utils.set_random_seed(0)
    model = keras_asc.build("moflenet57").backbone
    layer = {layer.name: layer for layer in leaf_layers(model)}["moflenet57_stage3_block6_depthwise_conv"]
    kernel = keras.ops.convert_to_numpy(layer.weights[0])
    channels = kernel.shape[2]
    assert channels == 144
    std = float(np.std(kernel))
    # Keras' own fan-out of this kernel is 9: std 0.471; the reference's is 9 * 144: 0.0393.
    assert abs(std - np.sqrt(2.0 / (9 * channels))) < 0.004


def test_fixup_network_starts_with_zero_logits():
    model = keras_asc.build("cp_resnet59").backbone
    x = np.random.default_rng(0).normal(size=(2, 256, 43, 1)).astype("float32")
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_array_equal(logits, 0.0)


def _torch_adam_reference(param, grads, lr, l2=0.0, decoupled=0.0, betas=(0.9, 0.999), eps=1e-8):
    """torch.optim.Adam / AdamW's documented update, in float64 NumPy."""
    p = param.astype("float64").copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.astype("float64")
        if decoupled:
            p = p * (1 - lr * decoupled)
        if l2:
            g = g + l2 * p
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        bias1 = 1 - betas[0] ** t
        bias2 = 1 - betas[1] ** t
        p = p - lr / bias1 * m / (np.sqrt(v) / np.sqrt(bias2) + eps)
    return p


@pytest.mark.parametrize("l2, decoupled", [(1e-3, 0.0), (0.0, 1e-2), (0.0, 0.0)])
def test_adam_l2_matches_torch_adam_update(l2, decoupled):
    rng = np.random.default_rng(0)
    start = rng.normal(size=(4, 3)).astype("float32")
    # Tiny gradients make epsilon's placement visible (Keras adds it before bias correction).
    grads = [rng.normal(scale=scale, size=(4, 3)).astype("float32") for scale in (1e-6, 1e-2, 1.0)]
    variable = keras.Variable(start)
    kwargs = {"weight_decay": decoupled} if decoupled else {}
    optimizer = AdamL2(learning_rate=0.01, l2_weight_decay=l2, **kwargs)
    for g in grads:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(g), variable)])
    expected = _torch_adam_reference(start, grads, 0.01, l2=l2, decoupled=decoupled)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), expected, rtol=0, atol=2e-6)
    # The same three steps through PyTorch itself, where it is installed.
    torch = pytest.importorskip("torch")
    tensor = torch.nn.Parameter(torch.from_numpy(start.copy()))
    if decoupled:
        torch_optimizer = torch.optim.AdamW([tensor], lr=0.01, weight_decay=decoupled)
    else:
        torch_optimizer = torch.optim.Adam([tensor], lr=0.01, weight_decay=l2)
    for g in grads:
        tensor.grad = torch.from_numpy(g.copy())
        torch_optimizer.step()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(variable), tensor.detach().numpy(), rtol=0, atol=2e-6
    )


def test_adam_l2_differs_from_keras_decoupled_adam():
    # Coupled L2 on a zero gradient still moves the weight; the moment estimates see it.
    variable = keras.Variable(np.ones((3,), "float32"))
    optimizer = AdamL2(learning_rate=0.1, l2_weight_decay=0.5)
    optimizer.apply_gradients([(keras.ops.zeros((3,)), variable)])
    # g = 0.5 * 1 -> Adam's first step moves by lr in the gradient's sign.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), 0.9, atol=1e-6)


def test_adam_l2_config_round_trip_and_validation():
    optimizer = AdamL2(learning_rate=0.002, l2_weight_decay=1e-4, weight_decay=1e-3)
    clone = AdamL2.from_config(optimizer.get_config())
    assert clone.l2_weight_decay == 1e-4 and clone.weight_decay == 1e-3
    assert clone.epsilon == 1e-8
    with pytest.raises(ValueError, match="l2_weight_decay"):
        AdamL2(l2_weight_decay=-1.0)


def test_recipes_carry_the_reference_weight_decay_and_accept_overrides():
    assert get_recipe("moflenet57").weight_decay == 1e-4
    assert get_recipe("cp_resnet59").weight_decay == 1e-3
    baseline = get_recipe("dcase24_baseline")
    assert (baseline.optimizer, baseline.weight_decay) == ("adamw", 1e-4)
    optimizer = get_recipe("cp_resnet59").make_optimizer(steps_per_epoch=10)
    assert isinstance(optimizer, AdamL2)
    assert optimizer.l2_weight_decay == 1e-3 and optimizer.weight_decay is None
    optimizer = baseline.make_optimizer(steps_per_epoch=10)
    assert optimizer.l2_weight_decay == 0.0 and optimizer.weight_decay == 1e-4
    assert get_recipe("moflenet57").with_overrides(weight_decay=0).make_optimizer(10).l2_weight_decay == 0.0
    with pytest.raises(ValueError, match="weight_decay"):
        get_recipe("moflenet57").with_overrides(weight_decay=-1)
    recipe = get_recipe("cp_resnet59")
    assert type(recipe).from_dict(recipe.to_dict()) == recipe


def _grn_gradients(x, gamma, beta):
    """d(sum(GRN(x) * weights))/dx and /d(gamma) on the running backend."""
    backend = keras.backend.backend()
    layer = GlobalResponseNormalization()
    layer.build(x.shape)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    weights = np.linspace(-1, 1, x.size, dtype="float32").reshape(x.shape)
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(layer(xt) * weights)
        dx, dgamma = tape.gradient(loss, [xt, layer.gamma.value])
        return dx.numpy(), float(dgamma.numpy())
    if backend == "jax":
        import jax

        def loss(xv, g):
            values = [g, layer.beta.value]
            out, _ = layer.stateless_call(values, [], xv)
            return (out * weights).sum()

        dx, dgamma = jax.grad(loss, argnums=(0, 1))(x, layer.gamma.value)
        return np.asarray(dx), float(dgamma)
    import torch

    xt = torch.tensor(x, requires_grad=True)
    loss = (layer(xt) * torch.from_numpy(weights)).sum()
    loss.backward()
    return xt.grad.numpy(), float(layer.gamma.value.grad.numpy())


def test_grn_gradient_is_finite_at_a_zero_channel():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 5, 3)).astype("float32")
    x[0, :, :, 1] = 0.0  # one example's channel is exactly zero, as after a ReLU
    dx, dgamma = _grn_gradients(x, 0.7, 0.1)
    assert np.all(np.isfinite(dx)) and np.isfinite(dgamma)
    # Away from the zero channel it is the ordinary gradient: compare with PyTorch's GRN
    # (torch.linalg.vector_norm, whose gradient at 0 is 0), where installed.
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    gamma = torch.tensor(0.7, requires_grad=True)
    norms = torch.linalg.vector_norm(xt, dim=(1, 2), keepdim=True)
    out = gamma * (xt * norms / (norms.mean(dim=-1, keepdim=True) + 1e-6)) + 0.1 + xt
    weights = torch.linspace(-1, 1, x.size).reshape(x.shape)
    (out * weights).sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-5)
    assert abs(dgamma - float(gamma.grad)) < 1e-4
