#include "edgeq_kernels.h"
#include <math.h>

// No a*b+c contraction into FMA: the int8 path must match numpy bit for bit.
#pragma STDC FP_CONTRACT OFF

static inline int8_t q8(float v) {
    float r = rintf(v);  // default rounding mode: to nearest, ties to even (as numpy.rint)
    if (r >= 127.0f) return 127;
    if (r <= -127.0f) return -127;
    if (r != r) return 0;
    return (int8_t)r;
}

#define QUANTIZE_BODY                                           \
    for (int i = 0; i < n; i++) xq[i] = q8(x[i] * inv_scale[i]);

#define MATVEC_BODY                                                                 \
    for (int o = 0; o < out; o++) {                                                 \
        const int16_t *row = w + (long)o * in_padded;                               \
        int32_t acc = 0;                                                            \
        for (int i = 0; i < in_padded; i++) acc += (int32_t)row[i] * (int32_t)xq[i]; \
        float v = (float)acc * scale[o];                                            \
        v = v + bias[o];                                                            \
        y[o] = (relu && v < 0.0f) ? 0.0f : v;                                       \
    }

#define FORWARD_BODY                                                                      \
    const float *in = x;                                                                  \
    float *bufs[2] = {buf_a, buf_b};                                                      \
    for (int l = 0; l < n_layers; l++) {                                                  \
        const edgeq_qlayer *L = &layers[l];                                               \
        const int I = L->inputs, O = L->outputs;                                          \
        for (int i = 0; i < I; i++) xq[i] = q8(in[i] * L->inv_in[i]);                     \
        for (int o = 0; o < O; o++) acc[o] = 0;                                           \
        for (int i = 0; i < I; i++) {                                                     \
            const int32_t xi = xq[i];                                                     \
            if (xi == 0) continue; /* after a ReLU about half the inputs are zero */      \
            const int16_t *row = L->wt + (long)i * O;                                     \
            for (int o = 0; o < O; o++) acc[o] += xi * (int32_t)row[o];                   \
        }                                                                                 \
        float *y = (l == n_layers - 1) ? out : bufs[l & 1];                               \
        const int relu = l < n_layers - 1;                                                \
        for (int o = 0; o < O; o++) {                                                     \
            float v = (float)acc[o] * L->scale[o];                                        \
            v = v + L->bias[o];                                                           \
            y[o] = (relu && v < 0.0f) ? 0.0f : v;                                         \
        }                                                                                 \
        in = y;                                                                           \
    }

static void forward_portable(float *restrict out, const float *restrict x, const edgeq_qlayer *restrict layers, int n_layers,
                             int8_t *restrict xq, int32_t *restrict acc, float *restrict buf_a, float *restrict buf_b) { FORWARD_BODY }

static void quantize_portable(int8_t *restrict xq, const float *restrict x, const float *restrict inv_scale, int n) { QUANTIZE_BODY }
static void matvec_portable(float *restrict y, const int16_t *restrict w, const int8_t *restrict xq, const float *restrict scale,
                            const float *restrict bias, int in_padded, int out, int relu) { MATVEC_BODY }

#if defined(__x86_64__) && defined(__clang__)
__attribute__((target("avx2")))
static void quantize_avx2(int8_t *restrict xq, const float *restrict x, const float *restrict inv_scale, int n) { QUANTIZE_BODY }
__attribute__((target("avx2")))
static void matvec_avx2(float *restrict y, const int16_t *restrict w, const int8_t *restrict xq, const float *restrict scale,
                        const float *restrict bias, int in_padded, int out, int relu) { MATVEC_BODY }
