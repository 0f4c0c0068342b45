"""A small synthetic dataset in the exact TAU Urban Acoustic Scenes 2022 Mobile layout.

It lets the whole pipeline (decode, resample, log-mel, train, evaluate per device, quantise)
run in minutes without the 230,350 real clips. Every scene is a characteristic mix of tonal
partials, band-limited noise, amplitude modulation, chirps and transients, drawn afresh for
each clip around location- and recording-level settings, so a small CNN learns it well above
chance but not perfectly. Every device applies its own fixed colouring (EQ, band limits, gain,
noise floor, saturation), so the device shift is real; the unseen devices s4-s6 colour harder.

The tree mirrors TAU22: ``audio/<scene>-<city>-<location>-<segment>-<subsegment>-<device>.wav``
(1 s, 44.1 kHz, mono, 24-bit PCM), ``meta.csv``, ``evaluation_setup/fold1_train.csv``,
``fold1_evaluate.csv``, ``fold1_test.csv``, and the DCASE 2024 files ``split5/10/25/50/100.csv``
and ``test.csv``. Training clips come from a (most), b, c and s1-s3; each test recording is
heard through one real, one seen and one unseen device; training and test locations are
disjoint.

Example:
    >>> from keras_asc.data.synthetic import make_synthetic_tau22
    >>> root = make_synthetic_tau22("/tmp/tau22-synth", clips_per_class=60, seed=0)
    >>> from keras_asc.data import tau22
    >>> len(tau22.load_split(root, 100)), len(tau22.load_split(root, "test"))
    (600, 270)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib

import numpy as np
import scipy.signal
import soundfile

from keras_asc.data.tau22 import DEVICE_GROUPS, DEVICES, SCENE_LABELS, SPLIT_PERCENTAGES
from keras_asc.files import atomic_path

SAMPLING_RATE = 44100
CLIP_SECONDS = 1.0
MARKER_FILE = "keras_asc_synthetic.json"
_FORMAT_VERSION = 1
_CITIES = (
    "barcelona",
    "helsinki",
    "lisbon",
    "london",
    "lyon",
    "milan",
    "paris",
    "prague",
    "stockholm",
    "vienna",
)
_TRAINING_DEVICES = ("a", "b", "c", "s1", "s2", "s3")
# Share of each non-"a" training device in TAU22 fold1_train (about 7,500 of 139,970 clips
# each); device "a" takes the rest, about 73 %.
_MINOR_DEVICE_SHARE = 0.054
_TRAIN_LOCATIONS_PER_SCENE = 6
_TEST_LOCATIONS_PER_SCENE = 3
_SUBSEGMENTS_PER_SEGMENT = 10
_DEVICE_SEED = 20240601  # devices are part of the simulated world: fixed, whatever the seed

# Each scene's recipe. Ranges are sampled per location, recording segment and clip (see
# _clip_params). Neighbouring scenes share ingredients on purpose (bus/tram engine hum,
# metro/metro_station rail band, babble in public_square/shopping_mall/street_pedestrian)
# so that the task is learnable without being trivial.
#   tilt: background slope in dB/octave; band: band-limited noise (Hz); am: modulation rate
#   (Hz) and depth; hum: fundamental (Hz) and number of harmonics of tonal partials;
#   chirps/transients: events per second; reverb: decay time (s) of a diffuse tail.
_SCENES = {
    "airport": dict(
        tilt=-3.5,
        band=(250, 2500),
        band_db=-2,
        am=(0.4, 0.3),
        hum=(118, 6),
        hum_db=-4,
        chirps=0.8,
        chirp_band=(600, 900),
        transients=0.8,
        transient_hz=1800,
        reverb=0.9,
    ),
    "bus": dict(
        tilt=-6.0,
        band=(40, 350),
        band_db=4,
        am=(1.8, 0.5),
        hum=(34, 14),
        hum_db=-2,
        chirps=0.0,
        chirp_band=(0, 0),
        transients=1.0,
        transient_hz=400,
        reverb=0.15,
    ),
    "metro": dict(
        tilt=-4.0,
        band=(180, 1600),
        band_db=4,
        am=(6.0, 0.6),
        hum=(420, 3),
        hum_db=-3,
        chirps=0.0,
        chirp_band=(0, 0),
        transients=3.0,
        transient_hz=900,
        reverb=0.2,
    ),
    "metro_station": dict(
        tilt=-4.0,
        band=(300, 2200),
        band_db=0,
        am=(3.0, 0.35),
        hum=(1000, 2),
        hum_db=-6,
        chirps=0.3,
        chirp_band=(900, 1400),
        transients=1.5,
        transient_hz=1200,
        reverb=1.2,
    ),
    "park": dict(
        tilt=-2.0,
        band=(1500, 6000),
        band_db=-10,
        am=(0.3, 0.2),
        hum=(0, 0),
        hum_db=-40,
        chirps=3.0,
        chirp_band=(2500, 6500),
        transients=0.3,
        transient_hz=3000,
        reverb=0.05,
    ),
    "public_square": dict(
        tilt=-3.0,
        band=(300, 3000),
        band_db=-3,
        am=(4.0, 0.55),
        hum=(0, 0),
        hum_db=-40,
        chirps=1.2,
        chirp_band=(2000, 5000),
        transients=1.0,
        transient_hz=2500,
        reverb=0.3,
    ),
    "shopping_mall": dict(
        tilt=-3.5,
        band=(300, 3000),
        band_db=0,
        am=(4.5, 0.5),
        hum=(220, 5),
        hum_db=-2,
        chirps=0.0,
        chirp_band=(0, 0),
        transients=0.8,
        transient_hz=2000,
        reverb=1.0,
    ),
    "street_pedestrian": dict(
        tilt=-3.0,
        band=(300, 3000),
        band_db=-2,
        am=(4.0, 0.5),
        hum=(0, 0),
        hum_db=-40,
        chirps=0.2,
        chirp_band=(2500, 5000),
        transients=2.5,
        transient_hz=700,
        reverb=0.2,
    ),
    "street_traffic": dict(
        tilt=-4.5,
        band=(80, 2500),
        band_db=3,
        am=(0.5, 0.7),
        hum=(28, 10),
        hum_db=-8,
        chirps=0.0,
        chirp_band=(0, 0),
        transients=0.5,
        transient_hz=600,
        reverb=0.1,
    ),
    "tram": dict(
        tilt=-5.0,
        band=(100, 900),
        band_db=3,
        am=(1.0, 0.4),
        hum=(650, 4),
        hum_db=-2,
        chirps=0.8,
        chirp_band=(700, 1500),
        transients=1.2,
        transient_hz=500,
        reverb=0.2,
    ),
}

# Device colouring severity per group: EQ bell depth (dB), low-pass corner range (Hz),
# high-pass corner range (Hz), gain range (dB), noise floor range (dBFS) and saturation drive.
_DEVICE_SEVERITY = {
    "a": dict(
        eq_db=0.5,
        lowpass=(18000, 19000),
        highpass=(15, 25),
        gain_db=(0, 0),
        noise_db=(-90, -88),
        drive=(0.0, 0.0),
    ),
    "bc": dict(
        eq_db=3.0,
        lowpass=(12000, 15000),
        highpass=(50, 120),
        gain_db=(-4, 3),
        noise_db=(-72, -68),
        drive=(0.0, 0.2),
    ),
    "seen": dict(
        eq_db=5.0,
        lowpass=(8000, 11000),
        highpass=(100, 250),
        gain_db=(-5, 4),
        noise_db=(-68, -62),
        drive=(0.0, 0.4),
    ),
    "unseen": dict(
        eq_db=7.0,
        lowpass=(5000, 7500),
        highpass=(200, 450),
        gain_db=(-7, 5),
        noise_db=(-64, -58),
        drive=(0.3, 0.8),
    ),
}


def write_wav(path, data, sampling_rate, bits=24):
    """Write integer PCM WAV audio (16, 24 or 32 bit) with libsndfile, atomically.

    ``soundfile.write`` writes the file (a plain 44-byte RIFF header, ``subtype="PCM_<bits>"``).
    The float-to-integer step is done here so that it is exact and documented: libsndfile
    would scale by ``2**(bits - 1) - 1`` and wrap out-of-range values around unless told
    otherwise.

    Args:
        path: output file; written to a temporary file beside it, then renamed.
        data: samples, shape ``(num_samples,)`` or ``(num_samples, num_channels)``. Floating
            data is full scale at +-1.0 (scaled by ``2**(bits-1)``, rounded and clipped);
            integer data is written as is and must fit in ``bits``.
        sampling_rate: samples per second, a positive int.
        bits: 16, 24 or 32.

    Returns:
        ``path``.

    Example:
        >>> write_wav("/tmp/tone.wav", np.sin(np.arange(44100) * 0.06) * 0.5, 44100)
        '/tmp/tone.wav'
    """
    if bits not in (16, 24, 32):
        raise ValueError(f"bits must be 16, 24 or 32. Received: bits={bits!r}")
    if int(sampling_rate) != sampling_rate or sampling_rate <= 0:
        raise ValueError(
            f"sampling_rate must be a positive integer. Received: sampling_rate={sampling_rate!r}"
        )
    samples = np.asarray(data)
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.ndim != 2 or samples.shape[1] < 1:
        raise ValueError(
            "data must have shape (num_samples,) or (num_samples, num_channels). "
            f"Received shape: {np.shape(data)}"
        )
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if samples.dtype.kind == "f":
        if not np.all(np.isfinite(samples)):
            raise ValueError(f"data for {os.fspath(path)!r} contains NaN or infinite values.")
        integers = np.clip(np.round(samples.astype(np.float64) * 2 ** (bits - 1)), low, high)
        integers = integers.astype(np.int64)
    elif samples.dtype.kind in "iu":
        integers = samples.astype(np.int64)
        if integers.size and (integers.min() < low or integers.max() > high):
            raise ValueError(
                f"Integer data for {os.fspath(path)!r} must lie in [{low}, {high}] for "
                f"{bits}-bit PCM. Received range [{integers.min()}, {integers.max()}]."
            )
    else:
        raise TypeError(f"data must be a float or integer array. Received dtype: {samples.dtype}")
    # libsndfile takes int16 for 16-bit files and int32 otherwise, and writes the top ``bits``
    # bits of each int32: a 24-bit sample goes in shifted left by 8, so it is written exactly.
    if bits == 16:
        integers = integers.astype(np.int16)
    else:
        integers = (integers << (32 - bits)).astype(np.int32)
    path = os.fspath(path)
    with atomic_path(path, suffix=".tmp") as temporary:
        soundfile.write(temporary, integers, int(sampling_rate), subtype=f"PCM_{bits}", format="WAV")
    return path


# ----------------------------------------------------------------------------- signals


def _frequencies(num_samples, sampling_rate):
    return np.fft.rfftfreq(num_samples, 1.0 / sampling_rate)


def _unit_rms(gain, num_samples):
    """Expected RMS of ``irfft(W * gain)`` for complex white ``W`` of unit variance per part."""
    weights = np.full(gain.shape, 2.0)
    weights[0] = 1.0
    if num_samples % 2 == 0:
        weights[-1] = 1.0
    return np.sqrt(2.0 * np.sum(weights * gain**2)) / num_samples


def _white_spectrum(rng, size):
    return rng.standard_normal(size) + 1j * rng.standard_normal(size)


def _band_gain(freqs, low, high, edge_octaves=0.35):
    """Smooth band-pass magnitude: 1 inside [low, high], Gaussian roll-off in log frequency."""
    log_f = np.log2(np.maximum(freqs, 1.0))
    below = np.clip(np.log2(low) - log_f, 0, None)
    above = np.clip(log_f - np.log2(high), 0, None)
    return np.exp(-0.5 * ((below + above) / edge_octaves) ** 2)


def _tilt_gain(freqs, db_per_octave):
    octaves = np.log2(np.maximum(freqs, 20.0) / 1000.0)
    return 10 ** (db_per_octave * octaves / 20)


def _clip_params(scene, location_rng, segment_rng, clip_rng):
    """Draw one clip's settings: location, then recording segment, then clip jitter."""
    recipe = _SCENES[scene]

    def jitter(value, spread, *rngs):
        for rng in rngs:
            value *= float(np.exp(rng.normal(0.0, spread)))
        return value

    low, high = recipe["band"]
    shift = jitter(1.0, 0.09, location_rng, segment_rng, clip_rng)
    return dict(
        tilt=recipe["tilt"] + location_rng.normal(0, 0.6) + clip_rng.normal(0, 0.5),
        band=(low * shift, high * shift * jitter(1.0, 0.1, clip_rng)),
        band_db=recipe["band_db"] + location_rng.normal(0, 1.5) + clip_rng.normal(0, 2.0),
        am_rate=jitter(recipe["am"][0], 0.2, segment_rng, clip_rng),
        am_depth=float(np.clip(recipe["am"][1] + clip_rng.normal(0, 0.12), 0.0, 0.95)),
        hum_f0=jitter(recipe["hum"][0], 0.08, location_rng, clip_rng),
        hum_partials=recipe["hum"][1],
        hum_db=recipe["hum_db"] + segment_rng.normal(0, 2.0) + clip_rng.normal(0, 3.0),
        chirps=recipe["chirps"] * jitter(1.0, 0.3, segment_rng),
        chirp_band=recipe["chirp_band"],
        transients=recipe["transients"] * jitter(1.0, 0.35, segment_rng, clip_rng),
        transient_hz=jitter(recipe["transient_hz"], 0.2, location_rng, clip_rng),
        reverb=jitter(recipe["reverb"], 0.2, location_rng),
        level_db=float(clip_rng.uniform(-34.0, -22.0)),
        distractor=int(clip_rng.integers(len(SCENE_LABELS))),
        distractor_db=float(clip_rng.uniform(-30.0, -16.0)),
    )


