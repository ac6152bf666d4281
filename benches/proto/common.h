// What the prototypes in this folder share: fc1's shape, the seeded weights
// (random values, pruned at random to a density or to a 2:4 pattern), the
// activations, and the dense AVX-512 matrix-vector product they are
// measured against (W^T packed in rows of 304, 19 vectors of 16 outputs).
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#define R 300
#define C 784
#define RP 304
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
// W[R*C] pruned to `dens` at random, or to 2 of every 4 along a row (nm).
static void make_weights(float *W, double dens, int nm) {
  srand(1);
  for (int i = 0; i < R * C; i++) W[i] = ((rand() % 2000) - 1000) / 1000.0f;
  for (int r = 0; r < R; r++)
    for (int c = 0; c < C; c++) {
      if (nm) {
        static const int pat[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
        int g = c / 4, k = c % 4, p = (r * 7 + g * 3) % 6;
        if (k != pat[p][0] && k != pat[p][1]) W[r * C + c] = 0;
      } else if ((rand() % 10000) >= dens * 10000)
        W[r * C + c] = 0;
    }
}
static void make_input(float *x) {
  for (int c = 0; c < C; c++) x[c] = (c % 13) * 0.1f - 0.5f;
}
static void pack_dense(const float *W, float *WT) {
  for (int c = 0; c < C; c++)
    for (int r = 0; r < RP; r++) WT[c * RP + r] = r < R ? W[r * C + c] : 0;
}
// y[r] = sum over c of W[r, c] x[c], from the packed W^T.
static void dense_matvec(const float *WT, const float *x, float *y) {
  __m512 acc[19];
  for (int v = 0; v < 19; v++) acc[v] = _mm512_setzero_ps();
  for (int c = 0; c < C; c++) {
    __m512 b = _mm512_set1_ps(x[c]);
    for (int v = 0; v < 19; v++) acc[v] = _mm512_fmadd_ps(b, _mm512_load_ps(&WT[c * RP + v * 16]), acc[v]);
  }
  for (int v = 0; v < 19; v++) _mm512_storeu_ps(&y[v * 16], acc[v]);
}