#include <immintrin.h>
// q8 on 8 lanes: rint (the default rounding mode: to nearest, ties to even), clamp to
// [-127, 127], NaN to 0 -- the same values as the scalar q8.
__attribute__((target("avx2")))
static inline void quantize8_avx2(int8_t *restrict xq, const float *restrict x, const float *restrict inv, int n) {
    const __m256 hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(inv + i));
        __m256 r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m256 ordered = _mm256_cmp_ps(r, r, _CMP_ORD_Q);   /* false for NaN */
        r = _mm256_max_ps(_mm256_min_ps(r, hi), lo);
        r = _mm256_and_ps(r, ordered);
        const __m256i w = _mm256_cvtps_epi32(r);                  /* exact: r is an integer */
        const __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
        _mm_storel_epi64((__m128i *)(xq + i), _mm_packs_epi16(p16, p16));
    }
    for (; i < n; i++) xq[i] = q8(x[i] * inv[i]);
}
// The 256 bytes of weights two steps ahead of the 64-output loops: the weights of a big
// layer come from L2 with a data-dependent stride (skipped zero inputs), and asking early
// measured ~12 % faster on 32-256-256-9 (the same in the fp32 kernel measured no gain).
#define PREFETCH_256(p) do { const char *pf_ = (const char *)(p);                              \
        _mm_prefetch(pf_, _MM_HINT_T0); _mm_prefetch(pf_ + 64, _MM_HINT_T0);                  \
        _mm_prefetch(pf_ + 128, _MM_HINT_T0); _mm_prefetch(pf_ + 192, _MM_HINT_T0); } while (0)
// One register of weights: 8 outputs × 2 inputs of int16, or 8 outputs × 4 inputs of int8.
#define W256(p) _mm256_loadu_si256((const __m256i *)(p))

// Left-packs the nonzero 32-bit lanes of v (and the same lanes of off) to vals/offs, eight
// lanes wide (the stores may write up to 8 entries); returns how many were nonzero. The
// permutation comes from the nonzero mask with pdep/pext, so there is no branch per lane.
__attribute__((target("avx2,bmi2")))
static inline int left_pack8(int32_t *restrict vals, int32_t *restrict offs, __m256i v, __m256i off) {
    const unsigned nonzero = ~(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(v, _mm256_setzero_si256()))) & 0xFF;
    const uint64_t bytes = _pdep_u64(nonzero, 0x0101010101010101ULL) * 0xFF;
    const __m256i perm = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)_pext_u64(0x0706050403020100ULL, bytes)));
    _mm256_storeu_si256((__m256i *)vals, _mm256_permutevar8x32_epi32(v, perm));
    _mm256_storeu_si256((__m256i *)offs, _mm256_permutevar8x32_epi32(off, perm));
    return __builtin_popcount(nonzero);
}

