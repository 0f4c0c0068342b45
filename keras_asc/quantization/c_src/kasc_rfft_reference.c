/* A plain real FFT for hosts and tests: see kasc_rfft_reference.h.
 *
 * The N real samples are read as N/2 complex ones z[m] = x[2m] + i x[2m + 1], transformed by
 * an iterative radix-2 complex FFT, and split into the spectrum of x:
 * X[k] = (Z[k] + conj Z[N/2 - k]) / 2 - i exp(-2 pi i k / N) (Z[k] - conj Z[N/2 - k]) / 2.
 * Written here because the front-end must build with nothing but a C99 compiler; a device
 * uses its vendor's FFT through the kasc_rfft_fn hook. */
#include "kasc_rfft_reference.h"

#include <math.h>
#include <stdlib.h>

struct kasc_rfft_reference {
  int32_t n;
  double *cos_table; /* cos(2 pi k / n), k < n / 2 */
  double *sin_table;
  double *re;
  double *im;
};

kasc_rfft_reference *kasc_rfft_reference_new(int32_t fft_length) {
  if (fft_length < 4 || (fft_length & (fft_length - 1)) != 0) return NULL;
  kasc_rfft_reference *plan = (kasc_rfft_reference *)calloc(1, sizeof(*plan));
  if (plan == NULL) return NULL;
  plan->n = fft_length;
  const int32_t half = fft_length / 2;
  plan->cos_table = (double *)malloc(sizeof(double) * (size_t)half);
  plan->sin_table = (double *)malloc(sizeof(double) * (size_t)half);
  plan->re = (double *)malloc(sizeof(double) * (size_t)half);
  plan->im = (double *)malloc(sizeof(double) * (size_t)half);
  if (!plan->cos_table || !plan->sin_table || !plan->re || !plan->im) {
    kasc_rfft_reference_free(plan);
    return NULL;
  }
  const double pi = 3.14159265358979323846;
  for (int32_t k = 0; k < half; ++k) {
    plan->cos_table[k] = cos(2.0 * pi * (double)k / (double)fft_length);
    plan->sin_table[k] = sin(2.0 * pi * (double)k / (double)fft_length);
  }
  return plan;
}

void kasc_rfft_reference_free(kasc_rfft_reference *plan) {
  if (plan == NULL) return;
  free(plan->cos_table);
  free(plan->sin_table);
  free(plan->re);
  free(plan->im);
  free(plan);
}

/* In-place radix-2 FFT of m complex points; twiddle k of m points is table entry k * n / m /
 * ... expressed through the table of n real points (stride n / m / 2 * 2). */
static void complex_fft(kasc_rfft_reference *plan, int32_t m) {
  double *re = plan->re, *im = plan->im;
  for (int32_t i = 1, j = 0; i < m; ++i) { /* bit reversal */
    int32_t bit = m >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j |= bit;
    if (i < j) {
      double t = re[i]; re[i] = re[j]; re[j] = t;
      t = im[i]; im[i] = im[j]; im[j] = t;
    }
  }
  for (int32_t size = 2; size <= m; size <<= 1) {
    const int32_t step = plan->n / size; /* exp(-2 pi i k / size) = table[k * n / size] */
    const int32_t h = size / 2;
    for (int32_t start = 0; start < m; start += size) {
      for (int32_t k = 0; k < h; ++k) {
        const double c = plan->cos_table[k * step], s = plan->sin_table[k * step];
        const int32_t a = start + k, b = a + h;
        const double tr = re[b] * c + im[b] * s;
        const double ti = im[b] * c - re[b] * s;
        re[b] = re[a] - tr;
        im[b] = im[a] - ti;
        re[a] += tr;
        im[a] += ti;
      }
    }
  }
}

void kasc_rfft_reference_run(void *context, float *frame, float *spectrum) {
  kasc_rfft_reference *plan = (kasc_rfft_reference *)context;
  const int32_t n = plan->n, half = n / 2;
  for (int32_t m = 0; m < half; ++m) {
    plan->re[m] = frame[2 * m];
    plan->im[m] = frame[2 * m + 1];
  }
  complex_fft(plan, half);
  const double *re = plan->re, *im = plan->im;
  spectrum[0] = (float)(re[0] + im[0]);
  spectrum[1] = (float)(re[0] - im[0]);
  for (int32_t k = 1; k < half; ++k) {
    const double ar = re[k], ai = im[k];
    const double br = re[half - k], bi = -im[half - k]; /* conj Z[N/2 - k] */
    const double er = 0.5 * (ar + br), ei = 0.5 * (ai + bi);
    const double dr = 0.5 * (ar - br), di = 0.5 * (ai - bi);
    /* -i exp(-2 pi i k / n) (dr + i di), with exp(-i t) = cos t - i sin t */
    const double c = plan->cos_table[k], s = plan->sin_table[k];
    const double wr = -s, wi = -c; /* -i (c - i s) = -s - i c */
    spectrum[2 * k] = (float)(er + wr * dr - wi * di);
    spectrum[2 * k + 1] = (float)(ei + wr * di + wi * dr);
  }
}
