#include "pooling.hpp"

#include "parallel.hpp"

#include <algorithm>
#include <vector>

namespace nh {

namespace {

// One unit's frames are contiguous (time stride 1, e.g. a conv output (B, C, T) seen as (B, T, C)): both
// passes over the same n values, the second from cache.
void time_contiguous(const float* x, int64_t n, double* mean, double* m2) {
    if (n <= 0) {
        *mean = *m2 = 0.0;
        return;
    }
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    int64_t t = 0;
    for (; t + 4 <= n; t += 4)
        for (int k = 0; k < 4; ++k) s[k] += x[t + k];
    for (; t < n; ++t) s[0] += x[t];
    const double mu = ((s[0] + s[1]) + (s[2] + s[3])) / static_cast<double>(n);
    double d1[4] = {0.0, 0.0, 0.0, 0.0}, d2[4] = {0.0, 0.0, 0.0, 0.0};
    t = 0;
    for (; t + 4 <= n; t += 4)
        for (int k = 0; k < 4; ++k) {
            const double d = x[t + k] - mu;
            d1[k] += d;
            d2[k] += d * d;
        }
    for (; t < n; ++t) {
        const double d = x[t] - mu;
        d1[0] += d;
        d2[0] += d * d;
    }
    const double shift = (d1[0] + d1[1]) + (d1[2] + d1[3]);
    *mean = mu + shift / static_cast<double>(n);
    *m2 = std::max(0.0, ((d2[0] + d2[1]) + (d2[2] + d2[3])) - shift * shift / static_cast<double>(n));
}

// Units [f0, f1) of one item whose frames are rows of contiguous units (unit stride 1, e.g. a
// transformer's (B, T, D)): a pass for the means, a pass for the deviations, over that column band.
void unit_contiguous(const float* x, int64_t n, int64_t st, int64_t f0, int64_t f1, double* mean, double* m2,
                     std::vector<double>& shift) {
    const int64_t w = f1 - f0;
    std::fill(mean + f0, mean + f1, 0.0);
    std::fill(m2 + f0, m2 + f1, 0.0);
    if (n <= 0) return;
    for (int64_t t = 0; t < n; ++t) {
        const float* row = x + t * st + f0;
        for (int64_t j = 0; j < w; ++j) mean[f0 + j] += row[j];
    }
    for (int64_t j = 0; j < w; ++j) mean[f0 + j] /= static_cast<double>(n);
    shift.assign(static_cast<std::size_t>(w), 0.0);
    for (int64_t t = 0; t < n; ++t) {
        const float* row = x + t * st + f0;
        for (int64_t j = 0; j < w; ++j) {
            const double d = row[j] - mean[f0 + j];
            shift[j] += d;
            m2[f0 + j] += d * d;
        }
    }
    for (int64_t j = 0; j < w; ++j) {
        const double s = shift[j];
        mean[f0 + j] += s / static_cast<double>(n);
        m2[f0 + j] = std::max(0.0, m2[f0 + j] - s * s / static_cast<double>(n));
    }
}

}  // namespace

void frame_moments(const float* X, int64_t B, int64_t T, int64_t F, int64_t sb, int64_t st, int64_t sf,
                   const int64_t* count, double* mean, double* m2, int threads) {
    if (st == 1) {  // one task per (item, unit)
        parallel_for(static_cast<std::size_t>(B * F), static_cast<double>(T), 1 << 16, threads,
                     [&](std::size_t begin, std::size_t end, std::size_t) {
                         for (std::size_t i = begin; i < end; ++i) {
                             const int64_t b = static_cast<int64_t>(i) / F, f = static_cast<int64_t>(i) % F;
                             time_contiguous(X + b * sb + f * sf, count[b], mean + i, m2 + i);
                         }
                     });
        return;
    }
    // sf == 1: one task per (item, band of 256 units), so a band's frames stay in cache between passes
    const int64_t band = 256, bands = (F + band - 1) / band;
    parallel_for(static_cast<std::size_t>(B * bands), static_cast<double>(T * band), 1 << 16, threads,
                 [&](std::size_t begin, std::size_t end, std::size_t) {
                     std::vector<double> shift;
                     for (std::size_t i = begin; i < end; ++i) {
                         const int64_t b = static_cast<int64_t>(i) / bands, f0 = (static_cast<int64_t>(i) % bands) * band;
                         unit_contiguous(X + b * sb, count[b], st, f0, std::min(F, f0 + band), mean + b * F,
                                         m2 + b * F, shift);
                     }
                 });
}

}  // namespace nh