// The sums of one layer over its N listed input groups (pairs or quads), into av[0 .. OP/8):
// 64 outputs (8 registers) at a time kept in registers across the groups, weights prefetched
// two groups ahead; then the rest 4, 2 and 1 register at a time. Group k's weights for the
// registers from b0 start at BASE + OFF[k] + REG * b0 (REG elements per register);
// VSETUP(k) declares what STEP(acc, weights) multiplies them with.
#define BLOCKED_SUMS(N, BASE, OFF, REG, VSETUP, STEP)                                                 \
    int b0 = 0;                                                                                       \
    for (; b0 + 8 <= OP / 8; b0 += 8) {                                                               \
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0; \
        for (int k = 0; k < (N); k++) {                                                               \
            VSETUP(k)                                                                                 \
            const __typeof__(*(BASE)) *w = (BASE) + OFF[k] + (REG) * b0;                              \
            PREFETCH_256((BASE) + OFF[k + 2 < (N) ? k + 2 : k] + (REG) * b0);                         \
            STEP(a0, w); STEP(a1, w + (REG)); STEP(a2, w + 2 * (REG)); STEP(a3, w + 3 * (REG));       \
            STEP(a4, w + 4 * (REG)); STEP(a5, w + 5 * (REG)); STEP(a6, w + 6 * (REG)); STEP(a7, w + 7 * (REG)); \
        }                                                                                             \
        av[b0] = a0; av[b0 + 1] = a1; av[b0 + 2] = a2; av[b0 + 3] = a3;                               \
        av[b0 + 4] = a4; av[b0 + 5] = a5; av[b0 + 6] = a6; av[b0 + 7] = a7;                           \
    }                                                                                                 \
    for (; b0 + 4 <= OP / 8; b0 += 4) {                                                               \
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;                               \
        for (int k = 0; k < (N); k++) {                                                               \
            VSETUP(k)                                                                                 \
            const __typeof__(*(BASE)) *w = (BASE) + OFF[k] + (REG) * b0;                              \
            STEP(a0, w); STEP(a1, w + (REG)); STEP(a2, w + 2 * (REG)); STEP(a3, w + 3 * (REG));       \
        }                                                                                             \
        av[b0] = a0; av[b0 + 1] = a1; av[b0 + 2] = a2; av[b0 + 3] = a3;                               \
    }                                                                                                 \
    for (; b0 + 2 <= OP / 8; b0 += 2) {                                                               \
        __m256i a0 = _mm256_setzero_si256(), a1 = a0;                                                 \
        for (int k = 0; k < (N); k++) {                                                               \
            VSETUP(k)                                                                                 \
            const __typeof__(*(BASE)) *w = (BASE) + OFF[k] + (REG) * b0;                              \
            STEP(a0, w); STEP(a1, w + (REG));                                                         \
        }                                                                                             \
        av[b0] = a0; av[b0 + 1] = a1;                                                                 \
    }                                                                                                 \
    for (; b0 < OP / 8; b0++) {                                                                       \
        __m256i a0 = _mm256_setzero_si256();                                                          \
        for (int k = 0; k < (N); k++) {                                                               \
            VSETUP(k)                                                                                 \
            const __typeof__(*(BASE)) *w = (BASE) + OFF[k] + (REG) * b0;                              \
            STEP(a0, w);                                                                              \
        }                                                                                             \
        av[b0] = a0;                                                                                  \
    }

// One layer's integer sums with int16 weight pairs (any input sign, 8- or 16-bit weights):
// two inputs at a time with vpmaddwd (int16 pairs -> int32), 8 outputs per register. acc
// (OP int32, 32-byte aligned) receives the sums; the nonzero input pairs are listed after it.
__attribute__((target("avx2,bmi2")))
static inline void sums_pairs_avx2(int32_t *restrict acc, const edgeq_qlayer *restrict L, int8_t *restrict xq) {
    const int I = L->inputs, OP = L->out_padded, NP = (I + 1) / 2;
    xq[I] = 0;  /* the odd input's partner */
    __m256i *av = (__m256i *)acc;
    /* The nonzero input pairs (sign-extended to two int16 in one int32), listed once with
       their weights' element offsets: eight at a time, left-packed as in the quads, then one
       at a time. The loops below then run without a data-dependent branch. */
    int32_t *poff = acc + OP, *pval = acc + OP + NP;  /* the 8-wide stores stay below NP */
    int np = 0, p = 0;
    __m256i off = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(OP * 2));
    const __m256i step = _mm256_set1_epi32(8 * OP * 2);
    for (; p + 8 <= NP; p += 8, off = _mm256_add_epi32(off, step))
        np += left_pack8(pval + np, poff + np, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(xq + 2 * p))), off);
    for (; p < NP; p++) {
        const int32_t x0 = xq[2 * p], x1 = xq[2 * p + 1];
        poff[np] = p * OP * 2;
        pval[np] = (int32_t)(((uint32_t)(uint16_t)(int16_t)x1 << 16) | (uint16_t)(int16_t)x0);
        np += (x0 | x1) != 0;
    }
    /* vx: the pair's two inputs (int16) in every 32-bit lane. */
#define PAIR_SETUP(k) const __m256i vx = _mm256_set1_epi32(pval[k]);
#define PAIR(a, p) a = _mm256_add_epi32(a, _mm256_madd_epi16(W256(p), vx))
    BLOCKED_SUMS(np, L->wpairs, poff, 16, PAIR_SETUP, PAIR)
#undef PAIR
#undef PAIR_SETUP
}

