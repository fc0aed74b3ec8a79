// Both kernels walk X one row at a time (threads over rows). For each row they keep the C logits
// in a small float64 vector (classes padded to a multiple of 4) and add neurons one by one, reading
// W^T rows that stay in cache, so X is read exactly once and never copied or masked.
#include "rescore.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "parallel.hpp"

namespace nh {
namespace {

int64_t padded(int64_t C) { return (C + 3) / 4 * 4; }

// acc[0:Cp] += x * w[0:Cp], Cp a multiple of 4 (written so the compiler vectorises it).
inline void axpy(double* acc, const double* w, double x, int64_t Cp) {
    for (int64_t c = 0; c < Cp; c += 4) {
        acc[c] += x * w[c];
        acc[c + 1] += x * w[c + 1];
        acc[c + 2] += x * w[c + 2];
        acc[c + 3] += x * w[c + 3];
    }
}

// Predicted class (first maximum; for C == 1, class 1 where the logit is positive) and the margin
// by which the logits would have to move to change it.
inline int64_t predict(const double* acc, int64_t C, double* margin) {
    if (C == 1) {
        *margin = std::fabs(acc[0]);
        return acc[0] > 0.0 ? 1 : 0;
    }
    int64_t best = 0;
    for (int64_t c = 1; c < C; ++c)
        if (acc[c] > acc[best]) best = c;
    double second = -INFINITY;
    for (int64_t c = 0; c < C; ++c)
        if (c != best) second = std::max(second, acc[c]);
    *margin = acc[best] - second;
    return best;
}

// W (C x D) -> rows of W^T for the given columns, each padded with zeros to Cp classes.
template <class T>
std::vector<double> weight_rows(const T* W, int64_t C, int64_t D, const int64_t* cols, int64_t K, int64_t Cp) {
    std::vector<double> wt(static_cast<size_t>(K * Cp), 0.0);
    for (int64_t j = 0; j < K; ++j)
        for (int64_t c = 0; c < C; ++c) wt[j * Cp + c] = static_cast<double>(W[c * D + (cols ? cols[j] : j)]);
    return wt;
}

template <class T>
bool row_is_finite(const T* row, int64_t D) {
    double probe = 0.0;  // NaN once any value is NaN or Inf
    for (int64_t d = 0; d < D; ++d) probe += static_cast<double>(row[d]) * 0.0;
    return probe == 0.0;
}

void record_bad(std::atomic<int64_t>& first_bad, int64_t n) {
    int64_t cur = first_bad.load();
    while ((cur < 0 || n < cur) && !first_bad.compare_exchange_weak(cur, n)) {
    }
}

// Evaluation plan for many masks: a tree rooted at the empty set in which each mask is computed
// from the cheapest already-computed set (empty, full, or another mask), so nested and
// complementary masks cost only their differences. Built as a minimum spanning tree (Prim) over
// the symmetric-difference sizes, measured with bitsets.
struct MaskPlan {
    std::vector<int64_t> parent;                 // node -> parent node (root 0 = empty set)
    std::vector<int64_t> eval;                   // nodes in an order where parents come first
    std::vector<std::vector<int64_t>> add, sub;  // neurons to add / remove relative to the parent
};

MaskPlan plan_masks(const uint8_t* masks, int64_t M, int64_t D) {
    const int64_t V = M + 2, full = M + 1, words = (D + 63) / 64;
    std::vector<uint64_t> bits(static_cast<size_t>(V * words), 0);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t d = 0; d < D; ++d)
            if (masks[m * D + d]) bits[(m + 1) * words + d / 64] |= uint64_t(1) << (d % 64);
    for (int64_t d = 0; d < D; ++d) bits[full * words + d / 64] |= uint64_t(1) << (d % 64);
    auto has = [&](int64_t v, int64_t d) { return (bits[v * words + d / 64] >> (d % 64)) & 1; };
    auto distance = [&](int64_t a, int64_t b) {
        int64_t n = 0;
        for (int64_t w = 0; w < words; ++w) n += __builtin_popcountll(bits[a * words + w] ^ bits[b * words + w]);
        return n;
    };

    MaskPlan plan;
    plan.parent.assign(V, 0);
    std::vector<int64_t> best(V);
    std::vector<char> done(V, 0);
    done[0] = 1;
    plan.eval.push_back(0);
    for (int64_t v = 1; v < V; ++v) best[v] = distance(0, v);
    for (int64_t step = 1; step < V; ++step) {
        int64_t pick = -1;
        for (int64_t v = 1; v < V; ++v)
            if (!done[v] && (pick < 0 || best[v] < best[pick])) pick = v;
        done[pick] = 1;
        plan.eval.push_back(pick);
        for (int64_t v = 1; v < V; ++v) {
            if (done[v]) continue;
            const int64_t dv = distance(pick, v);
            if (dv < best[v]) {
                best[v] = dv;
                plan.parent[v] = pick;
            }
        }
    }
    // The full set is only worth computing when some mask is derived from it.
    if (std::none_of(plan.parent.begin() + 1, plan.parent.end(), [&](int64_t p) { return p == full; }))
        plan.eval.erase(std::find(plan.eval.begin(), plan.eval.end(), full));

    plan.add.resize(V);
    plan.sub.resize(V);
    for (int64_t v = 1; v < V; ++v) {
        const int64_t p = plan.parent[v];
        for (int64_t d = 0; d < D; ++d) {
            if (has(v, d) && !has(p, d)) plan.add[v].push_back(d);
            if (has(p, d) && !has(v, d)) plan.sub[v].push_back(d);
        }
    }
    return plan;
}

}  // namespace

