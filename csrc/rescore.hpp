// Re-scoring a trained linear classifier (logits = X W^T + b) on subsets of its input neurons,
// without materialising masked copies of X. Inputs are validated by module.cpp.
#pragma once

#include <cstdint>
#include <vector>

namespace nh {

// Correct predictions for each of M boolean keep-masks (M x D, 0/1 bytes); neurons outside a
// mask count as zero activations. C == 1 is a binary probe: class 1 where the logit > 0.
// *bad_row receives the first row of X holding NaN/Inf (-1 if none); counts are then invalid.
template <class T>
std::vector<int64_t> masked_correct(const T* X, int64_t N, int64_t D, const T* W, int64_t C, const T* b,
                                    const int64_t* y, const uint8_t* masks, int64_t M, int64_t* bad_row);

// Correct predictions when keeping only the first k neurons of `order`, for k = 1..K.
template <class T>
std::vector<int64_t> prefix_correct(const T* X, int64_t N, int64_t D, const T* W, int64_t C, const T* b,
                                    const int64_t* y, const int64_t* order, int64_t K, int64_t* bad_row);

}  // namespace nh