// One layer's integer sums with int8 weight quads: four inputs at a time as bytes, vpmaddubsw
// (u8 x s8, adjacent pairs summed to int16) then vpmaddwd with ones (int16 pairs -> int32),
// 8 outputs per register. Inputs known to be >= 0 (after a ReLU) go in as they are; signed
// inputs (the first layer) go in as |x|, their signs moved onto the weights (vpsignb), which
// needs weights in [-127, 127]. Exact: with |x| <= 127 and |w| <= 128, |x0 w0 + x1 w1| <= 32512
// never saturates int16. Half the weight bytes of the int16 pairs and one load per 32
// multiply-adds: the big layers read their weights from L2, and this is what makes int8 pay.
__attribute__((target("avx2,bmi2"), always_inline))
static inline void sums_quads_avx2(int32_t *restrict acc, const edgeq_qlayer *restrict L, int8_t *restrict xq,
                                   const int signed_inputs) {
    const int I = L->inputs, OP = L->out_padded, NQ = (I + 3) / 4;
    xq[I] = 0; xq[I + 1] = 0; xq[I + 2] = 0;  /* the last quad's padding */
    __m256i *av = (__m256i *)acc;
    const __m256i ones = _mm256_set1_epi16(1);
    /* The nonzero quads (four input bytes, as they are), listed once: byte offsets, values.
       Eight quads at a time, packed to the left with a permutation built from the nonzero
       mask (pdep/pext), then one at a time. */
    int32_t *qoff = acc + OP, *qval = acc + OP + NQ;  /* the 8-wide stores stay below NQ */
    int nq = 0, q = 0;
    __m256i off = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(OP * 4));
    const __m256i step = _mm256_set1_epi32(8 * OP * 4);
    for (; q + 8 <= NQ; q += 8, off = _mm256_add_epi32(off, step))
        nq += left_pack8(qval + nq, qoff + nq, _mm256_loadu_si256((const __m256i *)(xq + 4 * q)), off);
    for (; q < NQ; q++) {
        uint32_t v;
        __builtin_memcpy(&v, xq + 4 * q, 4);
        qoff[nq] = q * OP * 4;
        qval[nq] = (int32_t)v;
        nq += v != 0;
    }
    /* vx: the quad's four inputs in every 32-bit lane; ux: the same as unsigned bytes. */
#define QUAD_SETUP(k)                                                   \
        const __m256i vx = _mm256_set1_epi32(qval[k]);                  \
        const __m256i ux = signed_inputs ? _mm256_abs_epi8(vx) : vx;    \
        (void)vx;
#define QUAD(a, p) a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(ux, \
        signed_inputs ? _mm256_sign_epi8(W256(p), vx) : W256(p)), ones))
    BLOCKED_SUMS(nq, L->wquads, qoff, 32, QUAD_SETUP, QUAD)
#undef QUAD
#undef QUAD_SETUP
}

// AVX2: per layer, quantize the input, the integer sums (int8 quads, or int16 pairs for a
// first layer with a -128 weight), then the same float epilogue as the portable loop.
__attribute__((target("avx2,bmi2")))
static void forward_avx2(float *restrict out, const float *restrict x, const edgeq_qlayer *restrict layers, int n_layers,
                         int8_t *restrict xq, int32_t *restrict acc, float *restrict buf_a, float *restrict buf_b) {
    const float *in = x;
    float *bufs[2] = {buf_a, buf_b};
    for (int l = 0; l < n_layers; l++) {
        const edgeq_qlayer *L = &layers[l];
        const int O = L->outputs;
        quantize8_avx2(xq, in, L->inv_in, L->inputs);
        if (!L->wquads) sums_pairs_avx2(acc, L, xq);
        else if (L->quad_inputs_signed) sums_quads_avx2(acc, L, xq, 1);
        else sums_quads_avx2(acc, L, xq, 0);
        float *y = (l == n_layers - 1) ? out : bufs[l & 1];
        const int relu = l < n_layers - 1;
        for (int o = 0; o < O; o++) {
            float v = (float)acc[o] * L->scale[o];
            v = v + L->bias[o];
            y[o] = (relu && v < 0.0f) ? 0.0f : v;
        }
        in = y;
    }
}
static int detect(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2") ? 1 : 0;
}
#else
static int detect(void) { return 0; }
#endif

