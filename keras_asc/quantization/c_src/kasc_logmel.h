/* Log-mel front-end of keras-asc int8 models, in portable C99.
 *
 * Computes what keras_asc.quantization.frontend.frontend_numpy computes (the NumPy reference):
 * pre-emphasis y[n] = x[n + 1] - a x[n] (when a != 0), reflect padding by fft_length / 2 on
 * both sides, frames of fft_length samples every hop_length samples times the window, power
 * spectrum |rfft|^2, the sparse mel bank, log(mel + log_offset), then
 * (x + normalize_offset) / normalize_scale. The output is (num_mel_bins, frames), mel-major:
 * the layout of the int8 model's (1, num_mel_bins, frames, 1) input.
 *
 * The FFT is a hook: a device build passes its own real FFT (for example CMSIS-DSP's
 * arm_rfft_fast_f32, which supports 4096 points); kasc_rfft_reference.c is a plain one for
 * hosts and tests. Memory: no allocation; the caller gives a work buffer of
 * 2 * fft_length floats.
 */
#ifndef KASC_LOGMEL_H
#define KASC_LOGMEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A real FFT of fft_length points. It reads frame[0 .. fft_length - 1] (and may overwrite
 * it) and writes the spectrum packed as CMSIS-DSP's arm_rfft_fast_f32 does:
 * spectrum[0] = Re X[0], spectrum[1] = Re X[fft_length / 2], and for 0 < k < fft_length / 2
 * spectrum[2k] = Re X[k], spectrum[2k + 1] = Im X[k] (X[k] = sum_n x[n] exp(-2 pi i k n / N)).
 * A CMSIS-DSP build: void rfft(void *s, float *in, float *out)
 *                    { arm_rfft_fast_f32((arm_rfft_fast_instance_f32 *)s, in, out, 0); } */
typedef void (*kasc_rfft_fn)(void *context, float *frame, float *spectrum);

typedef struct {
  int32_t sampling_rate;
  int32_t fft_length;     /* a power of two for kasc_rfft_reference */
  int32_t hop_length;
  int32_t num_mel_bins;
  float pre_emphasis;     /* 0: none */
  float log_offset;
  float normalize_offset;
  float normalize_scale;
  const float *window;        /* fft_length values: the window centred in the frame */
  const int32_t *band_start;  /* num_mel_bins: first FFT bin of each band */
  const int32_t *band_length; /* num_mel_bins: FFT bins of each band */
  const float *band_weights;  /* sum(band_length): the bands' weights, band after band */
} kasc_logmel_config;

/* Frames made from num_samples input samples. */
int32_t kasc_logmel_frames(const kasc_logmel_config *config, int32_t num_samples);

/* Writes num_mel_bins * kasc_logmel_frames(config, num_samples) floats to output (mel-major).
 * work: 2 * fft_length floats. Returns 0, or -1 when the clip is too short (it must be longer
 * than fft_length / 2 samples after pre-emphasis) or an argument is NULL. */
int kasc_logmel(const kasc_logmel_config *config, const float *waveform, int32_t num_samples,
                float *output, float *work, kasc_rfft_fn rfft, void *rfft_context);

#ifdef __cplusplus
}
#endif

#endif /* KASC_LOGMEL_H */
