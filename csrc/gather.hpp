// Rows (and columns) of a feature matrix, z-normalised on the way out (the blocks a probe's solver
// reads, without a normalised copy of the training rows), and the column moments that normalise them. Inputs are validated by module.cpp.
#pragma once

#include <cstdint>

namespace nh {

// out[i, j] = ((X[rows[i], c] - hi[j]) - lo[j]) * inv[j] with c = cols[j] (or j when cols is null),
// for i < n, j < d; X is (N, D = width) float32 with unit column stride and rows ld values apart (ld >= D:
// e.g. a column slice of a wider matrix), out (n, d) row-major. hi + lo is the column mean split into
// its float32 rounding and the rest; inv is 1 / scale.
void standardize_rows(const float* X, int64_t ld, int64_t width, const int64_t* rows, int64_t n, const int64_t* cols, int64_t d,
                      const float* hi, const float* lo, const float* inv, float* out);

// Column sums of (X[rows[i], j] - X[rows[0], j]) and of their squares over i < n, in float64 (sum1,
// sum2: (D,) each, zeroed here). Shifting by one row keeps the squares' sum free of cancellation.
void shifted_moments(const float* X, int64_t ld, int64_t D, const int64_t* rows, int64_t n, double* sum1, double* sum2);

}  // namespace nh