static int use_avx2 = -1;

void edgeq_kernels_force_portable(int portable) { use_avx2 = portable ? 0 : detect(); }

int edgeq_kernels_use_avx2(void) {
    if (use_avx2 < 0) use_avx2 = detect();
    return use_avx2;
}

void edgeq_quantize_input(int8_t *xq, const float *x, const float *inv_scale, int n) {
#if defined(__x86_64__) && defined(__clang__)
    if (edgeq_kernels_use_avx2()) { quantize_avx2(xq, x, inv_scale, n); return; }
#endif
    quantize_portable(xq, x, inv_scale, n);
}

void edgeq_int8_matvec(float *y, const int16_t *w, const int8_t *xq, const float *scale, const float *bias,
                       int in_padded, int out, int relu) {
#if defined(__x86_64__) && defined(__clang__)
    if (edgeq_kernels_use_avx2()) { matvec_avx2(y, w, xq, scale, bias, in_padded, out, relu); return; }
#endif
    matvec_portable(y, w, xq, scale, bias, in_padded, out, relu);
}

void edgeq_int8_forward(float *out, const float *x, const edgeq_qlayer *layers, int n_layers,
                        int8_t *xq, int32_t *acc, float *buf_a, float *buf_b) {
#if defined(__x86_64__) && defined(__clang__)
    if (edgeq_kernels_use_avx2()) { forward_avx2(out, x, layers, n_layers, xq, acc, buf_a, buf_b); return; }
#endif
    forward_portable(out, x, layers, n_layers, xq, acc, buf_a, buf_b);
}

#define FORWARD_F32_BODY                                                                  \
    const float *in = x;                                                                  \
    float *bufs[2] = {buf_a, buf_b};                                                      \
    for (int l = 0; l < n_layers; l++) {                                                  \
        const edgeq_flayer *L = &layers[l];                                               \
        const int I = L->inputs, OP = L->out_padded;                                      \
        float *y = (l == n_layers - 1) ? out : bufs[l & 1];                               \
        for (int o = 0; o < OP; o++) acc[o] = L->bias[o];                                 \
        for (int i = 0; i < I; i++) {                                                     \
            const float xi = in[i];                                                       \
            if (xi == 0.0f) continue; /* after a ReLU about half the inputs are zero */   \
            const float *row = L->wt + (long)i * OP;                                      \
            for (int o = 0; o < OP; o++) acc[o] = acc[o] + xi * row[o];                   \
        }                                                                                 \
        const int relu = l < n_layers - 1;                                                \
        for (int o = 0; o < OP; o++) y[o] = (relu && acc[o] < 0.0f) ? 0.0f : acc[o];      \
        in = y;                                                                           \
    }

static void forward_f32_portable(float *restrict out, const float *restrict x, const edgeq_flayer *restrict layers, int n_layers,
                                 float *restrict acc, float *restrict buf_a, float *restrict buf_b) { FORWARD_F32_BODY }

