#include "ranking.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

#include "parallel.hpp"

namespace nh {
namespace {

// One class's sorted neurons and the running sum of their |w| (in double, in sorted order).
struct SortedClass {
    std::vector<int64_t> idx;
    std::vector<double> cum;
};

template <class T>
void sort_class(const T* w, int64_t D, bool descending, SortedClass& out) {
    std::vector<std::pair<double, int64_t>> keyed(static_cast<size_t>(D));
    for (int64_t d = 0; d < D; ++d) keyed[d] = {std::fabs(static_cast<double>(w[d])), d};
    if (descending) {
        std::sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) {
            return a.first > b.first || (a.first == b.first && a.second < b.second);
        });
    } else {
        std::sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) {
            return a.first < b.first || (a.first == b.first && a.second < b.second);
        });
    }
    out.idx.resize(D);
    out.cum.resize(D);
    double run = 0.0;
    for (int64_t d = 0; d < D; ++d) {
        out.idx[d] = keyed[d].second;
        run += keyed[d].first;
        out.cum[d] = run;
    }
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
    auto by_score = [&score](int64_t a, int64_t b) {
        return score[a] > score[b] || (score[a] == score[b] && a < b);
    };

    std::vector<char> seen(static_cast<size_t>(D), 0);
    std::vector<int64_t> taken(static_cast<size_t>(C), 0);  // prefix length already scanned per class
    std::vector<int64_t> group;
    order.clear();
    order.reserve(D);
    cutoffs.assign(steps.size(), 0);
    for (size_t s = 0; s < steps.size(); ++s) {
        group.clear();
        for (int64_t c = 0; c < C; ++c) {
            const int64_t k = prefix_length(sorted[c], steps[s]);
            for (int64_t j = taken[c]; j < k; ++j) {
                const int64_t n = sorted[c].idx[j];
                if (!seen[n]) {
                    seen[n] = 1;
                    group.push_back(n);
                }
            }
            taken[c] = std::max(taken[c], k);
        }
        std::sort(group.begin(), group.end(), by_score);
        order.insert(order.end(), group.begin(), group.end());
        cutoffs[s] = static_cast<int64_t>(order.size());
    }
    group.clear();
    for (int64_t d = 0; d < D; ++d)
        if (!seen[d]) group.push_back(d);
    std::sort(group.begin(), group.end(), by_score);
    order.insert(order.end(), group.begin(), group.end());
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
