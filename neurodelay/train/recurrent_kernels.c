/* Compiled time loop of the recurrent LIF layer (neurodelay/train/recurrent.py).

   x[t, b, i] = cur[t, b, i] + sum_{k, j} K[k, j, i] s[t - (span - k), b, j]
   (K = the flattened kernel kflat (m, n, n): row (k, j) holds the weights of the synapses
   i <- j at delay span - k >= 1), then the LIF step of recurrent.py's torch loop.

   Plain C, no Python or torch headers: native.py compiles it with the system C compiler and
   loads it with ctypes (the GIL is released during a call); recurrent.py splits the batch
   (forward, input gradient) or the neurons i (kernel gradient) over threads. Every output
   element is computed by one thread in one fixed order whatever the thread count or the
   vector width: multiply-adds are fma() / fmaf() (one rounding), the file is built with
   -ffp-contract=off, and batch items never share a sum.

   Forward (event-driven): FG batch items at a time, their spikes as bit masks; the current
   of item g at t sums the kernel rows (k, j) of the spikes of j at t - (span - k), k then
   j ascending; a row read once serves every item of the group that holds its spike.

   Input gradient (backward in time, LB batch items at a time in lanes): the surrogate
   gradient step as the torch loop's, then the gradient reaching the spikes of
   t - (span - k) through the recurrent synapses, g[t - span + k, j, :] +=
   sum_i K[k, j, i] gx[t, i, :], over the nonzero kernel entries only: rows in groups of RG
   taps sharing the neuron index i (one load of gx[t, i, :] serves RG rows), entries in
   column blocks of CB neurons (the block of gx[t] stays in L1).

   Kernel gradient (event-driven): tiles of IT neurons i; per batch item its gradient tile
   over all steps (L1), and for every spike of j at t' the rows (k, j) gain
   gx[t' + span - k, tile], 8 (then 4, then 1) rows k at a time in registers (nr_kgrad,
   every tap). nr_kgrad_band: only each synapse's band of taps (the taps whose gradient
   the kernel's backward uses, nr_band), in chunks of 8 taps: the tile's gradient kept
   reversed in time makes a spike's 8 taps 8 consecutive entries, one vector add.
*/
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FG 32
#define CB 64
#define RG 4
#define IT 16

/* GCC at -O3 would unroll-and-jam the sparse product's loop over the kernel entries
   into a scalar loop over the lanes (several times slower); keep its vector form */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-loop-unroll-and-jam", "no-loop-interchange")
#endif

#define DEFINE_SPIKE_LISTS(real, sfx)                                                      \
/* the spikes of (b, j) as lists of steps: ptr (B * n + 1), tim (steps ascending per       \
   (b, j)); both malloc'd here (freed by the caller, also on failure). Returns 0, -1       \
   when out of memory. */                                                                  \
static int nr_spike_lists_##sfx(const real *spikes, int64_t T, int64_t B, int64_t n,       \
                                int32_t **ptr_out, int32_t **tim_out)                      \
{                                                                                          \
    int32_t *ptr = calloc((size_t)(B * n + 1), sizeof(int32_t));                           \
    int32_t *fill = malloc(sizeof(int32_t) * (size_t)(B * n + 1));                         \
    int32_t *tim = NULL;                                                                   \
    *ptr_out = ptr;                                                                        \
    *tim_out = NULL;                                                                       \
    if (!ptr || !fill) { free(fill); return -1; }                                          \
    for (int64_t t = 0; t < T; t++)                                                        \
        for (int64_t b = 0; b < B; b++) {                                                  \
            const real *sp = spikes + (t * B + b) * n;                                     \
            for (int64_t j = 0; j < n; j++) ptr[b * n + j + 1] += sp[j] != 0;              \
        }                                                                                  \
    for (int64_t r = 0; r < B * n; r++) ptr[r + 1] += ptr[r];                              \
    tim = malloc(sizeof(int32_t) * (size_t)(ptr[B * n] + 1));                              \
    if (!tim) { free(fill); return -1; }                                                   \
    memcpy(fill, ptr, sizeof(int32_t) * (size_t)(B * n));                                  \
    for (int64_t t = 0; t < T; t++)                                                        \
        for (int64_t b = 0; b < B; b++) {                                                  \
            const real *sp = spikes + (t * B + b) * n;                                     \
            for (int64_t j = 0; j < n; j++)                                                \
                if (sp[j] != 0) tim[fill[b * n + j]++] = (int32_t)t;                       \
        }                                                                                  \
    free(fill);                                                                            \
    *tim_out = tim;                                                                        \
    return 0;                                                                              \
}

