#include "ranking.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "parallel.hpp"

namespace nh {
namespace {

// One class's sorted neurons and the running sum of their |w| (in double, in sorted order).
struct SortedClass {
    std::vector<int64_t> idx;
    std::vector<double> cum;
};

// Fills `out` from neuron indices already in ranked order.
template <class T>
void accumulate(const T* w, SortedClass& out) {
    double run = 0.0;
    for (size_t i = 0; i < out.idx.size(); ++i) {
        run += std::fabs(static_cast<double>(w[out.idx[i]]));
        out.cum[i] = run;
    }
}

// Stable LSD radix sort, 8 bits a pass: returns 0..n-1 ordered by ascending key, ties in index
// order. Passes whose byte is the same for every key are skipped.
template <class Key>
std::vector<int64_t> sort_by_key(const std::vector<Key>& key) {
    const size_t n = key.size();
    std::vector<int64_t> idx(n), tmp(n);
    for (size_t i = 0; i < n; ++i) idx[i] = static_cast<int64_t>(i);
    for (unsigned shift = 0; shift < 8 * sizeof(Key); shift += 8) {
        size_t count[257] = {0};
        for (size_t i = 0; i < n; ++i) ++count[((key[i] >> shift) & 0xff) + 1];
        if (std::any_of(count + 1, count + 257, [n](size_t c) { return c == n; })) continue;
        for (int b = 0; b < 256; ++b) count[b + 1] += count[b];
        for (size_t i = 0; i < n; ++i) tmp[count[(key[idx[i]] >> shift) & 0xff]++] = idx[i];
        idx.swap(tmp);
    }
    return idx;
}

// Bit pattern of |v|: for non-negative floats it orders like the value itself.
inline uint32_t magnitude_bits(float v) {
    uint32_t bits;
    const float a = std::fabs(v);
    std::memcpy(&bits, &a, sizeof bits);
    return bits;
}
inline uint64_t magnitude_bits(double v) {
    uint64_t bits;
    const double a = std::fabs(v);
    std::memcpy(&bits, &a, sizeof bits);
    return bits;
}

// One class's neurons by |w| (descending or ascending; ties by index) with their running mass.
template <class T>
void sort_class(const T* w, int64_t D, bool descending, SortedClass& out) {
    std::vector<decltype(magnitude_bits(T()))> key(static_cast<size_t>(D));
    for (int64_t d = 0; d < D; ++d) key[d] = descending ? ~magnitude_bits(w[d]) : magnitude_bits(w[d]);
    out.idx = sort_by_key(key);
    out.cum.resize(D);
    accumulate(w, out);
}

template <class T>
std::vector<SortedClass> sort_all(const T* W, int64_t C, int64_t D, bool descending) {
    std::vector<SortedClass> sorted(static_cast<size_t>(C));
    // ~D log D comparisons per class; threads pay off from a few thousand neurons.
    parallel_for(static_cast<size_t>(C), static_cast<double>(D) * 16.0, 2e5, num_threads(),
                 [&](size_t b, size_t e, size_t) {
                     for (size_t c = b; c < e; ++c) sort_class(W + c * D, D, descending, sorted[c]);
                 });
    return sorted;
}

// Length of the shortest prefix whose cumulative mass reaches p * total (at least 1).
int64_t prefix_length(const SortedClass& s, double p) {
    const double target = p * s.cum.back();
    const auto it = std::lower_bound(s.cum.begin(), s.cum.end(), target);
    const int64_t k = static_cast<int64_t>(it - s.cum.begin()) + 1;
    return std::min<int64_t>(k, static_cast<int64_t>(s.cum.size()));
}

}  // namespace

template <class T>
std::vector<int64_t> rank_rows(const T* W, int64_t C, int64_t D, bool descending) {
    const auto sorted = sort_all(W, C, D, descending);
    std::vector<int64_t> out(static_cast<size_t>(C * D));
    for (int64_t c = 0; c < C; ++c) std::copy(sorted[c].idx.begin(), sorted[c].idx.end(), out.begin() + c * D);
    return out;
}

template <class T>
std::vector<std::vector<int64_t>> mass_prefixes(const T* W, int64_t C, int64_t D, double p, bool descending) {
    const auto sorted = sort_all(W, C, D, descending);
    std::vector<std::vector<int64_t>> out(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) {
        const int64_t k = prefix_length(sorted[c], p);
        out[c].assign(sorted[c].idx.begin(), sorted[c].idx.begin() + k);
    }
    return out;
}

template <class T>
void ordering(const T* W, int64_t C, int64_t D, const std::vector<double>& steps,
              std::vector<int64_t>& order, std::vector<int64_t>& cutoffs) {
    const auto sorted = sort_all(W, C, D, true);

    // Tie-break inside one step: the neuron's largest share of any class's mass.
    std::vector<double> score(static_cast<size_t>(D), 0.0);
    for (int64_t c = 0; c < C; ++c) {
        const double total = sorted[c].cum.back();
        if (total <= 0.0) continue;
        const T* w = W + c * D;
        for (int64_t d = 0; d < D; ++d) score[d] = std::max(score[d], std::fabs(static_cast<double>(w[d])) / total);
    }

    // The step at which each neuron is first selected (steps.size() for never).
    const int64_t S = static_cast<int64_t>(steps.size());
    std::vector<int64_t> step_of(static_cast<size_t>(D), S);
    std::vector<int64_t> taken(static_cast<size_t>(C), 0);  // prefix length already scanned per class
    for (int64_t s = 0; s < S; ++s) {
        for (int64_t c = 0; c < C; ++c) {
            const int64_t k = prefix_length(sorted[c], steps[s]);
            for (int64_t j = taken[c]; j < k; ++j) step_of[sorted[c].idx[j]] = std::min(step_of[sorted[c].idx[j]], s);
            taken[c] = std::max(taken[c], k);
        }
    }

    // Order: by step, then score (descending), then index: a counting sort by step of the neurons
    // already sorted by score.
    std::vector<uint64_t> score_key(static_cast<size_t>(D));
    for (int64_t d = 0; d < D; ++d) score_key[d] = ~magnitude_bits(score[d]);
    const std::vector<int64_t> by_score = sort_by_key(score_key);
    std::vector<int64_t> start(static_cast<size_t>(S + 2), 0);
    for (int64_t d = 0; d < D; ++d) ++start[step_of[d] + 1];
    for (int64_t s = 0; s <= S; ++s) start[s + 1] += start[s];
    cutoffs.assign(start.begin() + 1, start.begin() + 1 + S);
    order.assign(static_cast<size_t>(D), 0);
    for (int64_t d : by_score) order[start[step_of[d]]++] = d;
}

#define NH_INSTANTIATE(T)                                                                             \
    template std::vector<int64_t> rank_rows<T>(const T*, int64_t, int64_t, bool);                    \
    template std::vector<std::vector<int64_t>> mass_prefixes<T>(const T*, int64_t, int64_t, double, bool); \
    template void ordering<T>(const T*, int64_t, int64_t, const std::vector<double>&,                \
                              std::vector<int64_t>&, std::vector<int64_t>&);
NH_INSTANTIATE(float)
NH_INSTANTIATE(double)
#undef NH_INSTANTIATE

}  // namespace nh