#if defined(__x86_64__) && defined(__clang__)
// AVX2: 64 outputs (8 registers) at a time kept in registers across all inputs, then 32, then 8 at a
// time; the same operations in the same order per output as the portable loop (mul, then add).
__attribute__((target("avx2")))
static void forward_f32_avx2(float *restrict out, const float *restrict x, const edgeq_flayer *restrict layers, int n_layers,
                             float *restrict acc, float *restrict buf_a, float *restrict buf_b) {
    int32_t *idx = (int32_t *)acc;  /* the nonzero inputs: indices, then values */
    const float *in = x;
    float *bufs[2] = {buf_a, buf_b};
    for (int l = 0; l < n_layers; l++) {
        const edgeq_flayer *L = &layers[l];
        const int I = L->inputs, OP = L->out_padded;
        float *y = (l == n_layers - 1) ? out : bufs[l & 1];
        const int relu = l < n_layers - 1;
        const __m256 zero = _mm256_setzero_ps();
        /* The nonzero inputs, listed once: the loops below run without a data-dependent branch. */
        float *val = acc + I;
        int nz = 0;
        for (int i = 0; i < I; i++) {
            idx[nz] = i;
            val[nz] = in[i];
            nz += in[i] != 0.0f;
        }
        int o0 = 0;
        for (; o0 + 64 <= OP; o0 += 64) {
            __m256 a0 = _mm256_loadu_ps(L->bias + o0), a1 = _mm256_loadu_ps(L->bias + o0 + 8);
            __m256 a2 = _mm256_loadu_ps(L->bias + o0 + 16), a3 = _mm256_loadu_ps(L->bias + o0 + 24);
            __m256 a4 = _mm256_loadu_ps(L->bias + o0 + 32), a5 = _mm256_loadu_ps(L->bias + o0 + 40);
            __m256 a6 = _mm256_loadu_ps(L->bias + o0 + 48), a7 = _mm256_loadu_ps(L->bias + o0 + 56);
            for (int k = 0; k < nz; k++) {
                const __m256 vx = _mm256_set1_ps(val[k]);
                const float *w = L->wt + (long)idx[k] * OP + o0;
                a0 = _mm256_add_ps(a0, _mm256_mul_ps(vx, _mm256_loadu_ps(w)));
                a1 = _mm256_add_ps(a1, _mm256_mul_ps(vx, _mm256_loadu_ps(w + 8)));
                a2 = _mm256_add_ps(a2, _mm256_mul_ps(vx, _mm256_loadu_ps(w + 16)));
                a3 = _mm256_add_ps(a3, _mm256_mul_ps(vx, _mm256_loadu_ps(w + 24)));
                a4 = _mm256_add_ps(a4, _mm256_mul_ps(vx, _mm256_loadu_ps(w + 32)));
                a5 = _mm256_add_ps(a5, _mm256_mul_ps(vx, _mm256_loadu_ps(w + 40)));
                a6 = _mm256_add_ps(a6, _mm256_mul_ps(vx, _mm256_loadu_ps(w + 48)));
                a7 = _mm256_add_ps(a7, _mm256_mul_ps(vx, _mm256_loadu_ps(w + 56)));
            }
            if (relu) { /* max(0, a) returns a when a is NaN or -0, as the portable loop does */
                a0 = _mm256_max_ps(zero, a0); a1 = _mm256_max_ps(zero, a1); a2 = _mm256_max_ps(zero, a2); a3 = _mm256_max_ps(zero, a3);
                a4 = _mm256_max_ps(zero, a4); a5 = _mm256_max_ps(zero, a5); a6 = _mm256_max_ps(zero, a6); a7 = _mm256_max_ps(zero, a7);
            }
            _mm256_storeu_ps(y + o0, a0); _mm256_storeu_ps(y + o0 + 8, a1); _mm256_storeu_ps(y + o0 + 16, a2); _mm256_storeu_ps(y + o0 + 24, a3);
            _mm256_storeu_ps(y + o0 + 32, a4); _mm256_storeu_ps(y + o0 + 40, a5); _mm256_storeu_ps(y + o0 + 48, a6); _mm256_storeu_ps(y + o0 + 56, a7);
        }
        for (; o0 + 32 <= OP; o0 += 32) {   /* 32 outputs (4 registers): the plant model ensemble's layers */
            __m256 a0 = _mm256_loadu_ps(L->bias + o0), a1 = _mm256_loadu_ps(L->bias + o0 + 8);
            __m256 a2 = _mm256_loadu_ps(L->bias + o0 + 16), a3 = _mm256_loadu_ps(L->bias + o0 + 24);
            for (int k = 0; k < nz; k++) {
                const __m256 vx = _mm256_set1_ps(val[k]);
                const float *w = L->wt + (long)idx[k] * OP + o0;
                a0 = _mm256_add_ps(a0, _mm256_mul_ps(vx, _mm256_loadu_ps(w)));
                a1 = _mm256_add_ps(a1, _mm256_mul_ps(vx, _mm256_loadu_ps(w + 8)));
                a2 = _mm256_add_ps(a2, _mm256_mul_ps(vx, _mm256_loadu_ps(w + 16)));
                a3 = _mm256_add_ps(a3, _mm256_mul_ps(vx, _mm256_loadu_ps(w + 24)));
            }
            if (relu) { a0 = _mm256_max_ps(zero, a0); a1 = _mm256_max_ps(zero, a1); a2 = _mm256_max_ps(zero, a2); a3 = _mm256_max_ps(zero, a3); }
            _mm256_storeu_ps(y + o0, a0); _mm256_storeu_ps(y + o0 + 8, a1); _mm256_storeu_ps(y + o0 + 16, a2); _mm256_storeu_ps(y + o0 + 24, a3);
        }
        for (; o0 < OP; o0 += 8) {
            __m256 a0 = _mm256_loadu_ps(L->bias + o0);
            for (int k = 0; k < nz; k++)
                a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_set1_ps(val[k]), _mm256_loadu_ps(L->wt + (long)idx[k] * OP + o0)));
            if (relu) a0 = _mm256_max_ps(zero, a0);
            _mm256_storeu_ps(y + o0, a0);
        }
        in = y;
    }
}
#endif

