/* Direct kernels of the integer-delay synaptic operator (neurodelay/train/native.py).

     y[b, o, t] = sum_i w[o, i] * x[b, i, t - d[o, i]]        (x = 0 before t = 0)

   Plain C, no Python or torch headers: native.py compiles this file with the system C
   compiler, loads it with ctypes (which releases the GIL during a call) and splits the
   batch (or the output channels, for the weight gradient) over threads. Every output
   element is computed by one thread in one fixed order, whatever the thread count.

   Layout: one batch item's source channels are copied into rows of L = Tp + Dm values,
   zero outside the data, so that every read of a delayed window is in bounds and needs
   no test. Tp is T rounded up to the tile width TC (a multiple of 16), Dm the largest
   delay that reaches the output. A tile holds TC consecutive outputs of one channel in
   registers while the sources are summed into it in ascending order (IB sources at a
   time, whose rows stay in the L1 cache).

   Arithmetic: every multiply-add is fma() / fmaf() (one rounding), built with
   -ffp-contract=off, so the result does not depend on the vector width or on the
   compiler's choice to fuse: the same bits on every x86-64 / ARM64 machine.
*/
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define IB 32
#define WB 8

#define DEFINE_KERNELS(real, sfx, FMA)                                                     \
                                                                                           \
/* one batch item: acc[dst][Tp] = sum over active sources k (ascending) of               \
   w[dst, src] * rows[off[dst, src] + t]; off < 0 skips the pair */                       \