#define DEFINE_RECURRENT(real, sfx, FMA)                                                   \
                                                                                           \
/* spikes, states (-h before the reset; NULL: not kept) (T, B, n) contiguous, batch items  \
   [b0, b1), FG at a time: the spikes of the group are bit masks (bit g: item g fired), so \
   a kernel row read once serves every item of the group that holds its spike. Item g's   \
   current at t is the sum of the rows (k, j) (k, then j ascending) of the spikes of      \
   t - (span - k), the same order whatever the grouping; rownz (m * n): row (k, j) has a  \
   nonzero entry (its count of them). Returns 0, -1 when out of memory. */                \
int nr_forward_##sfx(const real *cur, const real *kflat, const int64_t *rownz, int64_t T,  \
                     int64_t B, int64_t n, int64_t m, int64_t span, real tau, real th,     \
                     real *spikes, real *states, int64_t b0, int64_t b1)                   \
{                                                                                          \
    real *acc = malloc(sizeof(real) * (size_t)(FG * n));                                   \
    real *v = malloc(sizeof(real) * (size_t)(FG * n));                                     \
    uint32_t *msk = malloc(sizeof(uint32_t) * (size_t)(T * n));                            \
    int rc = 0;                                                                            \
    if (!acc || !v || !msk) { rc = -1; goto done; }                                        \
    for (int64_t ba = b0; ba < b1; ba += FG) {                                             \
        int ng = b1 - ba < FG ? (int)(b1 - ba) : FG;                                       \
        memset(v, 0, sizeof(real) * (size_t)(FG * n));                                     \
        memset(msk, 0, sizeof(uint32_t) * (size_t)(T * n));                                \
        for (int64_t t = 0; t < T; t++) {                                                  \
            memset(acc, 0, sizeof(real) * (size_t)(FG * n));                               \
            for (int64_t k = 0; k < m; k++) {                                              \
                int64_t ts = t - (span - k);                                               \
                if (ts < 0) continue;                                                      \
                const uint32_t *mk = msk + ts * n;                                         \
                for (int64_t j = 0; j < n; j++) {                                          \
                    uint32_t bits = mk[j];                                                 \
                    if (!bits || !rownz[k * n + j]) continue;                              \
                    const real *kr = kflat + (k * n + j) * n;                              \
                    while (bits) {                                                         \
                        real *a = acc + (int64_t)__builtin_ctz(bits) * n;                  \
                        bits &= bits - 1;                                                  \
                        for (int64_t i = 0; i < n; i++) a[i] += kr[i];                     \
                    }                                                                      \
                }                                                                          \
            }                                                                              \
            uint32_t *mt = msk + t * n;                                                    \
            for (int g = 0; g < ng; g++) {                                                 \
                int64_t o = (t * B + ba + g) * n;                                          \
                real *a = acc + g * n, *vg = v + g * n, *sp = spikes + o;                  \
                const real *c = cur + o;                                                   \
                for (int64_t i = 0; i < n; i++) {                                          \
                    real x = c[i] + a[i];                                                  \
                    real nh = vg[i] - vg[i] / tau;                                         \
                    nh = nh - x;                                                           \
                    sp[i] = nh <= -th ? (real)1 : (real)0;                                 \
                    mt[i] |= (uint32_t)(nh <= -th) << g;                                   \
                    vg[i] = nh > -th ? nh : (real)0;                                       \
                    a[i] = nh;                                                             \
                }                                                                          \
                if (states) memcpy(states + o, a, sizeof(real) * (size_t)n);               \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
done:                                                                                      \
    free(acc); free(v); free(msk);                                                         \
    return rc;                                                                             \
}                                                                                          \
                                                                                           \
/* kflat (m * n, n) for the input gradient: its rows in groups of RG taps, row group       \
   (q, j) = rows (q * RG + u, j), u < RG (beyond m: zero), kept where any of the group's  \
   entries at neuron i is nonzero: cols (i) and vals (RG per entry, zeros included), in    \
   column blocks of CB neurons, block c, group g = q * n + j at bptr[c * G * n + g] ..     \
   bptr[c * G * n + g + 1] (ascending i), G = ceil(m / RG); bptr (ceil(n / CB) * G * n +  \
   1) is filled here, cols and vals must hold G * n * n entries. Returns 0. */            \
int nr_csr_##sfx(const real *kflat, int64_t m, int64_t n, int64_t *bptr, uint16_t *cols,   \
                 real *vals)                                                               \
{                                                                                          \
    int64_t ncb = (n + CB - 1) / CB, G = (m + RG - 1) / RG, rows = G * n, p = 0;           \
    for (int64_t c = 0; c < ncb; c++) {                                                    \
        int64_t i1 = (c + 1) * CB < n ? (c + 1) * CB : n;                                  \
        for (int64_t g = 0; g < rows; g++) {                                               \
            int64_t q = g / n, j = g % n;                                                  \
            bptr[c * rows + g] = p;                                                        \
            for (int64_t i = c * CB; i < i1; i++) {                                        \
                real v[RG];                                                                \
                int any = 0;                                                               \
                for (int u = 0; u < RG; u++) {                                             \
                    int64_t k = q * RG + u;                                                \
                    v[u] = k < m ? kflat[(k * n + j) * n + i] : (real)0;                   \
                    any |= v[u] != 0;                                                      \
                }                                                                          \
                if (!any) continue;                                                        \
                cols[p] = (uint16_t)i;                                                     \
                for (int u = 0; u < RG; u++) vals[p * RG + u] = v[u];                      \
                p++;                                                                       \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
    bptr[ncb * rows] = p;                                                                  \
    return 0;                                                                              \
}                                                                                          \
                                                                                           \
/* dL/dx gx (T, B, n) from dL/dspikes gs (T, B, n), the states and spikes of the forward,  \
   the kernel in CSR rows (k, j) (rowptr (m * n + 1), cols = i, vals); lane blocks         \
   [q0, q1) of LB batch items (LB in 16, 32, 64). Returns 0, -1 when out of memory,        \
   -2 for an unsupported LB. */                                                           \
int nr_backward_##sfx(const real *gs, const real *states, const real *spikes,              \
                      const real *vals, const uint16_t *cols, const int64_t *rowptr,       \
                      int64_t T, int64_t B, int64_t n, int64_t m, int64_t span, real tau,  \
                      real th, real c, real half_alpha, int LB, real *gx, int64_t q0,      \
                      int64_t q1)                                                          \
{                                                                                          \
    if (LB != 16 && LB != 32 && LB != 64) return -2;                                       \
    int64_t R = span + 1, w = n * LB, ncb = (n + CB - 1) / CB, G = (m + RG - 1) / RG;     \
    real *grec = malloc(sizeof(real) * (size_t)(R * w));                                   \
    real *gxl = malloc(sizeof(real) * (size_t)w);                                          \
    real *carry = malloc(sizeof(real) * (size_t)w);                                        \
    int rc = 0;                                                                            \
    if (!grec || !gxl || !carry) { rc = -1; goto done; }                                   \
    for (int64_t q = q0; q < q1; q++) {                                                    \
        int64_t bs = q * LB;                                                               \
        int nb = B - bs < LB ? (int)(B - bs) : LB;                                         \
        memset(grec, 0, sizeof(real) * (size_t)(R * w));                                   \
        memset(gxl, 0, sizeof(real) * (size_t)w);       /* lanes >= nb stay 0 */          \
        memset(carry, 0, sizeof(real) * (size_t)w);                                        \
        for (int64_t t = T - 1; t >= 0; t--) {                                             \
            real *gr = grec + (t % R) * w;                                                 \
            for (int l = 0; l < nb; l++) {                                                 \
                int64_t o = (t * B + bs + l) * n;                                          \
                for (int64_t j = 0; j < n; j++) {                                          \
                    real g = gs[o + j] + gr[j * LB + l];                                   \
                    real z = (states[o + j] + th) * c;                                     \
                    real den = (real)1 + z * z;                                            \
                    real gt;                                                               \
                    if (t == T - 1) {                                                      \
                        gt = g / den * half_alpha;                                         \
                    } else {                                                               \
                        real cr = carry[j * LB + l];                                       \
                        real masked = cr - cr * spikes[o + j];                             \
                        gt = masked + half_alpha * (g / den);                              \
                    }                                                                      \
                    carry[j * LB + l] = gt - gt / tau;                                     \
                    gxl[j * LB + l] = gt;                                                  \
                    gx[o + j] = gt;                                                        \
                }                                                                          \
            }                                                                              \
            memset(gr, 0, sizeof(real) * (size_t)w);                                       \
            if (t == 0) continue;                                                          \
            switch (LB) {                                                                  \
            case 16: SPMM_##sfx(16); break;                                                \
            case 32: SPMM_##sfx(32); break;                                                \
            default: SPMM_##sfx(64); break;                                                \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
done:                                                                                      \
    free(grec); free(gxl); free(carry);                                                    \
    return rc;                                                                             \
}                                                                                          \
                                                                                           \
/* the kernel taps lo .. lo + m - 1 of kernel (n, n, w) (K[i, j, tap]) flattened for the  \
   loop, rows i in [i0, i1): kflat[(k * n + j) * n + i] = K[i, j, lo + k] */              \
int nr_pack_##sfx(const real *kernel, int64_t n, int64_t w, int64_t lo, int64_t m,         \
                  real *kflat, int64_t i0, int64_t i1)                                     \
{                                                                                          \
    for (int64_t ia = i0; ia < i1; ia += IT) {         /* IT neurons i at a time */        \
        int64_t ib = ia + IT < i1 ? ia + IT : i1;                                          \
        for (int64_t j = 0; j < n; j++)                                                    \
            for (int64_t k = 0; k < m; k++) {                                              \
                real *o = kflat + (k * n + j) * n;                                         \
                for (int64_t i = ia; i < ib; i++) o[i] = kernel[(i * n + j) * w + lo + k]; \
            }                                                                              \
    }                                                                                      \
    return 0;                                                                              \
}                                                                                          \
                                                                                           \
/* counts[r] = the nonzero entries of row r of kflat (rows, n), rows [r0, r1) */           \
int nr_rowcount_##sfx(const real *kflat, int64_t n, int64_t *counts, int64_t r0,           \
                      int64_t r1)                                                          \
{                                                                                          \
    for (int64_t r = r0; r < r1; r++) {                                                    \
        const real *kr = kflat + r * n;                                                    \
        int64_t c = 0;                                                                     \
        for (int64_t i = 0; i < n; i++) c += kr[i] != 0;                                   \
        counts[r] = c;                                                                     \
    }                                                                                      \
    return 0;                                                                              \
}                                                                                          \
                                                                                           \
/* dL/dkernel gk (n, n, w) (taps lo .. lo + m - 1 written, the others left as they are):   \
   neurons i in tiles of IT, tiles [q0, q1). Element (i, j, lo + k) is the sum over the    \
   spikes of j at t' (batch items, then steps, ascending) of gx[t' + span - k, i]: per    \
   batch item, its gradient tile (padded with zero steps) and 8, 4 or 1 rows k at a time  \
   are summed in registers over the spikes of j. Returns 0, -1 when out of memory. */    \
int nr_kgrad_##sfx(const real *spikes, const real *gx, int64_t T, int64_t B, int64_t n,    \
                   int64_t m, int64_t span, int64_t w, int64_t lo, real *gk, int64_t q0,   \
                   int64_t q1)                                                             \
{                                                                                          \
    int64_t TG = T + span + 7;                 /* 7 zero steps in front: rows k >= m */    \
    int32_t *ptr = NULL, *tim = NULL;                                                      \
    int rc = nr_spike_lists_##sfx(spikes, T, B, n, &ptr, &tim);                            \
    real *G = malloc(sizeof(real) * (size_t)(TG * IT));                                    \
    real *A = malloc(sizeof(real) * (size_t)((m + 7) * n * IT)); /* the tile; rows >= m:  \
                                                                    scratch */             \
    if (rc != 0 || !G || !A) { rc = -1; goto done; }                                       \
    const int64_t rs = n * IT;                          /* row k + 1 of A: + rs */         \
    for (int64_t q = q0; q < q1; q++) {                                                    \
        int64_t c0 = q * IT, nc = n - c0 < IT ? n - c0 : IT;                               \
        memset(A, 0, sizeof(real) * (size_t)((m + 7) * n * IT));                           \
        memset(G, 0, sizeof(real) * (size_t)(TG * IT));                                    \
        for (int64_t b = 0; b < B; b++) {                                                  \
            for (int64_t t = 0; t < T; t++)                                                \
                memcpy(G + (t + 7) * IT, gx + (t * B + b) * n + c0,                        \
                       sizeof(real) * (size_t)nc);                                         \
            for (int64_t j = 0; j < n; j++) {                                              \
                int32_t p0 = ptr[b * n + j], p1 = ptr[b * n + j + 1];                      \
                if (p0 == p1) continue;                                                    \
                int64_t k0 = 0;                                                            \
                for (; k0 + 4 < m; k0 += 8) {              /* 8 rows in registers */       \
                    real a0[IT], a1[IT], a2[IT], a3[IT], a4[IT], a5[IT], a6[IT], a7[IT];   \
                    real *r0 = A + (k0 * n + j) * IT;                                      \
                    for (int l = 0; l < IT; l++) {                                         \
                        a0[l] = r0[l]; a1[l] = r0[rs + l]; a2[l] = r0[2 * rs + l];         \
                        a3[l] = r0[3 * rs + l]; a4[l] = r0[4 * rs + l];                    \
                        a5[l] = r0[5 * rs + l]; a6[l] = r0[6 * rs + l];                    \
                        a7[l] = r0[7 * rs + l];                                            \
                    }                                                                      \
                    for (int32_t p = p0; p < p1; p++) {                                    \
                        const real *g0 = G + (tim[p] + span - k0 + 7) * IT;                \
                        for (int l = 0; l < IT; l++) {                                     \
                            a0[l] += g0[l]; a1[l] += g0[l - IT];                           \
                            a2[l] += g0[l - 2 * IT]; a3[l] += g0[l - 3 * IT];              \
                            a4[l] += g0[l - 4 * IT]; a5[l] += g0[l - 5 * IT];              \
                            a6[l] += g0[l - 6 * IT]; a7[l] += g0[l - 7 * IT];              \
                        }                                                                  \
                    }                                                                      \
                    for (int l = 0; l < IT; l++) {                                         \
                        r0[l] = a0[l]; r0[rs + l] = a1[l]; r0[2 * rs + l] = a2[l];         \
                        r0[3 * rs + l] = a3[l]; r0[4 * rs + l] = a4[l];                    \
                        r0[5 * rs + l] = a5[l]; r0[6 * rs + l] = a6[l];                    \
                        r0[7 * rs + l] = a7[l];                                            \
                    }                                                                      \
                }                                                                          \
                for (; k0 + 1 < m; k0 += 4) {              /* then 4 rows at a time */    \
                    real a0[IT], a1[IT], a2[IT], a3[IT];                                   \
                    real *r0 = A + (k0 * n + j) * IT;                                      \
                    for (int l = 0; l < IT; l++) {                                         \
                        a0[l] = r0[l]; a1[l] = r0[rs + l]; a2[l] = r0[2 * rs + l];         \
                        a3[l] = r0[3 * rs + l];                                            \
                    }                                                                      \
                    for (int32_t p = p0; p < p1; p++) {                                    \
                        const real *g0 = G + (tim[p] + span - k0 + 7) * IT;                \
                        for (int l = 0; l < IT; l++) {                                     \
                            a0[l] += g0[l]; a1[l] += g0[l - IT];                           \
                            a2[l] += g0[l - 2 * IT]; a3[l] += g0[l - 3 * IT];              \
                        }                                                                  \
                    }                                                                      \
                    for (int l = 0; l < IT; l++) {                                         \
                        r0[l] = a0[l]; r0[rs + l] = a1[l]; r0[2 * rs + l] = a2[l];         \
                        r0[3 * rs + l] = a3[l];                                            \
                    }                                                                      \
                }                                                                          \
                for (; k0 < m; k0++) {                     /* and the last row alone */   \
                    real a0[IT];                                                           \
                    real *r0 = A + (k0 * n + j) * IT;                                      \
                    for (int l = 0; l < IT; l++) a0[l] = r0[l];                            \
                    for (int32_t p = p0; p < p1; p++) {                                    \
                        const real *g0 = G + (tim[p] + span - k0 + 7) * IT;                \
                        for (int l = 0; l < IT; l++) a0[l] += g0[l];                       \
                    }                                                                      \
                    for (int l = 0; l < IT; l++) r0[l] = a0[l];                            \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
        for (int64_t l = 0; l < nc; l++)                  /* to the kernel's layout */     \
            for (int64_t j = 0; j < n; j++) {                                              \
                real *o = gk + ((c0 + l) * n + j) * w + lo;                                \
                for (int64_t k = 0; k < m; k++) o[k] = A[(k * n + j) * IT + l];            \
            }                                                                              \
    }                                                                                      \
done:                                                                                      \
    free(ptr); free(G); free(A); free(tim);                                    \
    return rc;                                                                             \
}

/* 8 lanes of real (GCC / Clang vector extensions: the band kernel gradient's 8 taps; an
   element-wise add, the same as 8 scalar ones) */
typedef float nr_vec8_f32 __attribute__((vector_size(8 * sizeof(float))));
typedef double nr_vec8_f64 __attribute__((vector_size(8 * sizeof(double))));

#define DEFINE_BAND(real, sfx, VEC)                                                         \
/* band (n * n) int32 from mask (n, n, w) (K[i, j, tap] layout), rows r = i * n + j in     \
   [r0, r1): the taps lo + start .. lo + start + width - 1 (start | width << 16, relative to \
   lo) from the first to the last nonzero tap of the mask among taps lo .. lo + m - 1      \
   (width 0: none). Returns 0. */                                                          \
int nr_band_##sfx(const real *mask, int64_t w, int64_t lo, int64_t m, int32_t *band,       \
                  int64_t r0, int64_t r1)                                                  \
{                                                                                          \
    for (int64_t r = r0; r < r1; r++) {                                                    \
        const real *mk = mask + r * w + lo;                                                \
        int64_t a = -1, e = -1;                                                            \
        for (int64_t k = 0; k < m; k++)                                                    \
            if (mk[k] != 0) { if (a < 0) a = k; e = k; }                                   \
        band[r] = a < 0 ? 0 : (int32_t)(a | ((e - a + 1) << 16));                          \
    }                                                                                      \
    return 0;                                                                              \
}                                                                                          \
                                                                                           \
/* dL/dkernel gk (n, n, w) within every synapse's band (band as nr_band's, nch >= the      \
   widest band / 8): element (i, j, lo + k), k in the band of (i, j), is the sum over the  \
   spikes of j at t' (batch items, then steps, ascending) of gx[t' + span - k, i] (the     \
   same sums, in the same order, as nr_kgrad's); every other tap of the rows (i, j) of     \
   the tiles is set to 0. Neurons i in tiles of IT, tiles [q0, q1). Per tile and batch     \
   item the tile's gradient is kept reversed in time (H: row i, entry T - 1 + span - t is  \
   gx[t, i], zero outside), so that the taps k .. k + 7 of a spike are 8 consecutive       \
   entries, summed in registers over the spikes of j, eight neurons at a time. Returns 0,   \
   -1 when out of memory, -2 for m > span, m > 65535 or nch < 1. */                       \
int nr_kgrad_band_##sfx(const real *spikes, const real *gx, const int32_t *band, int64_t T, \
                        int64_t B, int64_t n, int64_t m, int64_t span, int64_t w,          \
                        int64_t lo, int64_t nch, real *gk, int64_t q0, int64_t q1)         \
{                                                                                          \
    if (m > span || m > 0xFFFF || nch < 1) return -2;                                   \
    int64_t L = T + span + 8 * nch;                                                        \
    int32_t *ptr = NULL, *tim = NULL;                                                      \
    real *H = calloc((size_t)((IT + 1) * L), sizeof(real));      /* row IT: zeros */       \
    real *A = malloc(sizeof(real) * (size_t)(IT * n * nch * 8 + 8));  /* + scratch */      \
    int rc = -1;                                                                           \
    if (!H || !A || nr_spike_lists_##sfx(spikes, T, B, n, &ptr, &tim)) goto done;          \
    rc = 0;                                                                                \
    const real *Z = H + IT * L + T - 1;                                                    \
    real *scratch = A + IT * n * nch * 8;                                                  \
    for (int64_t q = q0; q < q1; q++) {                                                    \
        int64_t c0 = q * IT, nc = n - c0 < IT ? n - c0 : IT;                               \
        memset(A, 0, sizeof(real) * (size_t)(IT * n * nch * 8));                           \
        for (int64_t b = 0; b < B; b++) {                                                  \
            for (int64_t t = 0; t < T; t++) {                                              \
                const real *g = gx + (t * B + b) * n + c0;                                 \
                real *h = H + T - 1 + span - t;                                            \
                for (int64_t l = 0; l < nc; l++) h[l * L] = g[l];                          \
            }                                                                              \
            for (int64_t j = 0; j < n; j++) {                                              \
                int32_t p0 = ptr[b * n + j], p1 = ptr[b * n + j + 1];                      \
                if (p0 == p1) continue;                                                    \
                for (int64_t l0 = 0; l0 < nc; l0 += 8)                                     \
                for (int64_t c = 0; c < nch; c++) {                                        \
                    const real *h[8];                                                      \
                    real *d[8];                                                            \
                    int live = 0;                                                          \
                    for (int x = 0; x < 8; x++) {                                          \
                        int64_t l = l0 + x;                                                \
                        int32_t bw = l < nc ? band[(c0 + l) * n + j] : 0;                  \
                        if (8 * c < (bw >> 16)) {                                          \
                            h[x] = H + l * L + T - 1 + (bw & 0xFFFF) + 8 * c;              \
                            d[x] = A + ((l * n + j) * nch + c) * 8;                        \
                            live = 1;                                                      \
                        } else {                                                           \
                            h[x] = Z;                                                      \
                            d[x] = scratch;                                                \
                        }                                                                  \
                    }                                                                      \
                    if (!live) continue;                                                   \
                    VEC a[8];                          /* eight neurons' sums: eight independent chains */ \
                    for (int x = 0; x < 8; x++) memcpy(&a[x], d[x], sizeof a[x]);          \
                    for (int32_t p = p0; p < p1; p++) {   /* 8-lane vector adds (the same as 8 scalar ones) */ \
                        int64_t o = -(int64_t)tim[p];                                      \
                        for (int x = 0; x < 8; x++) {                                      \
                            VEC g;                                                         \
                            memcpy(&g, h[x] + o, sizeof g);                                \
                            a[x] += g;                                                     \
                        }                                                                  \
                    }                                                                      \
                    for (int x = 0; x < 8; x++) memcpy(d[x], &a[x], sizeof a[x]);          \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
        for (int64_t l = 0; l < nc; l++)                  /* to the kernel's layout */     \
            for (int64_t j = 0; j < n; j++) {                                              \
                real *o = gk + ((c0 + l) * n + j) * w;                                     \
                int32_t bw = band[(c0 + l) * n + j];                                       \
                int64_t s = bw & 0xFFFF, e = s + (bw >> 16);                               \
                const real *a = A + (l * n + j) * nch * 8;                                 \
                for (int64_t k = 0; k < w; k++) o[k] = 0;                                  \
                for (int64_t k = s; k < e; k++) o[lo + k] = a[k - s];                      \
            }                                                                              \
    }                                                                                      \
done:                                                                                      \
    free(ptr); free(tim); free(H); free(A);                                                \
    return rc;                                                                             \
}

/* the gradient of step t sent back through the synapses: for every kernel row (k, j)
   whose delay span - k reaches a step >= 0, a[lanes] = sum over its entries (ascending i)
   of K * gx[i, lanes], added to the gradient ring at t - (span - k) */
#define SPMM_BODY(LBN, FMA)                                                                \
    for (int64_t cb = 0; cb < ncb; cb++)                                                   \
    for (int64_t q = 0; q < G; q++) {                                                      \
        real_t *dst[RG];                                                                   \
        int nv = 0;                                                                        \
        for (int u = 0; u < RG; u++) {                                                     \
            int64_t k = q * RG + u, ta = t - (span - k);                                   \
            dst[u] = k < m && ta >= 0 ? grec + (ta % R) * w : NULL;                        \
            nv += dst[u] != NULL;                                                          \
        }                                                                                  \
        if (nv == 0) continue;                                                             \
        const int64_t *bp = rowptr + (cb * G + q) * n;                                     \
        for (int64_t j = 0; j < n; j++) {                                                  \
            int64_t p0 = bp[j], p1 = bp[j + 1];                                            \
            if (p0 == p1) continue;                                                        \
            real_t a0[LBN], a1[LBN], a2[LBN], a3[LBN];                                     \
            for (int l = 0; l < LBN; l++) { a0[l] = 0; a1[l] = 0; a2[l] = 0; a3[l] = 0; }  \
            for (int64_t p = p0; p < p1; p++) {                                            \
                const real_t *v = vals + p * RG;                                           \
                const real_t k0 = v[0], k1 = v[1], k2 = v[2], k3 = v[3];                   \
                const real_t *g = gxl + (int64_t)cols[p] * LBN;                            \
                for (int l = 0; l < LBN; l++) {                                            \
                    a0[l] = FMA(k0, g[l], a0[l]);                                          \
                    a1[l] = FMA(k1, g[l], a1[l]);                                          \
                    a2[l] = FMA(k2, g[l], a2[l]);                                          \
                    a3[l] = FMA(k3, g[l], a3[l]);                                          \
                }                                                                          \
            }                                                                              \
            if (dst[0]) { real_t *d = dst[0] + j * LBN; for (int l = 0; l < LBN; l++) d[l] += a0[l]; } \
            if (dst[1]) { real_t *d = dst[1] + j * LBN; for (int l = 0; l < LBN; l++) d[l] += a1[l]; } \
            if (dst[2]) { real_t *d = dst[2] + j * LBN; for (int l = 0; l < LBN; l++) d[l] += a2[l]; } \
            if (dst[3]) { real_t *d = dst[3] + j * LBN; for (int l = 0; l < LBN; l++) d[l] += a3[l]; } \
        }                                                                                  \
    }

#define real_t float
#define SPMM_f32(LBN) SPMM_BODY(LBN, fmaf)
DEFINE_SPIKE_LISTS(float, f32)
DEFINE_SPIKE_LISTS(double, f64)
DEFINE_RECURRENT(float, f32, fmaf)
DEFINE_BAND(float, f32, nr_vec8_f32)
#undef real_t
#define real_t double
#define SPMM_f64(LBN) SPMM_BODY(LBN, fma)
DEFINE_RECURRENT(double, f64, fma)
DEFINE_BAND(double, f64, nr_vec8_f64)
#undef real_t

/* version of this file's interface, checked by native.py after loading */
int nd_abi_version(void) { return 2; }
