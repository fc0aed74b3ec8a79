#include "gather.hpp"

#include "parallel.hpp"

#include <algorithm>
#include <vector>

namespace nh {

void standardize_rows(const float* X, int64_t ld, int64_t width, const int64_t* rows, int64_t n, const int64_t* cols, int64_t d,
                      const float* hi, const float* lo, const float* inv, float* out) {
    // One pass: every value is read once and written once. Rows are split over threads (static chunks).
    parallel_for(static_cast<std::size_t>(n), static_cast<double>(d), 1 << 16, num_threads(),
                 [&](std::size_t begin, std::size_t end, std::size_t) {
                     std::vector<float> row(cols == nullptr ? 0 : static_cast<std::size_t>(width));
                     for (std::size_t i = begin; i < end; ++i) {
                         const float* x = X + rows[i] * ld;
                         float* o = out + static_cast<int64_t>(i) * d;
                         if (cols == nullptr) {
                             for (int64_t j = 0; j < d; ++j) o[j] = ((x[j] - hi[j]) - lo[j]) * inv[j];
                         } else {  // the row streamed into cache first: the scattered reads then hit it
                             std::copy(x, x + width, row.data());
                             for (int64_t j = 0; j < d; ++j) o[j] = ((row[cols[j]] - hi[j]) - lo[j]) * inv[j];
                         }
                     }
                 });
}

void shifted_moments(const float* X, int64_t ld, int64_t D, const int64_t* rows, int64_t n, double* sum1, double* sum2) {
    const int workers = num_threads();
    std::vector<std::vector<double>> acc(static_cast<std::size_t>(workers), std::vector<double>());
    const float* shift = X + rows[0] * ld;
    parallel_for(static_cast<std::size_t>(n), static_cast<double>(D), 1 << 16, workers,
                 [&](std::size_t begin, std::size_t end, std::size_t w) {
                     std::vector<double>& a = acc[w];
                     a.assign(2 * static_cast<std::size_t>(D), 0.0);
                     for (std::size_t i = begin; i < end; ++i) {
                         const float* x = X + rows[i] * ld;
                         for (int64_t j = 0; j < D; ++j) {
                             const double d = static_cast<double>(x[j]) - static_cast<double>(shift[j]);
                             a[j] += d;
                             a[D + j] += d * d;
                         }
                     }
                 });
    for (int64_t j = 0; j < D; ++j) sum1[j] = sum2[j] = 0.0;
    for (const auto& a : acc) {  // in worker order: the result does not depend on timing
        if (a.empty()) continue;
        for (int64_t j = 0; j < D; ++j) {
            sum1[j] += a[j];
            sum2[j] += a[D + j];
        }
    }
}

}  // namespace nh
