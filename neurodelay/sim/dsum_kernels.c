/* The simulators' delayed sum (neurodelay/sim/dsum.py):

       S[b, t, o] = sum over the synapses (i, d, w) of output o of  w * x[b, t - d, i]

   (x = 0 before t = 0; only synapses with w != 0 and d < T are listed). One fused
   multiply-add per synapse and step: the flops of one dense layer, where a product per
   distinct delay costs that many dense layers.

   Plain C, no Python headers: neurodelay/cbuild.py compiles it (-ffp-contract=off) and
   loads it with ctypes; dsum.py splits the batch items over threads. Each output
   element is summed by one thread over its synapses in the listed order (ascending i)
   with fma/fmaf, one rounding each: the result depends neither on the thread count nor
   on the vector width.

   Per batch item: its input transposed into rows of P zeros, T steps and TT zeros
   (P = the longest listed delay), so the delayed window of synapse (i, d) is the
   contiguous row i from P - d; inputs whose row is all zero are skipped; outputs are
   summed TT steps at a time in a local tile. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TT 64

#define DEFINE_DSUM(real, acc_t, sfx, FMA)                                                        \
/* x[b, t, i] at x + b * xsb + t * xst + i, synapse lists optr (n_out + 1), idx / dly       \
   (int32) and val in CSR by output; S[b, t, o] at S + b * ssb + t * sst + o, written for   \
   batch items [b0, b1). Returns 0, -1 when out of memory, -2 for a listed input or delay \
   out of range. */                                                                        \
int nd_dsum_##sfx(const real *x, int64_t xsb, int64_t xst,  int64_t T, int64_t n_in,         \
                  const int64_t *optr, const int32_t *idx, const int32_t *dly,             \
                  const real *val, int64_t n_out, int64_t P, real *S, int64_t ssb,         \
                  int64_t sst, int64_t b0, int64_t b1)                                      \
{                                                                                          \
    int64_t row = P + T + TT;                                                              \
    for (int64_t p = 0; p < optr[n_out]; p++)                                              \
        if (dly[p] < 0 || dly[p] > P || idx[p] < 0 || idx[p] >= n_in) return -2;          \
    real *xt = calloc((size_t)(n_in * row), sizeof(real));                                 \
    unsigned char *live = malloc((size_t)(n_in > 0 ? n_in : 1));                           \
    int rc = 0;                                                                            \
    if (!xt || !live) { rc = -1; goto done; }                                              \
    for (int64_t b = b0; b < b1; b++) {                                                    \
        const real *xr = x + b * xsb;                                                \
        memset(live, 0, (size_t)n_in);                                                     \
        for (int64_t t = 0; t < T; t++)                                                    \
            for (int64_t i = 0; i < n_in; i++) {                                           \
                real v = xr[t * xst + i];                                                 \
                xt[i * row + P + t] = v;                                                   \
                live[i] |= v != 0;                                                         \
            }                                                                              \
        real *Sb = S + b * ssb;                                                     \
        for (int64_t o = 0; o < n_out; o++) {                                              \
            for (int64_t t0 = 0; t0 < T; t0 += TT) {                                       \
                acc_t acc[TT];                                                             \
                for (int u = 0; u < TT; u++) acc[u] = 0;                                   \
                for (int64_t p = optr[o]; p < optr[o + 1]; p++) {                          \
                    if (!live[idx[p]]) continue;                                           \
                    const real *src = xt + idx[p] * row + P - dly[p] + t0;                 \
                    const acc_t w = val[p];                                                \
                    for (int u = 0; u < TT; u++) acc[u] = FMA(w, (acc_t)src[u], acc[u]);          \
                }                                                                          \
                int64_t nt = T - t0 < TT ? T - t0 : TT;                                    \
                for (int64_t u = 0; u < nt; u++) Sb[(t0 + u) * sst + o] = (real)acc[u];       \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
done:                                                                                      \
    free(xt); free(live);                                                                  \
    return rc;                                                                             \
}

DEFINE_DSUM(float, float, f32, fmaf)
DEFINE_DSUM(float, double, f32d, fma)
DEFINE_DSUM(double, double, f64, fma)

#define DEFINE_RECUR(real, sfx)                                                             \
/* The membrane recursion of a recurrent "lif" layer (floatsim.recurrent_dynamics), one    \
   batch item at a time, items [b0, b1):                                                   \
       J = J * cdecay ; J = J + (S[t] + pending[t]) ; u = u * decay ; u = u + (J + bias)    \
       spike where u >= thr, then u = reset ; S[t] = u                                     \
   then every spike of j at t adds the recurrent weight w of each synapse (i, e) of        \
   column j (cptr (n + 1), ridx / rdel int32, rval; in the listed order) to pending       \
   t + e < T (a ring of `slots` > max e rows). The same IEEE operations in the same order \
   as the numpy loop except the pending sums (spike order, not a matrix product).         \
   S (B, T, n) is overwritten with u; spikes (B, T, n) bytes. Returns 0, -1 when out of   \
   memory. */                                                                             \
int nd_recur_##sfx(real *S, int64_t T, int64_t n, const int64_t *cptr, const int32_t *ridx, \
                   const int32_t *rdel, const real *rval, int64_t slots, real decay,        \
                   real cdecay, real thr, real reset, const real *bias,                     \
                   unsigned char *spikes, int64_t b0, int64_t b1)                           \
{                                                                                           \
    real *J = malloc(sizeof(real) * (size_t)n), *u = malloc(sizeof(real) * (size_t)n);    \
    double *pend = malloc(sizeof(double) * (size_t)(slots * n));                          \
    int rc = 0;                                                                             \
    if (!J || !u || !pend) { rc = -1; goto done; }                                          \
    for (int64_t b = b0; b < b1; b++) {                                                     \
        memset(J, 0, sizeof(real) * (size_t)n);                                             \
        memset(u, 0, sizeof(real) * (size_t)n);                                             \
        memset(pend, 0, sizeof(double) * (size_t)(slots * n));                              \
        for (int64_t t = 0; t < T; t++) {                                                   \
            real *St = S + (b * T + t) * n;                                                 \
            double *p = pend + (t % slots) * n;                                             \
            unsigned char *sp = spikes + (b * T + t) * n;                                   \
            for (int64_t i = 0; i < n; i++) {                                               \
                J[i] = J[i] * cdecay;                                                       \
                J[i] = J[i] + (St[i] + (real)p[i]);                                         \
                p[i] = 0;                                                                   \
                u[i] = u[i] * decay;                                                        \
                u[i] = u[i] + (J[i] + bias[i]);                                             \
                unsigned char f = u[i] >= thr;                                              \
                if (f) u[i] = reset;                                                        \
                sp[i] = f;                                                                  \
                St[i] = u[i];                                                               \
            }                                                                               \
            for (int64_t j = 0; j < n; j++) {                                               \
                if (!sp[j]) continue;                                                       \
                for (int64_t q = cptr[j]; q < cptr[j + 1]; q++) {                           \
                    int64_t ta = t + rdel[q];                                               \
                    if (ta < T) pend[(ta % slots) * n + ridx[q]] += (double)rval[q];        \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
done:                                                                                       \
    free(J); free(u); free(pend);                                                           \
    return rc;                                                                              \
}

DEFINE_RECUR(float, f32)
DEFINE_RECUR(double, f64)

/* version of this file's interface, checked by cbuild.py after loading */
int nd_abi_version(void) { return 3; }