def _render_scene(rng, params, num_samples, sampling_rate):
    """Synthesise one clip (before device colouring) from :func:`_clip_params` settings.

    The stationary noises and the transients are summed in the frequency domain, so a clip
    costs a handful of FFTs.
    """
    t = np.arange(num_samples) / sampling_rate
    freqs = _frequencies(num_samples, sampling_rate)
    size = freqs.shape[0]

    # Background: tilted broadband noise plus a faint band of a random other scene (so that
    # no single cue is decisive), as one noise with the combined power spectrum.
    tilt = _tilt_gain(freqs, params["tilt"])
    other = _SCENES[SCENE_LABELS[params["distractor"]]]
    distractor = _band_gain(freqs, *other["band"])
    background_gain = np.sqrt(
        (tilt / _unit_rms(tilt, num_samples)) ** 2
        + (10 ** (params["distractor_db"] / 20) * distractor / _unit_rms(distractor, num_samples))
        ** 2
    )
    spectrum = _white_spectrum(rng, size) * background_gain

    # Transients: decaying noise bursts placed in time, band-limited around transient_hz.
    count = rng.poisson(params["transients"])
    if count:
        impulses = np.zeros(num_samples)
        length = int(0.12 * sampling_rate)
        decay = np.arange(length) / sampling_rate
        for _ in range(count):
            start = int(rng.integers(0, num_samples - length))
            envelope = np.exp(-decay / rng.uniform(0.01, 0.04))
            impulses[start : start + length] += (
                rng.uniform(2.0, 6.0) * envelope * rng.standard_normal(length)
            )
        centre = params["transient_hz"]
        burst_gain = _band_gain(freqs, centre / 1.6, centre * 1.6)
        burst_gain /= np.sqrt(np.mean(burst_gain**2)) + 1e-12
        spectrum += np.fft.rfft(impulses) * burst_gain
    signal = np.fft.irfft(spectrum, n=num_samples)

    band_gain = _band_gain(freqs, *params["band"])
    band = np.fft.irfft(_white_spectrum(rng, size) * band_gain, n=num_samples)
    band /= _unit_rms(band_gain, num_samples)
    phase = rng.uniform(0, 2 * np.pi)
    band *= 1.0 + params["am_depth"] * np.sin(2 * np.pi * params["am_rate"] * t + phase)
    signal += 10 ** (params["band_db"] / 20) * band

    partials = np.arange(1, params["hum_partials"] + 1)
    partials = partials[params["hum_f0"] * partials < 0.45 * sampling_rate]
    if partials.size:
        # A slightly wobbling fundamental: phase of f0 * (1 + 0.004 sin(2 pi r t)).
        rate = rng.uniform(0.2, 1.5)
        base = (
            2
            * np.pi
            * params["hum_f0"]
            * (t - 0.004 * np.cos(2 * np.pi * rate * t) / (2 * np.pi * rate))
        )
        amplitudes = rng.uniform(0.4, 1.0, size=partials.size) / partials
        offsets = rng.uniform(0, 2 * np.pi, size=partials.size)
        # sin(k * base + offset) = Im(e^(i offset) z^k) with z = e^(i base): one complex
        # multiplication per partial instead of a sine over the whole clip.
        # The partials are 1, 2, ..., K, so z^k is one more multiplication each time.
        z = np.exp(1j * base)
        power = np.ones(num_samples, dtype=complex)
        hum = np.zeros(num_samples)
        for amplitude, offset in zip(amplitudes, offsets, strict=True):
            power *= z
            hum += amplitude * (np.cos(offset) * power.imag + np.sin(offset) * power.real)
        hum /= np.sqrt(np.mean(hum**2)) + 1e-12
        signal += 10 ** (params["hum_db"] / 20) * hum

    for _ in range(rng.poisson(params["chirps"])):
        length = int(rng.uniform(0.05, 0.2) * sampling_rate)
        start = int(rng.integers(0, num_samples - length))
        f_start, f_end = rng.uniform(*params["chirp_band"], size=2)
        sweep = np.linspace(f_start, f_end, length)
        chirp = np.sin(2 * np.pi * np.cumsum(sweep) / sampling_rate) * np.hanning(length)
        signal[start : start + length] += rng.uniform(0.8, 2.5) * chirp

    if params["reverb"] > 0.08:
        length = int(min(params["reverb"], 1.5) * sampling_rate)
        tail = rng.standard_normal(length) * np.exp(-6.9 * np.arange(length) / length)
        tail[0] = 0.0
        wet = scipy.signal.fftconvolve(signal, tail)[:num_samples]
        wet *= np.sqrt(np.mean(signal**2) / (np.mean(wet**2) + 1e-12))
        mix = min(0.8, params["reverb"] / 1.5)
        signal = (1 - mix) * signal + mix * wet

    signal /= np.sqrt(np.mean(signal**2)) + 1e-12
    return signal * 10 ** (params["level_db"] / 20)