void edgeq_fp32_forward(float *out, const float *x, const edgeq_flayer *layers, int n_layers,
                        float *acc, float *buf_a, float *buf_b) {
#if defined(__x86_64__) && defined(__clang__)
    if (edgeq_kernels_use_avx2()) { forward_f32_avx2(out, x, layers, n_layers, acc, buf_a, buf_b); return; }
#endif
    forward_f32_portable(out, x, layers, n_layers, acc, buf_a, buf_b);
}

#define ADAM_BODY                                                     \
    for (int k = 0; k < n; k++) {                                     \
        const float gk = g[k];                                        \
        const float mk = b1 * m[k] + (1.0f - b1) * gk;                \
        const float vk = b2 * v[k] + (1.0f - b2) * gk * gk;           \
        m[k] = mk;                                                    \
        v[k] = vk;                                                    \
        p[k] -= lr * (mk / c1) / (sqrtf(vk / c2) + eps);              \
    }
#define SUMSQ_BODY                                                    \
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                          \
    int k = 0;                                                        \
    for (; k + 8 <= n; k += 8)                                        \
        for (int j = 0; j < 8; j++) acc[j] += x[k + j] * x[k + j];    \
    float s = 0;                                                      \
    for (int j = 0; j < 8; j++) s += acc[j];                          \
    for (; k < n; k++) s += x[k] * x[k];                              \
    return s;

static void adam_portable(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, int n,
                          float lr, float b1, float b2, float eps, float c1, float c2) { ADAM_BODY }
static float sumsq_portable(const float *restrict x, int n) { SUMSQ_BODY }
#if defined(__x86_64__) && defined(__clang__)
__attribute__((target("avx2")))
static void adam_avx2(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, int n,
                      float lr, float b1, float b2, float eps, float c1, float c2) { ADAM_BODY }
__attribute__((target("avx2")))
static float sumsq_avx2(const float *restrict x, int n) { SUMSQ_BODY }
#endif

void edgeq_adam_step(float *p, const float *g, float *m, float *v, int n,
                     float lr, float b1, float b2, float eps, float c1, float c2) {
#if defined(__x86_64__) && defined(__clang__)
    if (edgeq_kernels_use_avx2()) { adam_avx2(p, g, m, v, n, lr, b1, b2, eps, c1, c2); return; }
#endif
    adam_portable(p, g, m, v, n, lr, b1, b2, eps, c1, c2);
}

float edgeq_sum_squares(const float *x, int n) {
#if defined(__x86_64__) && defined(__clang__)
    if (edgeq_kernels_use_avx2()) return sumsq_avx2(x, n);
#endif
    return sumsq_portable(x, n);
}
