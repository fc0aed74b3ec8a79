// Per-item mean and summed squared deviations over time of a batch of frame activations, frames past
// each item's length left out (the Recorder's statistics pooling on CPU float32). Inputs are validated
// by module.cpp.
#pragma once

#include <cstdint>

namespace nh {

// X is (B, T, F) float32 at element strides (sb, st, sf) with st == 1 or sf == 1 (sf == 1 is taken
// first); count (B,) in [0, T].
// For every item b and unit f, over the frames t < count[b]: mean[b, f] and m2[b, f] = sum of squared
// deviations from it, by the corrected two-pass algorithm in float64 (out: (B, F) row-major each;
// items without frames get 0, 0). Every output is computed by one thread in a fixed order, so the
// result does not depend on the thread count; at most `threads` threads run.
void frame_moments(const float* X, int64_t B, int64_t T, int64_t F, int64_t sb, int64_t st, int64_t sf,
                   const int64_t* count, double* mean, double* m2, int threads);

}  // namespace nh
