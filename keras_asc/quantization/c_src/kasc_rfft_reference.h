/* A plain real FFT for hosts and tests, in the packed layout of kasc_rfft_fn (kasc_logmel.h).
 * fft_length must be a power of two (>= 4); twiddle factors and sums in double precision.
 * A device build uses its own FFT (CMSIS-DSP's arm_rfft_fast_f32) instead. */
#ifndef KASC_RFFT_REFERENCE_H
#define KASC_RFFT_REFERENCE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kasc_rfft_reference kasc_rfft_reference;

/* NULL when fft_length is not a power of two >= 4 or memory runs out. */
kasc_rfft_reference *kasc_rfft_reference_new(int32_t fft_length);
void kasc_rfft_reference_free(kasc_rfft_reference *plan);
/* A kasc_rfft_fn: context is the plan. */
void kasc_rfft_reference_run(void *plan, float *frame, float *spectrum);

#ifdef __cplusplus
}
#endif

#endif /* KASC_RFFT_REFERENCE_H */
