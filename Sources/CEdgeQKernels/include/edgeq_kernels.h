// EdgeQ's int8 inference kernels in C: the one place where plain Swift could not reach the
// speed (measured: Swift SIMD16<Int32> at the baseline x86-64 target, 2.56 us for
// 8-64-64-5 against the C floor's 0.21 us; see docs/benchmarks.md). Imported by EdgeQNet and by EdgeQModel (the plant model ensemble's fp32 forward pass).
// Each function has an AVX2 version chosen at run time and a portable one; both give
// bit-identical results (integer arithmetic, and floating point without contraction).
#ifndef EDGEQ_KERNELS_H
#define EDGEQ_KERNELS_H
#include <stdint.h>

/// xq[i] = clamp(rint(x[i] * inv_scale[i]), -127, 127) for i < n (round half to even).
/// x, inv_scale are (n); xq is (n).
void edgeq_quantize_input(int8_t *xq, const float *x, const float *inv_scale, int n);

/// y[o] = (float)(sum_i w[o, i] * xq[i]) * scale[o] + bias[o], then max(y, 0) when relu != 0.
/// w is (out, in_padded) int16 (8- or 16-bit weights), row-major, zero padded; xq is (in_padded) int8 (the padding
/// entries may hold anything: their weights are zero); scale, bias, y are (out).
void edgeq_int8_matvec(float *y, const int16_t *w, const int8_t *xq, const float *scale, const float *bias,
                       int in_padded, int out, int relu);

/// One int8 layer for `edgeq_int8_forward`, weights in "axpy" layout.
typedef struct {
    int inputs;              ///< in
    int outputs;             ///< out
    const int16_t *wt;       ///< (in, out): column o of row i is W8[o, i] (8- or 16-bit weights;
                             ///< |sum| of a row times 127 must fit int32); the portable kernel's
    const float *scale;      ///< (out) weight step per output row
    const float *bias;       ///< (out)
    const float *inv_in;     ///< (in) 1 / input step per channel
    const int16_t *wpairs;   ///< (ceil(in / 2), out_padded, 2) int16: W8[o, 2p] and W8[o, 2p + 1]
                             ///< side by side, zero padded; used by the AVX2 kernel (vpmaddwd)
                             ///< when wquads is NULL (a 16-bit layer, or a first layer with -128)
    int out_padded;          ///< out rounded up to a multiple of 8
    const int8_t *wquads;    ///< NULL, or (ceil(in / 4), out_padded, 4) int8: W8[o, 4q + j] for
                             ///< j = 0…3 side by side, zero padded; used by the AVX2 kernel
                             ///< (vpmaddubsw) instead of wpairs.
    int quad_inputs_signed;  ///< 0: the layer's quantized inputs are never negative (a layer
                             ///< after a ReLU, inv_in > 0), fed to vpmaddubsw as they are.
                             ///< 1: they may be; |x| goes in and the signs move onto the
                             ///< weights, which must then lie in [-127, 127].
} edgeq_qlayer;

/// The whole int8 network for one state: for each layer, quantize its input per channel,
/// accumulate acc[o] += xq[i] * W8[o, i] over the nonzero xq[i] (int32, exact, so the order
/// does not matter), y[o] = (float)acc[o] * scale[o] + bias[o], ReLU on all but the last.
/// x is (layers[0].inputs), already normalised; out receives the last layer's outputs.
/// xq (max in + 3), acc (max out_padded + max in + 2 int32, 32-byte aligned), buf_a, buf_b
/// (max width) are the caller's scratch.
void edgeq_int8_forward(float *out, const float *x, const edgeq_qlayer *layers, int n_layers,
                        int8_t *xq, int32_t *acc, float *buf_a, float *buf_b);

/// One fp32 layer for `edgeq_fp32_forward`, weights in "axpy" layout.
typedef struct {
    int inputs;              ///< in
    int outputs;             ///< out
    int out_padded;          ///< out rounded up to a multiple of 8
    const float *wt;         ///< (in, out_padded): column o of row i is W[o, i], zero padded
    const float *bias;       ///< (out_padded), zero padded
} edgeq_flayer;

/// The whole fp32 network for one state: for each layer y[o] = bias[o], then
/// y[o] = y[o] + x[i] * W[o, i] for i = 0, 1, … over the nonzero x[i] (in this order, no FMA,
/// so the AVX2 and portable kernels give the same bits), ReLU on all but the last.
/// x is (layers[0].inputs), already normalised; out receives the last layer's outputs
/// (out_padded floats are written). acc (2 × max inputs, 4-byte aligned), buf_a, buf_b
/// (max out_padded) are the caller's scratch.
void edgeq_fp32_forward(float *out, const float *x, const edgeq_flayer *layers, int n_layers,
                        float *acc, float *buf_a, float *buf_b);

/// One Adam step (PyTorch's form) over n parameters:
/// m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr * (m / c1) / (sqrt(v / c2) + eps),
/// with c1 = 1 - b1^t, c2 = 1 - b2^t. p, g, m, v are (n). (In C: Swift's SIMD code for this
/// loop measured ~6 ns per parameter, a quarter of a small net's update.)
void edgeq_adam_step(float *p, const float *g, float *m, float *v, int n,
                     float lr, float b1, float b2, float eps, float c1, float c2);

/// Sum of squares of x (n), for gradient clipping by global norm.
float edgeq_sum_squares(const float *x, int n);

/// 1 when the AVX2 kernels are in use on this CPU, else 0 (portable kernels).
int edgeq_kernels_use_avx2(void);

/// Tests only: with portable != 0, use the portable kernels from now on (so that the
/// portable path is checked against the AVX2 one on an AVX2 machine); 0 restores detection.
/// Not thread-safe with concurrent inference.
void edgeq_kernels_force_portable(int portable);

#endif