static void tiles_##sfx(int TC, const real *rows, const int32_t *act, int n_act,           \
                        const real *w, const int32_t *off, int64_t n_src, int64_t n_dst,   \
                        int64_t Tp, real *acc)                                             \
{                                                                                          \
    real a[128];                                                                           \
    if (n_act == 0) {                                                                      \
        memset(acc, 0, sizeof(real) * (size_t)(n_dst * Tp));                              \
        return;                                                                            \
    }                                                                                      \
    for (int k0 = 0; k0 < n_act; k0 += IB) {                                               \
        int k1 = k0 + IB < n_act ? k0 + IB : n_act;                                        \
        for (int64_t o = 0; o < n_dst; o++) {                                              \
            const real *wo = w + o * n_src;                                                \
            const int32_t *fo = off + o * n_src;                                           \
            for (int64_t t0 = 0; t0 < Tp; t0 += TC) {                                      \
                real *ac = acc + o * Tp + t0;                                              \
                if (k0 == 0) memset(a, 0, sizeof(real) * TC);                             \
                else memcpy(a, ac, sizeof(real) * TC);                                     \
                switch (TC) {                                                              \
                case 16: SUM_##sfx(16); break;                                             \
                case 32: SUM_##sfx(32); break;                                             \
                case 48: SUM_##sfx(48); break;                                             \
                case 64: SUM_##sfx(64); break;                                             \
                case 80: SUM_##sfx(80); break;                                             \
                case 96: SUM_##sfx(96); break;                                             \
                case 112: SUM_##sfx(112); break;                                           \
                default: SUM_##sfx(128); break;                                            \
                }                                                                          \
                memcpy(ac, a, sizeof(real) * TC);                                          \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
}                                                                                          \
                                                                                           \
/* copy batch item b of src (strides sb, sc, st) into rows of L values at column shift;   \
   returns the number of channels with a nonzero value, listed in act */                   \
static int fill_##sfx(const real *src, int64_t sb, int64_t sc, int64_t st, int64_t b,      \
                      int64_t C, int64_t T, int64_t L, int64_t shift, real *rows,          \
                      char *nz, int32_t *act)                                              \
{                                                                                          \
    memset(nz, 0, (size_t)C);                                                              \
    for (int64_t t = 0; t < T; t++) {                                                      \
        const real *s = src + b * sb + t * st;                                             \
        for (int64_t c = 0; c < C; c++) {                                                  \
            real v = s[c * sc];                                                            \
            rows[c * L + shift + t] = v;                                                   \
            nz[c] |= (v != 0);                                                             \
        }                                                                                  \
    }                                                                                      \
    int n = 0;                                                                             \
    for (int64_t c = 0; c < C; c++)                                                        \
        if (nz[c]) act[n++] = (int32_t)c;                                                  \
    return n;                                                                              \
}                                                                                          \
                                                                                           \
/* y (T, B, n_dst) contiguous, batch items [b0, b1):                                      \
   y[t, b, o] = sum_c w[o, c] * rows_b[c][off[o, c] + t], rows_b = src[b] at shift.        \
   Forward: src = x, shift = Dm, off = c * L + Dm - d[o, c].                               \
   Input gradient: src = dL/dy, shift = 0, w = weight^T, off = c * L + d[c, o].            \
   Returns 0, or -1 when out of memory. */                                                 \
int nd_gather_##sfx(const real *src, int64_t sb, int64_t sc, int64_t st, int64_t n_src,    \
                    int64_t shift, const real *w, const int32_t *off, int64_t n_dst,       \
                    real *y, int64_t B, int64_t T, int64_t Dm, int TC, int64_t b0,         \
                    int64_t b1)                                                            \
{                                                                                          \
    int64_t Tp = (T + TC - 1) / TC * TC, L = Tp + Dm;                                      \
    real *rows = calloc((size_t)(n_src * L), sizeof(real));                                \
    real *acc = malloc(sizeof(real) * (size_t)(n_dst * Tp));                               \
    int32_t *act = malloc(sizeof(int32_t) * (size_t)n_src);                                \
    char *nz = malloc((size_t)n_src);                                                      \
    int rc = 0;                                                                            \
    if (!rows || !acc || !act || !nz) { rc = -1; goto done; }                              \
    for (int64_t b = b0; b < b1; b++) {                                                    \
        int n_act = fill_##sfx(src, sb, sc, st, b, n_src, T, L, shift, rows, nz, act);     \
        tiles_##sfx(TC, rows, act, n_act, w, off, n_src, n_dst, Tp, acc);                  \
        for (int64_t t = 0; t < T; t++) {                                                  \
            real *yt = y + (t * B + b) * n_dst;                                            \
            for (int64_t o = 0; o < n_dst; o++) yt[o] = acc[o * Tp + t];                   \
        }                                                                                  \
    }                                                                                      \
done:                                                                                      \
    free(rows); free(acc); free(act); free(nz);                                            \
    return rc;                                                                             \
}                                                                                          \
                                                                                           \
/* Weight gradient, output channels [o0, o1): g[o, i] = sum_b sum_t gy[b, o, t] *          \
   x[b, i, t - d[o, i]]; off = i * L + Dm - d[o, i] (< 0: no term). The batch goes in      \
   chunks of WB items (their rows filled once); within a chunk, four inputs at a time,     \
   each (o, i) is a dot product over the chunk's items (ascending) and Tp steps in 16      \
   lanes, the lanes added in a fixed order and the chunk's sum added to g[o, i] (chunks    \
   ascending). g (n_out, n_in) contiguous, overwritten. Returns 0, -1 when out of
   memory, -2 for an output range outside [0, n_out). */                                 \
int nd_wgrad_##sfx(const real *gy, int64_t gsb, int64_t gso, int64_t gst,                  \
                   const real *x, int64_t xsb, int64_t xsi, int64_t xst, int64_t n_in,     \
                   const int32_t *off, int64_t n_out, real *g, int64_t B, int64_t T,       \
                   int64_t Dm, int TC, int64_t o0, int64_t o1)                             \
{                                                                                          \
    if (o0 < 0 || o0 > o1 || o1 > n_out) return -2;                                       \
    int64_t Tp = (T + TC - 1) / TC * TC, L = Tp + Dm, no = o1 - o0;                        \
    real *rows = calloc((size_t)(WB * n_in * L), sizeof(real));                            \
    real *grs = calloc((size_t)(WB * no * Tp), sizeof(real));                              \
    char *gany = malloc((size_t)(WB * no));                                                \
    char *nzx = malloc((size_t)(WB * n_in + 4));                                           \
    int32_t *act = malloc(sizeof(int32_t) * (size_t)n_in);                                 \
    real *zero = calloc((size_t)Tp, sizeof(real));                                         \
    int rc = 0;                                                                            \
    if (!rows || !grs || !gany || !nzx || !act || !zero) { rc = -1; goto done; }           \
    for (int64_t o = o0; o < o1; o++)                                                      \
        memset(g + o * n_in, 0, sizeof(real) * (size_t)n_in);                              \
    for (int64_t b0 = 0; b0 < B; b0 += WB) {                                               \
        int nb = B - b0 < WB ? (int)(B - b0) : WB;                                         \
        memset(gany, 0, (size_t)(WB * no));                                                \
        for (int bq = 0; bq < nb; bq++) {                                                  \
            fill_##sfx(x, xsb, xsi, xst, b0 + bq, n_in, T, L, Dm,                          \
                       rows + (int64_t)bq * n_in * L, nzx + bq * n_in, act);               \
            for (int64_t t = 0; t < T; t++) {                                              \
                const real *s = gy + (b0 + bq) * gsb + t * gst;                            \
                real *gq = grs + (int64_t)bq * no * Tp + t;                                \
                char *aq = gany + bq * no;                                                 \
                for (int64_t o = o0; o < o1; o++) {                                        \
                    real v = s[o * gso];                                                   \
                    gq[(o - o0) * Tp] = v;                                                 \
                    aq[o - o0] |= (v != 0);                                                \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
        for (int64_t i = 0; i < n_in; i += 4) {                                            \
            int nq = n_in - i < 4 ? (int)(n_in - i) : 4;                                   \
            for (int64_t o = o0; o < o1; o++) {                                            \
                const int32_t *fo = off + o * n_in + i;                                    \
                int32_t f0 = fo[0], f1 = nq > 1 ? fo[1] : -1;                              \
                int32_t f2 = nq > 2 ? fo[2] : -1, f3 = nq > 3 ? fo[3] : -1;                \
                if (f0 < 0 && f1 < 0 && f2 < 0 && f3 < 0) continue;                        \
                real a0[16], a1[16], a2[16], a3[16];                                       \
                memset(a0, 0, sizeof a0); memset(a1, 0, sizeof a1);                        \
                memset(a2, 0, sizeof a2); memset(a3, 0, sizeof a3);                        \
                for (int bq = 0; bq < nb; bq++) {                                          \
                    const char *nzq = nzx + bq * n_in + i;                                 \
                    if (!gany[bq * no + (o - o0)]) continue;                               \
                    if (!(nzq[0] | (nq > 1 && nzq[1]) | (nq > 2 && nzq[2]) | (nq > 3 && nzq[3])))\
                        continue;                                                          \
                    const real *gr = grs + ((int64_t)bq * no + (o - o0)) * Tp;             \
                    const real *rb = rows + (int64_t)bq * n_in * L;                        \
                    const real *p0 = f0 >= 0 ? rb + f0 : zero, *p1 = f1 >= 0 ? rb + f1 : zero;\
                    const real *p2 = f2 >= 0 ? rb + f2 : zero, *p3 = f3 >= 0 ? rb + f3 : zero;\
                    for (int64_t j = 0; j < Tp; j += 16)                                   \
                        for (int v = 0; v < 16; v++) {                                     \
                            real gv = gr[j + v];                                           \
                            a0[v] = FMA(gv, p0[j + v], a0[v]);                             \
                            a1[v] = FMA(gv, p1[j + v], a1[v]);                             \
                            a2[v] = FMA(gv, p2[j + v], a2[v]);                             \
                            a3[v] = FMA(gv, p3[j + v], a3[v]);                             \
                        }                                                                  \
                }                                                                          \
                real *go = g + o * n_in + i;                                               \
                LANES_##sfx(a0, go[0]);                                                    \
                if (nq > 1) LANES_##sfx(a1, go[1]);                                        \
                if (nq > 2) LANES_##sfx(a2, go[2]);                                        \
                if (nq > 3) LANES_##sfx(a3, go[3]);                                        \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
done:                                                                                      \
    free(rows); free(grs); free(gany); free(nzx); free(act); free(zero);                   \
    return rc;                                                                             \
}

/* dst += the 16 lanes of l, added in a fixed order (a tree) */
#define LANES_BODY(l, dst)                                                                 \
    do {                                                                                   \
        for (int v = 0; v < 8; v++) l[v] += l[v + 8];                                      \
        for (int v = 0; v < 4; v++) l[v] += l[v + 4];                                      \
        dst += (l[0] + l[2]) + (l[1] + l[3]);                                              \
    } while (0)
#define LANES_f32(l, dst) LANES_BODY(l, dst)
#define LANES_f64(l, dst) LANES_BODY(l, dst)

/* the summation of one tile: a[0:TC] += w * row[t0 : t0 + TC] over the active sources */
#define SUM_BODY(TCN, FMA)                                                                 \
    for (int k = k0; k < k1; k++) {                                                        \
        int32_t i = act[k], f = fo[i];                                                     \
        if (f < 0) continue;                                                               \
        const real_t wv = wo[i];                                                           \
        const real_t *s = rows + f + t0;                                                   \
        for (int j = 0; j < TCN; j++) a[j] = FMA(wv, s[j], a[j]);                          \
    }

#define real_t float
#define SUM_f32(TCN) SUM_BODY(TCN, fmaf)
DEFINE_KERNELS(float, f32, fmaf)
#undef real_t
#define real_t double
#define SUM_f64(TCN) SUM_BODY(TCN, fma)
DEFINE_KERNELS(double, f64, fma)
#undef real_t

/* ---------------------------------------------------------------------------------------
   Multi-tap direct kernels of the learned-delay convolution (neurodelay/train/dcls_conv.py,
   native.py's multitap_*): every synapse (o, i) has a contiguous range of W taps (W = 16
   or 32) starting at its smallest delay base[o, i] (-1: a synapse without taps), with
   kernel values kr[., ., m] at delay base + m:

       y[b, o, t] = sum_i sum_m kr[o, i, m] * x[b, i, t - base[o, i] - m]

   The input is taken as lists of its nonzero values (nd_spikes_*): binary spikes, mostly
   zero, so the forward and the kernel gradient cost (nonzero inputs) x (fan-out) x W
   multiply-adds instead of B x in x out x T x W. Forward: every nonzero input x[b, i, s]
   adds v * kr[o, i, 0:W] to the output row y[b, o, s + base : s + base + W] of each
   output o (a W-wide vector fma into a zero-padded row that stays in L1, MT_OB output
   rows interleaved so that consecutive updates touch different rows). Kernel gradient:
   gk[o, i, m] = sum_b sum_s v * gy[b, o, s + base + m], W lanes in registers.
   Sum orders: y[b, o, t] over i ascending, then s ascending (one thread per batch item);
   gk[o, i, m] over b ascending, then s ascending (one thread per output channel): results
   do not depend on the thread count. Every multiply-add is one fma().
   --------------------------------------------------------------------------------------- */
#define MT_OB 16
#define MT_BB 1
#define MT_KO 8

/* the forward's loop over one input's nonzero values and the outputs of a block */
#define MT_SPIKES(real, UPDATE)                                                            \
    do {                                                                                   \
        for (int32_t k = 0; k < n; k++) {                                                  \
            int64_t s = ts[k];                                                             \
            real v = vs[k];                                                                \
            for (int o = 0; o < no; o++) UPDATE;                                           \
        }                                                                                  \
    } while (0)

#define DEFINE_MULTITAP(real, sfx, FMA)                                                    \
/* nonzero inputs of batch items [b0, b1): for (b, i), the steps s (ascending) with        \
   x[b, i, s] != 0 in tim[(b * n_in + i) * T + k], their values in val[...], their count   \
   in cnt[b * n_in + i]. */                                                                \
int nd_spikes_##sfx(const real *x, int64_t sb, int64_t si, int64_t st, int64_t n_in,       \
                    int64_t T, int32_t *tim, real *val, int32_t *cnt, int64_t b0,          \
                    int64_t b1)                                                            \
{                                                                                          \
    for (int64_t b = b0; b < b1; b++) {                                                    \
        int32_t *cb = cnt + b * n_in;                                                      \
        memset(cb, 0, sizeof(int32_t) * (size_t)n_in);                                     \
        if (st <= si) {                                                                    \
            for (int64_t i = 0; i < n_in; i++) {                                           \
                const real *r = x + b * sb + i * si;                                       \
                int64_t r0 = (b * n_in + i) * T;                                           \
                int32_t n = 0;                                                             \
                for (int64_t s = 0; s < T; s++) {                                          \
                    real v = r[s * st];                                                    \
                    if (v != 0) { tim[r0 + n] = (int32_t)s; val[r0 + n] = v; n++; }        \
                }                                                                          \
                cb[i] = n;                                                                 \
            }                                                                              \
        } else {                                                                           \
            for (int64_t s = 0; s < T; s++) {                                              \
                const real *r = x + b * sb + s * st;                                       \
                for (int64_t i = 0; i < n_in; i++) {                                       \
                    real v = r[i * si];                                                    \
                    if (v != 0) {                                                          \
                        int64_t k = (b * n_in + i) * T + cb[i]++;                          \
                        tim[k] = (int32_t)s; val[k] = v;                                   \
                    }                                                                      \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
    return 0;                                                                              \
}                                                                                          \
                                                                                           \
static inline void mt_axpy8_##sfx(real *restrict a, real v, const real *restrict k)       \
{                                                                                          \
    _Pragma("omp simd")                                                                    \
    for (int m = 0; m < 8; m++) a[m] = FMA(v, k[m], a[m]);                                 \
}                                                                                          \
static inline void mt_axpy16_##sfx(real *restrict a, real v, const real *restrict k)      \
{                                                                                          \
    _Pragma("omp simd")                                                                    \
    for (int m = 0; m < 16; m++) a[m] = FMA(v, k[m], a[m]);                                \
}                                                                                          \
/* a[0:W] += v * k[0:W], W = 8, 16 or 32 */                                                \
static inline void mt_axpy_##sfx(real *restrict a, real v, const real *restrict k, int W)  \
{                                                                                          \
    if (W == 8) { mt_axpy8_##sfx(a, v, k); return; }                                       \
    mt_axpy16_##sfx(a, v, k);                                                              \
    if (W == 32) mt_axpy16_##sfx(a + 16, v, k + 16);                                       \
}                                                                                          \
                                                                                           \
/* number of nonzero values of x (B, n_in, T), strides sb, si, st */                       \
int64_t nd_count_nonzero_##sfx(const real *x, int64_t sb, int64_t si, int64_t st,          \
                               int64_t B, int64_t n_in, int64_t T)                         \
{                                                                                          \
    int64_t n = 0;                                                                         \
    for (int64_t b = 0; b < B; b++)                                                        \
        for (int64_t i = 0; i < n_in; i++)                                                 \
            for (int64_t s = 0; s < T; s++) n += x[b * sb + i * si + s * st] != 0;         \
    return n;                                                                              \
}                                                                                          \
                                                                                           \
/* tap ranges of synapses [s0, s1): g (n_syn, window) the normalised Gaussians; a tap is   \
   used where g > 0 and g >= floor; base = the smallest delay (window - 1 - last used      \
   tap) or -1, span = last - first used tap + 1 (0 without taps). */                       \
int nd_mt_plan_##sfx(const real *g, int64_t window, double floor, int32_t *base,           \
                     int32_t *span, int64_t s0, int64_t s1)                                \
{                                                                                          \
    for (int64_t q = s0; q < s1; q++) {                                                    \
        const real *r = g + q * window;                                                    \
        int64_t first = -1, last = -1;                                                     \
        for (int64_t n = 0; n < window; n++)                                               \
            if (r[n] > 0 && r[n] >= floor) { if (first < 0) first = n; last = n; }         \
        base[q] = last >= 0 ? (int32_t)(window - 1 - last) : -1;                           \
        span[q] = last >= 0 ? (int32_t)(last - first + 1) : 0;                             \
    }                                                                                      \
    return 0;                                                                              \
}                                                                                          \
                                                                                           \
/* kernel values of inputs [i0, i1) in the forward's layout: kr[i, o, m] = k[o, i,         \
   window - 1 - base[o, i] - m] for m < span[o, i], else 0; base_io[i, o] = base[o, i].    \
   k (n_out, n_in, window) contiguous. */                                                  \
int nd_mt_taps_##sfx(const real *k, int64_t n_out, int64_t n_in, int64_t window,           \
                     const int32_t *base, const int32_t *span, int W, real *kr,            \
                     int32_t *base_io, int64_t i0, int64_t i1)                             \
{                                                                                          \
    for (int64_t i = i0; i < i1; i++)                                                      \
        for (int64_t o = 0; o < n_out; o++) {                                              \
            int32_t bs = base[o * n_in + i], sp = span[o * n_in + i];                      \
            const real *ko = k + (o * n_in + i) * window + window - 1 - bs;                \
            real *d = kr + (i * n_out + o) * W;                                            \
            base_io[i * n_out + o] = bs < 0 ? 0 : bs;      /* no taps: kr = 0 */            \
            for (int m = 0; m < W; m++) d[m] = m < sp ? ko[-m] : 0;                        \
        }                                                                                  \
    return 0;                                                                              \
}                                                                                          \
                                                                                           \
/* forward, batch items [b0, b1): y (T, B, n_out) contiguous; kr (n_in, n_out, W), base     \
   (n_in, n_out) >= 0 (a synapse without taps has kr 0); Lp >= T + max(base) + W. Returns 0, -1: out of memory,     \
   -2: bad width. */                                                                       \
int nd_mt_fwd_##sfx(const int32_t *tim, const real *val, const int32_t *cnt, int64_t n_in, \
                    int64_t T, const real *kr, const int32_t *base, int64_t n_out, int W,  \
                    int64_t Lp, real *y, int64_t B, int64_t b0, int64_t b1)                \
{                                                                                          \
    if (W != 8 && W != 16 && W != 32) return -2;                                                     \
    real *acc = malloc(sizeof(real) * (size_t)(MT_BB * MT_OB * Lp));                       \
    if (!acc) return -1;                                                                   \
    for (int64_t bb = b0; bb < b1; bb += MT_BB) {                                          \
        int nb = b1 - bb < MT_BB ? (int)(b1 - bb) : MT_BB;                                 \
        for (int64_t o0 = 0; o0 < n_out; o0 += MT_OB) {                                    \
            int no = n_out - o0 < MT_OB ? (int)(n_out - o0) : MT_OB;                       \
            memset(acc, 0, sizeof(real) * (size_t)(nb * MT_OB * Lp));                      \
            for (int64_t i = 0; i < n_in; i++) {                                           \
                const real *ki = kr + (i * n_out + o0) * W;                                \
                const int32_t *bi = base + i * n_out + o0;                                 \
                for (int q = 0; q < nb; q++) {                                             \
                    int64_t r = (bb + q) * n_in + i;                                       \
                    int32_t n = cnt[r];                                                    \
                    if (!n) continue;                                                      \
                    const int32_t *ts = tim + r * T;                                       \
                    const real *vs = val + r * T;                                          \
                    real *aq = acc + (int64_t)q * MT_OB * Lp;                              \
                    if (W == 8)                                                            \
                        MT_SPIKES(real, mt_axpy8_##sfx(aq + o * Lp + s + bi[o], v, ki + o * 8));\
                    else                                                                   \
                        MT_SPIKES(real, mt_axpy_##sfx(aq + o * Lp + s + bi[o], v, ki + o * W,   \
                                                      W));                                 \
                }                                                                          \
            }                                                                              \
            for (int q = 0; q < nb; q++)                                                   \
                for (int64_t t = 0; t < T; t++) {                                          \
                    real *yt = y + (t * B + bb + q) * n_out + o0;                          \
                    const real *aq = acc + (int64_t)q * MT_OB * Lp + t;                    \
                    for (int o = 0; o < no; o++) yt[o] = aq[o * Lp];                       \
                }                                                                          \
        }                                                                                  \
    }                                                                                      \
    free(acc);                                                                             \
    return 0;                                                                              \
}                                                                                          \
                                                                                           \
/* kernel gradient, output channels [o0, o1): gk (n_out, n_in, window) contiguous, at the  \
   tap of delay d = base[o, i] + m (m < W, d < window): sum_b sum_s val * gy[b, o, s + d]  \
   (gy = 0 from T on), 0 at the other taps; base (n_out, n_in). Returns 0, -1: out of      \
   memory, -2: bad width or range. */                                                      \
int nd_mt_kgrad_##sfx(const real *gy, int64_t gsb, int64_t gso, int64_t gst,               \
                      const int32_t *tim, const real *val, const int32_t *cnt,             \
                      int64_t n_in, int64_t T, const int32_t *base, int64_t n_out, int W,  \
                      int64_t window, int64_t Lp, real *gk, int64_t B, int64_t o0,         \
                      int64_t o1)                                                          \
{                                                                                          \
    if ((W != 8 && W != 16 && W != 32) || o0 < 0 || o0 > o1 || o1 > n_out) return -2;               \
    real *rows = calloc((size_t)(MT_KO * B * Lp), sizeof(real));                           \
    if (!rows) return -1;                                                                  \
    for (int64_t oa = o0; oa < o1; oa += MT_KO) {                                          \
        int no = o1 - oa < MT_KO ? (int)(o1 - oa) : MT_KO;                                 \
        for (int64_t b = 0; b < B; b++)                                                    \
            for (int64_t t = 0; t < T; t++) {                                              \
                const real *g = gy + b * gsb + t * gst + oa * gso;                         \
                for (int o = 0; o < no; o++) rows[((int64_t)o * B + b) * Lp + t] = g[o * gso];\
            }                                                                              \
        for (int64_t i = 0; i < n_in; i++) {                                               \
            real a[MT_KO][32];                                                             \
            memset(a, 0, sizeof a);                                                        \
            int32_t bs[MT_KO];                                                             \
            for (int o = 0; o < no; o++) bs[o] = base[(oa + o) * n_in + i];                \
            for (int64_t b = 0; b < B; b++) {                                              \
                int64_t r = b * n_in + i;                                                  \
                int32_t n = cnt[r];                                                        \
                if (!n) continue;                                                          \
                const int32_t *ts = tim + r * T;                                           \
                const real *vs = val + r * T;                                              \
                for (int32_t k = 0; k < n; k++) {                                          \
                    int64_t s = ts[k];                                                     \
                    real v = vs[k];                                                        \
                    for (int o = 0; o < no; o++) {                                         \
                        if (bs[o] < 0) continue;                                           \
                        mt_axpy_##sfx(a[o], v, rows + ((int64_t)o * B + b) * Lp + s + bs[o],\
                                      W);                                                  \
                    }                                                                      \
                }                                                                          \
            }                                                                              \
            for (int o = 0; o < no; o++) {                                                 \
                real *d = gk + ((oa + o) * n_in + i) * window;                             \
                memset(d, 0, sizeof(real) * (size_t)window);                               \
                for (int m = 0; m < W && bs[o] >= 0 && bs[o] + m < window; m++)            \
                    d[window - 1 - bs[o] - m] = a[o][m];                                   \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
    free(rows);                                                                            \
    return 0;                                                                              \
}

/* out[0] = max span, out[1] = max base, out[2] = sum of spans over n synapses */
int nd_mt_plan_stats(const int32_t *base, const int32_t *span, int64_t n, int64_t *out)
{
    int64_t ms = 0, mb = 0, sum = 0;
    for (int64_t q = 0; q < n; q++) {
        if (span[q] > ms) ms = span[q];
        if (base[q] > mb) mb = base[q];
        sum += span[q];
    }
    out[0] = ms; out[1] = mb; out[2] = sum;
    return 0;
}

DEFINE_MULTITAP(float, f32, fmaf)
DEFINE_MULTITAP(double, f64, fma)

/* version of this file's interface, checked by native.py after loading */
int nd_abi_version(void) { return 3; }