def _device_profile(device, sampling_rate, num_samples):
    """The fixed colouring of one device: magnitude response, noise floor and drive."""
    if device in ("a", "b", "c"):
        severity = _DEVICE_SEVERITY["a" if device == "a" else "bc"]
    else:
        severity = _DEVICE_SEVERITY["seen" if device in DEVICE_GROUPS["seen"] else "unseen"]
    rng = np.random.default_rng([_DEVICE_SEED, DEVICES.index(device)])
    freqs = _frequencies(num_samples, sampling_rate)
    log_f = np.log2(np.maximum(freqs, 1.0))
    response_db = np.zeros_like(freqs)
    for _ in range(4):  # a few resonances and dips, as in small microphones and enclosures
        centre = np.log2(rng.uniform(200.0, 6000.0))
        width = rng.uniform(0.4, 1.0)
        depth = rng.choice((-1.0, 1.0)) * rng.uniform(0.6, 1.0) * severity["eq_db"]
        response_db += depth * np.exp(-0.5 * ((log_f - centre) / width) ** 2)
    lowpass = rng.uniform(*severity["lowpass"])
    highpass = rng.uniform(*severity["highpass"])
    order = 4 if device == "a" else 3
    magnitude = 10 ** (response_db / 20)
    magnitude /= np.sqrt(1 + (freqs / lowpass) ** (2 * order))
    magnitude /= np.sqrt(1 + (highpass / np.maximum(freqs, 1e-3)) ** (2 * order))
    magnitude *= 10 ** (rng.uniform(*severity["gain_db"]) / 20)
    return dict(
        magnitude=magnitude,
        noise_db=rng.uniform(*severity["noise_db"]),
        drive=rng.uniform(*severity["drive"]),
    )