template <class T>
std::vector<int64_t> masked_correct(const T* X, int64_t N, int64_t D, const T* W, int64_t C, const T* b,
                                    const int64_t* y, const uint8_t* masks, int64_t M, int64_t* bad_row) {
    const int64_t Cp = padded(C);
    const MaskPlan plan = plan_masks(masks, M, D);
    const std::vector<double> wt = weight_rows(W, C, D, nullptr, D, Cp);
    int64_t visits = 0;
    for (int64_t v : plan.eval) visits += static_cast<int64_t>(plan.add[v].size() + plan.sub[v].size());

    const int workers = std::max(1, num_threads());
    std::vector<std::vector<int64_t>> correct(workers, std::vector<int64_t>(M, 0));
    std::atomic<int64_t> first_bad{-1};
    parallel_for(static_cast<size_t>(N), static_cast<double>((visits + D) * Cp), 2e6, workers,
                 [&](size_t begin, size_t end, size_t worker) {
        std::vector<double> acc(static_cast<size_t>((M + 2) * Cp));
        for (size_t n = begin; n < end; ++n) {
            const T* row = X + n * D;
            if (!row_is_finite(row, D)) {
                record_bad(first_bad, static_cast<int64_t>(n));
                return;
            }
            for (int64_t c = 0; c < Cp; ++c) acc[c] = c < C ? static_cast<double>(b[c]) : 0.0;
            for (size_t i = 1; i < plan.eval.size(); ++i) {
                const int64_t v = plan.eval[i];
                double* a = acc.data() + v * Cp;
                std::memcpy(a, acc.data() + plan.parent[v] * Cp, sizeof(double) * Cp);
                for (int64_t d : plan.add[v]) axpy(a, wt.data() + d * Cp, static_cast<double>(row[d]), Cp);
                for (int64_t d : plan.sub[v]) axpy(a, wt.data() + d * Cp, -static_cast<double>(row[d]), Cp);
            }
            double margin;
            for (int64_t m = 0; m < M; ++m) correct[worker][m] += predict(acc.data() + (m + 1) * Cp, C, &margin) == y[n];
        }
    });
    *bad_row = first_bad.load();
    std::vector<int64_t> total(M, 0);
    for (const auto& part : correct)
        for (int64_t m = 0; m < M; ++m) total[m] += part[m];
    return total;
}

// The prediction can only change once the logits have moved by the margin measured at the last
// argmax: adding neuron j moves any logit difference by at most |x_j| * (max_c w_jc - min_c w_jc).
// So the argmax is recomputed only when that bound is used up, and correctness is recorded in a
// difference array (one entry per change of outcome) that is summed at the end.
template <class T>
std::vector<int64_t> prefix_correct(const T* X, int64_t N, int64_t D, const T* W, int64_t C, const T* b,
                                    const int64_t* y, const int64_t* order, int64_t K, int64_t* bad_row) {
    const int64_t Cp = padded(C);
    const std::vector<double> wo = weight_rows(W, C, D, order, K, Cp);
    std::vector<double> spread(static_cast<size_t>(K));
    for (int64_t j = 0; j < K; ++j) {
        const double* w = wo.data() + j * Cp;
        const double hi = *std::max_element(w, w + C), lo = *std::min_element(w, w + C);
        spread[j] = (C == 1 ? std::fabs(w[0]) : hi - lo) * (1.0 + 1e-12);
    }

    const int workers = std::max(1, num_threads());
    std::vector<std::vector<int64_t>> diff(workers, std::vector<int64_t>(K + 1, 0));
    std::atomic<int64_t> first_bad{-1};
    parallel_for(static_cast<size_t>(N), static_cast<double>((K + D) * Cp), 2e6, workers,
                 [&](size_t begin, size_t end, size_t worker) {
        std::vector<double> acc(static_cast<size_t>(Cp));
        int64_t* dif = diff[worker].data();
        for (size_t n = begin; n < end; ++n) {
            const T* row = X + n * D;
            if (!row_is_finite(row, D)) {
                record_bad(first_bad, static_cast<int64_t>(n));
                return;
            }
            for (int64_t c = 0; c < Cp; ++c) acc[c] = c < C ? static_cast<double>(b[c]) : 0.0;
            double bound = -1.0;  // forces an argmax at the first step
            int64_t hit = 0;
            for (int64_t j = 0; j < K; ++j) {
                const double x = static_cast<double>(row[order[j]]);
                axpy(acc.data(), wo.data() + j * Cp, x, Cp);
                bound -= std::fabs(x) * spread[j];
                if (bound > 0.0) continue;
                const int64_t now = predict(acc.data(), C, &bound) == y[n];
                if (now != hit) {
                    dif[j] += now - hit;
                    hit = now;
                }
            }
        }
    });
    *bad_row = first_bad.load();
    std::vector<int64_t> total(K, 0);
    int64_t run = 0;
    for (int64_t j = 0; j < K; ++j) {
        for (const auto& part : diff) run += part[j];
        total[j] = run;
    }
    return total;
}

#define NH_INSTANTIATE(T)                                                                              \
    template std::vector<int64_t> masked_correct<T>(const T*, int64_t, int64_t, const T*, int64_t, const T*, \
                                                    const int64_t*, const uint8_t*, int64_t, int64_t*);    \
    template std::vector<int64_t> prefix_correct<T>(const T*, int64_t, int64_t, const T*, int64_t, const T*, \
                                                    const int64_t*, const int64_t*, int64_t, int64_t*);
NH_INSTANTIATE(float)
NH_INSTANTIATE(double)
#undef NH_INSTANTIATE

}  // namespace nh
