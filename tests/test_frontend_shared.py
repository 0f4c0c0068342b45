"""One framing and FFT pass for an ensemble's front-ends: the values of frontend_numpy."""

import numpy as np


def _params(*names, **changes):
    import keras_asc
    from keras_asc.quantization.frontend import frontend_params

    return [frontend_params({**keras_asc.build(name).frontend.get_config(), **changes}) for name in names]


def test_shared_frames_give_the_values_of_each_front_end():
    from keras_asc.quantization.frontend import frontend_numpy
    from keras_asc.quantization.frontend_shared import _shareable, shared_frontends

    params = _params("moflenet57", "cp_resnet59")  # hops 500 and 750: every 1,500 shared
    assert _shareable(params)
    rng = np.random.default_rng(0)
    clips = (rng.normal(size=(3, 32000)) * [[0.1], [1e-4], [0.5]]).astype("float32")
    for got, member in zip(shared_frontends(clips, params), params, strict=True):
        np.testing.assert_array_equal(got, frontend_numpy(clips, member))
    # Other clip lengths and one clip given as 1-D.
    (single, other) = shared_frontends(clips[0, :24000], params)
    np.testing.assert_array_equal(single, frontend_numpy(clips[:1, :24000], params[0]))
    assert other.shape == frontend_numpy(clips[:1, :24000], params[1]).shape


def test_inputs_with_other_settings_are_computed_one_by_one():
    from keras_asc.quantization.frontend import frontend_numpy
    from keras_asc.quantization.frontend_shared import _shareable, shared_frontends

    params = _params("moflenet57") + _params("cp_resnet59", fft_length=2048, window_length=2048)
    assert not _shareable(params)
    clips = np.random.default_rng(1).normal(0, 0.1, (2, 32000)).astype("float32")
    for got, member in zip(shared_frontends(clips, params), params, strict=True):
        np.testing.assert_array_equal(got, frontend_numpy(clips, member))