def _apply_device(signal, profile, rng):
    coloured = np.fft.irfft(np.fft.rfft(signal) * profile["magnitude"], n=signal.shape[0])
    if profile["drive"] > 0:
        # soft saturation of a cheap pre-amplifier, level-preserving for small signals
        drive = 1.0 + 20.0 * profile["drive"]
        coloured = np.tanh(coloured * drive) / drive
    coloured += 10 ** (profile["noise_db"] / 20) * rng.standard_normal(signal.shape[0])
    return np.clip(coloured, -0.999, 0.999)


# ----------------------------------------------------------------------------- layout


def _plan(clips_per_class, test_clips_per_class, rng):
    """Assign file names: returns (train_clips, test_clips), each a list of dicts."""
    minor = max(1, round(clips_per_class * _MINOR_DEVICE_SHARE))
    counts = {device: minor for device in _TRAINING_DEVICES[1:]}
    counts["a"] = clips_per_class - minor * (len(_TRAINING_DEVICES) - 1)
    test_sources = test_clips_per_class // 3
    train, test = [], []
    next_segment = 1000
    for scene_index, scene in enumerate(SCENE_LABELS):
        locations = []
        for k in range(_TRAIN_LOCATIONS_PER_SCENE + _TEST_LOCATIONS_PER_SCENE):
            city = _CITIES[int(rng.integers(len(_CITIES)))]
            locations.append((city, 100 + scene_index * 20 + k))
        train_locations = locations[:_TRAIN_LOCATIONS_PER_SCENE]
        test_locations = locations[_TRAIN_LOCATIONS_PER_SCENE:]

        def sources(count, where, scene=scene):
            nonlocal next_segment
            made = []
            while len(made) < count:
                city, location = where[len(made) // _SUBSEGMENTS_PER_SEGMENT % len(where)]
                take = min(_SUBSEGMENTS_PER_SEGMENT, count - len(made))
                for sub in range(take):
                    made.append(
                        dict(
                            scene=scene,
                            city=city,
                            location=location,
                            segment=next_segment,
                            subsegment=sub,
                        )
                    )
                next_segment += 1
            return made

        # Device "a" records every training source; b, c and s1-s3 are parallel recordings
        # (b, c) or simulations (s1-s3) of some of them, as in TAU22.
        a_sources = sources(counts["a"], train_locations)
        train += [dict(source, device="a") for source in a_sources]
        for device in _TRAINING_DEVICES[1:]:
            chosen = rng.choice(len(a_sources), size=counts[device], replace=False)
            train += [dict(a_sources[int(i)], device=device) for i in sorted(chosen)]
        # Each test recording is heard through one real, one seen and one unseen device,
        # rotating through the triples (a, s1, s4), (b, s2, s5), (c, s3, s6): every device
        # gets the same number of clips and the groups hear the same recordings.
        for index, source in enumerate(sources(test_sources, test_locations)):
            triple = [group[index % 3] for group in DEVICE_GROUPS.values()]
            test += [dict(source, device=device) for device in triple]
    return train, test


def _filename(clip):
    return (
        f"audio/{clip['scene']}-{clip['city']}-{clip['location']}-{clip['segment']}-"
        f"{clip['subsegment']}-{clip['device']}.wav"
    )


def _nested_subsets(train, rng):
    """split5 within split10 within ... within split100, stratified by scene."""
    subsets = {percentage: [] for percentage in SPLIT_PERCENTAGES}
    for scene in SCENE_LABELS:
        names = sorted(_filename(c) for c in train if c["scene"] == scene)
        order = [names[int(i)] for i in rng.permutation(len(names))]
        for percentage in SPLIT_PERCENTAGES:
            keep = max(1, round(len(order) * percentage / 100))
            subsets[percentage] += order[:keep]
    return {percentage: sorted(names) for percentage, names in subsets.items()}


def _write_table(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("\t".join(header) + "\n")
        for row in rows:
            handle.write("\t".join(row) + "\n")


def _check_target(out_dir):
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"{out_dir!r} exists and is not a folder.")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not os.path.isfile(os.path.join(out_dir, MARKER_FILE)):
            raise FileExistsError(
                f"Refusing to overwrite {out_dir!r}: it is not empty and was not written by "
                f"make_synthetic_tau22 (no {MARKER_FILE}). Choose an empty or new folder."
            )


def make_synthetic_tau22(
    out_dir,
    clips_per_class=60,
    test_clips_per_class=27,
    seed=0,
):
    """Write a small synthetic dataset in the TAU22 / DCASE 2024 Task 1 layout.

    The folder is built in a temporary sibling and renamed into place, so it is either
    complete or absent. An existing ``out_dir`` is replaced only when it is empty or was
    written by this function (it holds ``keras_asc_synthetic.json``).

    Args:
        out_dir: target folder.
        clips_per_class: training clips per scene in split100 (at least 20, so that split5
            keeps one clip per scene). About 73 % come from device a and the rest evenly from
            b, c, s1, s2 and s3, like TAU22's training split.
        test_clips_per_class: test clips per scene, a multiple of 9: each test recording is
            heard through one device of each group, the triples (a, s1, s4), (b, s2, s5) and
            (c, s3, s6) taking turns, so all nine devices get the same number of clips.
        seed: seed of every random draw; the same arguments give byte-identical files.

    Returns:
        The absolute path of ``out_dir``.

    Example:
        >>> make_synthetic_tau22("/tmp/tau22-synth", clips_per_class=20, test_clips_per_class=9)
        '/tmp/tau22-synth'
    """
    if (
        isinstance(clips_per_class, bool)
        or not isinstance(clips_per_class, int)
        or clips_per_class < 20
    ):
        raise ValueError(
            "clips_per_class must be an int >= 20 (split5 keeps 5 % of it per scene). "
            f"Received: clips_per_class={clips_per_class!r}"
        )
    if (
        isinstance(test_clips_per_class, bool)
        or not isinstance(test_clips_per_class, int)
        or test_clips_per_class < len(DEVICES)
        or test_clips_per_class % len(DEVICES)
    ):
        raise ValueError(
            f"test_clips_per_class must be a positive multiple of {len(DEVICES)} (every "
            "device gets the same number of test clips). "
            f"Received: test_clips_per_class={test_clips_per_class!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int. Received: seed={seed!r}")
    out_dir = os.path.abspath(os.fspath(out_dir))
    _check_target(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)

    layout_rng = np.random.default_rng([seed, 0])
    train, test = _plan(clips_per_class, test_clips_per_class, layout_rng)
    subsets = _nested_subsets(train, layout_rng)
    num_samples = int(SAMPLING_RATE * CLIP_SECONDS)
    profiles = {device: _device_profile(device, SAMPLING_RATE, num_samples) for device in DEVICES}

    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out_dir)}-")
    try:
        os.makedirs(os.path.join(staging, "audio"))
        rendered = {}

        def source_key(clip):
            return (clip["scene"], clip["location"], clip["segment"], clip["subsegment"])

        # Sorted by source, so the parallel recordings of one source follow each other and
        # the source is rendered once.
        for clip in sorted(train + test, key=lambda c: (source_key(c), c["device"])):
            key = source_key(clip)
            if key not in rendered:
                scene_index = SCENE_LABELS.index(clip["scene"])
                params = _clip_params(
                    clip["scene"],
                    np.random.default_rng([seed, 1, scene_index, clip["location"]]),
                    np.random.default_rng([seed, 2, clip["segment"]]),
                    np.random.default_rng([seed, 3, clip["segment"], clip["subsegment"]]),
                )
                source_rng = np.random.default_rng([seed, 4, clip["segment"], clip["subsegment"]])
                rendered = {key: _render_scene(source_rng, params, num_samples, SAMPLING_RATE)}
            name = _filename(clip)
            device_rng = np.random.default_rng([seed, 5, zlib.crc32(name.encode("utf-8"))])
            audio = _apply_device(rendered[key], profiles[clip["device"]], device_rng)
            write_wav(os.path.join(staging, name), audio, SAMPLING_RATE, bits=24)

        meta_rows = sorted(
            (
                _filename(c),
                c["scene"],
                f"{c['city']}-{c['location']}",
                c["device"],
            )
            for c in train + test
        )
        _write_table(
            os.path.join(staging, "meta.csv"),
            ("filename", "scene_label", "identifier", "source_label"),
            meta_rows,
        )
        label_of = {row[0]: row[1] for row in meta_rows}
        test_names = sorted(_filename(c) for c in test)
        os.makedirs(os.path.join(staging, "evaluation_setup"))
        tables = {
            "evaluation_setup/fold1_train.csv": subsets[100],
            "evaluation_setup/fold1_evaluate.csv": test_names,
            "test.csv": test_names,
        }
        tables.update({f"split{p}.csv": names for p, names in subsets.items()})
        for relative, names in tables.items():
            _write_table(
                os.path.join(staging, relative),
                ("filename", "scene_label"),
                ((name, label_of[name]) for name in names),
            )
        _write_table(
            os.path.join(staging, "evaluation_setup", "fold1_test.csv"),
            ("filename",),
            ((name,) for name in test_names),
        )
        marker = dict(
            generator="keras_asc.data.synthetic.make_synthetic_tau22",
            format_version=_FORMAT_VERSION,
            clips_per_class=clips_per_class,
            test_clips_per_class=test_clips_per_class,
            seed=seed,
            sampling_rate=SAMPLING_RATE,
            train_clips=len(subsets[100]),
            test_clips=len(test_names),
        )
        with open(os.path.join(staging, MARKER_FILE), "w", encoding="utf-8") as handle:
            json.dump(marker, handle, indent=2, sort_keys=True)
            handle.write("\n")
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _swap_into_place(staging, out_dir):
    """Rename ``staging`` to ``out_dir``, moving an old synthetic tree aside first."""
    _check_target(out_dir)  # again: the folder may have changed while we were writing
    aside = None
    if os.path.isdir(out_dir):
        aside = tempfile.mkdtemp(dir=os.path.dirname(out_dir), prefix=".replaced-")
        os.rename(out_dir, os.path.join(aside, "old"))
    try:
        os.rename(staging, out_dir)
    except BaseException:
        if aside is not None:
            os.rename(os.path.join(aside, "old"), out_dir)
            os.rmdir(aside)
        raise
    if aside is not None:
        shutil.rmtree(aside)
