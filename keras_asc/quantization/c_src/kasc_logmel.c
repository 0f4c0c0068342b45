/* Log-mel front-end of keras-asc int8 models, in portable C99: see kasc_logmel.h. */
#include "kasc_logmel.h"

#include <math.h>
#include <stddef.h>

int32_t kasc_logmel_frames(const kasc_logmel_config *config, int32_t num_samples) {
  int32_t length = num_samples - (config->pre_emphasis != 0.0f ? 1 : 0);
  return 1 + length / config->hop_length;
}

/* Sample i of the pre-emphasised signal (length samples). */
static float emphasised(const kasc_logmel_config *config, const float *x, int32_t i) {
  if (config->pre_emphasis == 0.0f) return x[i];
  return x[i + 1] - config->pre_emphasis * x[i];
}

/* Sample i of the reflect-padded signal (pad samples mirrored on each side, edges excluded). */
static float padded(const kasc_logmel_config *config, const float *x, int32_t length,
                    int32_t pad, int32_t i) {
  int32_t j = i - pad;
  if (j < 0) j = -j;
  if (j >= length) j = 2 * (length - 1) - j;
  return emphasised(config, x, j);
}

int kasc_logmel(const kasc_logmel_config *config, const float *waveform, int32_t num_samples,
                float *output, float *work, kasc_rfft_fn rfft, void *rfft_context) {
  if (config == NULL || waveform == NULL || output == NULL || work == NULL || rfft == NULL) {
    return -1;
  }
  const int32_t n = config->fft_length;
  const int32_t half = n / 2;
  const int32_t length = num_samples - (config->pre_emphasis != 0.0f ? 1 : 0);
  if (length <= half) return -1;
  const int32_t frames = kasc_logmel_frames(config, num_samples);
  float *frame = work;
  float *spectrum = work + n;
  for (int32_t t = 0; t < frames; ++t) {
    const int32_t first = t * config->hop_length;
    for (int32_t k = 0; k < n; ++k) {
      const int32_t i = first + k;
      /* The middle of a frame needs no reflection: read it directly. */
      const float value = (i >= half && i - half < length)
                              ? emphasised(config, waveform, i - half)
                              : padded(config, waveform, length, half, i);
      frame[k] = value * config->window[k];
    }
    rfft(rfft_context, frame, spectrum);
    /* The power spectrum in place of the packed spectrum: bin k at frame[k]. */
    frame[0] = spectrum[0] * spectrum[0];
    frame[half] = spectrum[1] * spectrum[1];
    for (int32_t k = 1; k < half; ++k) {
      const float re = spectrum[2 * k], im = spectrum[2 * k + 1];
      frame[k] = re * re + im * im;
    }
    const float *weights = config->band_weights;
    for (int32_t m = 0; m < config->num_mel_bins; ++m) {
      const float *power = frame + config->band_start[m];
      float energy = 0.0f;
      for (int32_t b = 0; b < config->band_length[m]; ++b) energy += power[b] * weights[b];
      weights += config->band_length[m];
      const float logmel = logf(energy + config->log_offset);
      output[(size_t)m * (size_t)frames + (size_t)t] =
          (logmel + config->normalize_offset) / config->normalize_scale;
    }
  }
  return 0;
}
