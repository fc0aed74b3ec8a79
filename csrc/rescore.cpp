// Both kernels walk X in blocks of R rows (threads over blocks). A block is read once and
// transposed to (D x R) float64, and the logits are kept class-major (C x R) so that every update
// and the argmax are short branch-free loops across the R rows: the compiler turns them into SIMD
// code. The hot loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at run time
// (target_clones), so one portable wheel still uses the host's vector units.
#include "rescore.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "parallel.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define NH_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NH_CLONES
#endif
#define NH_INLINE inline __attribute__((always_inline))

// The vector types below are passed by value only between always-inline functions of one clone, and
// their heap arrays are 64-byte aligned by hand (VectorBuffer): GCC's notes on the baseline ABI of such
// values and on alignment dropped from template arguments do not apply, so they are silenced here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

namespace nh {
namespace {

constexpr int64_t R = 8;  // rows per block: one AVX-512 register of float64
// R float64 lanes, one per row of a block (GCC/Clang vector extension, lowered to the widest
// registers of the instruction set the clone is compiled for).
typedef double Lanes __attribute__((vector_size(R * sizeof(double)), aligned(64)));
typedef int64_t Mask __attribute__((vector_size(R * sizeof(int64_t)), aligned(64)));
typedef float LanesF __attribute__((vector_size(R * sizeof(float)), aligned(32)));
typedef int32_t Count __attribute__((vector_size(R * sizeof(int32_t)), aligned(32)));

// A block keeps X in the input's own precision (float32 blocks take half the cache; widening to
// float64 for the arithmetic is exact).
template <class T>
struct Store;
template <>
struct Store<float> {
    typedef LanesF type;
};
template <>
struct Store<double> {
    typedef Lanes type;
};
NH_INLINE Lanes widen(const LanesF& v) { return __builtin_convertvector(v, Lanes); }
NH_INLINE Lanes widen(const Lanes& v) { return v; }

// A zero-initialised heap array of vectors, 64-byte aligned (std::vector does not guarantee it:
// the baseline ISA caps the type's natural alignment below what the AVX-512 clone assumes).
template <class V>
class VectorBuffer {
   public:
    explicit VectorBuffer(int64_t n)
        : data_(static_cast<V*>(std::aligned_alloc(64, static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(V)))) {
        if (!data_) throw std::bad_alloc();
        std::memset(static_cast<void*>(data_), 0, static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(V));
    }
    ~VectorBuffer() { std::free(data_); }
    VectorBuffer(const VectorBuffer&) = delete;
    VectorBuffer& operator=(const VectorBuffer&) = delete;
    V* data() { return data_; }
    V& operator[](int64_t i) { return data_[i]; }

   private:
    V* data_;
};
using LaneBuffer = VectorBuffer<Lanes>;

template <class T>
struct Problem {
    const T* X;
    int64_t N, D;
    const T* W;
    int64_t C;
    const T* b;
    const int64_t* y;
};

// The unsigned integer of a float's width, and its exponent bits.
template <class T>
struct FloatBits;
template <>
struct FloatBits<float> {
    typedef uint32_t type;
    static constexpr uint32_t exponent = 0x7f800000u;
};
template <>
struct FloatBits<double> {
    typedef uint64_t type;
    static constexpr uint64_t exponent = 0x7ff0000000000000ull;
};

// True when no value is NaN or Inf: an all-ones exponent, tested on the bits (a vectorisable
// integer reduction, unlike a floating-point one).
template <class T>
NH_INLINE bool all_finite(const T* v, int64_t n) {
    typedef typename FloatBits<T>::type U;
    U bad = 0;
    for (int64_t i = 0; i < n; ++i) {
        U bits;
        std::memcpy(&bits, v + i, sizeof bits);
        bad |= static_cast<U>((bits & FloatBits<T>::exponent) == FloatBits<T>::exponent);
    }
    return bad == 0;
}

// Loads rows [n0, n0 + R) of X as K vectors of R rows: xt[j] holds column cols[j] (column j when
// cols is null); rows past N read from `zeros` (length D). Their labels go to yb (-1 for missing
// rows, never counted). Returns false if a row holds NaN or Inf.
template <class T, class S>
NH_INLINE bool load_block(const Problem<T>& p, int64_t n0, const int64_t* cols, int64_t K, const T* zeros, S* xt,
                          Lanes& yb) {
    const T* rows[R];
    for (int64_t r = 0; r < R; ++r) {
        const bool real = n0 + r < p.N;
        yb[r] = real ? static_cast<double>(p.y[n0 + r]) : -1.0;
        rows[r] = real ? p.X + (n0 + r) * p.D : zeros;
        if (real && !all_finite(rows[r], p.D)) return false;
    }
    for (int64_t j = 0; j < K; ++j) {
        const int64_t d = cols ? cols[j] : j;
        S v;
        for (int64_t r = 0; r < R; ++r) v[r] = rows[r][d];
        xt[j] = v;
    }
    return true;
}

// acc[c] += sign * w[c] * xd for every class c (acc: C vectors of R rows)
template <class S, class T>
NH_INLINE void add_neuron(Lanes* acc, const T* w, const S& x, int64_t C, double sign) {
    const Lanes xd = widen(x);
    for (int64_t c = 0; c < C; ++c) acc[c] += (sign * static_cast<double>(w[c])) * xd;
}

// Per-row outcome of a block (-1 where correct, else 0), for per-lane counters.
NH_INLINE Mask block_hit_mask(const Lanes* acc, int64_t C, const Lanes& yb) {
    const Lanes zero = {};
    Lanes pred = zero;
    if (C == 1) {
        pred = acc[0] > zero ? zero + 1.0 : zero;
    } else {
        Lanes best = acc[0];
        for (int64_t c = 1; c < C; ++c) {
            const Mask gt = acc[c] > best;
            best = gt ? acc[c] : best;
            pred = gt ? zero + static_cast<double>(c) : pred;
        }
    }
    return pred == yb;
}

// Correct predictions in a block: argmax over classes (first maximum wins) compared with the
// labels; with C == 1 the probe is binary, class 1 where the logit is positive.
NH_INLINE int64_t block_hits(const Lanes* acc, int64_t C, const Lanes& yb) {
    const Mask hit = block_hit_mask(acc, C, yb);
    int64_t hits = 0;
    for (int64_t r = 0; r < R; ++r) hits -= hit[r];
    return hits;
}

NH_INLINE void init_logits(Lanes* acc, const double* bias, int64_t C) {
    const Lanes zero = {};
    for (int64_t c = 0; c < C; ++c) acc[c] = zero + bias[c];
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

// W (C x D) -> rows of W^T (one per listed column).
template <class T>
std::vector<T> weight_rows(const T* W, int64_t C, int64_t D, const int64_t* cols, int64_t K) {
    std::vector<T> wt(static_cast<size_t>(K * C));
    for (int64_t j = 0; j < K; ++j)
        for (int64_t c = 0; c < C; ++c) wt[j * C + c] = W[c * D + (cols ? cols[j] : j)];
    return wt;
}

// The block loops are instantiated for a compile-time class count CC (1..8, where the logits of a
// block live in registers) and for CC = 0 (any C, logits in memory).
template <int64_t CC, class T>
NH_INLINE void masked_blocks(const Problem<T>& p, const MaskPlan& plan, const T* wt, const double* bias,
                             int64_t M, size_t bb, size_t be, int64_t* correct, std::atomic<int64_t>* bad) {
    const int64_t C = CC ? CC : p.C;
    VectorBuffer<typename Store<T>::type> xt(p.D);
    const std::vector<T> zeros(static_cast<size_t>(p.D), T(0));
    LaneBuffer nodes((M + 2) * C);  // logits of every node of the plan
    Lanes fixed[CC ? CC : 1];
    LaneBuffer heap(CC ? 1 : C);
    Lanes* a = CC ? fixed : heap.data();  // the node being computed
    Lanes yb;
    for (size_t blk = bb; blk < be; ++blk) {
        const int64_t n0 = static_cast<int64_t>(blk) * R;
        if (!load_block(p, n0, nullptr, p.D, zeros.data(), xt.data(), yb)) {
            record_bad(*bad, n0);
            return;
        }
        init_logits(nodes.data(), bias, C);
        for (size_t i = 1; i < plan.eval.size(); ++i) {
            const int64_t v = plan.eval[i];
            for (int64_t c = 0; c < C; ++c) a[c] = nodes[plan.parent[v] * C + c];
            for (int64_t d : plan.add[v]) add_neuron(a, wt + d * C, xt[d], C, 1.0);
            for (int64_t d : plan.sub[v]) add_neuron(a, wt + d * C, xt[d], C, -1.0);
            for (int64_t c = 0; c < C; ++c) nodes[v * C + c] = a[c];
        }
        for (int64_t m = 0; m < M; ++m) correct[m] += block_hits(nodes.data() + (m + 1) * C, C, yb);
    }
}

template <int64_t CC, class T>
NH_INLINE void prefix_blocks(const Problem<T>& p, const int64_t* order, int64_t K, const T* wo,
                             const double* bias, size_t bb, size_t be, int64_t* correct, std::atomic<int64_t>* bad) {
    const int64_t C = CC ? CC : p.C;
    VectorBuffer<typename Store<T>::type> xt(K);  // neurons in ranking order, so reads stream
    const std::vector<T> zeros(static_cast<size_t>(p.D), T(0));
    VectorBuffer<Count> lane_hits(K);             // per-row-lane counts of correct rows, negated
    Lanes fixed[CC ? CC : 1];
    LaneBuffer heap(CC ? 1 : C);
    Lanes* acc = CC ? fixed : heap.data();
    Lanes yb;
    for (size_t blk = bb; blk < be; ++blk) {
        const int64_t n0 = static_cast<int64_t>(blk) * R;
        if (!load_block(p, n0, order, K, zeros.data(), xt.data(), yb)) {
            record_bad(*bad, n0);
            break;
        }
        init_logits(acc, bias, C);
        for (int64_t j = 0; j < K; ++j) {
            add_neuron(acc, wo + j * C, xt[j], C, 1.0);
            lane_hits[j] += __builtin_convertvector(block_hit_mask(acc, C, yb), Count);
        }
    }
    for (int64_t j = 0; j < K; ++j)
        for (int64_t r = 0; r < R; ++r) correct[j] -= lane_hits[j][r];
}

#define NH_BY_CLASSES(C, CALL)             \
    switch (C) {                           \
        case 1: CALL(1); break;            \
        case 2: CALL(2); break;            \
        case 3: CALL(3); break;            \
        case 4: CALL(4); break;            \
        case 5: CALL(5); break;            \
        case 6: CALL(6); break;            \
        case 7: CALL(7); break;            \
        case 8: CALL(8); break;            \
        default: CALL(0);                  \
    }
#define NH_MASKED(CC) masked_blocks<CC>(p, plan, wt, bias, M, bb, be, correct, bad)
#define NH_PREFIX(CC) prefix_blocks<CC>(p, order, K, wo, bias, bb, be, correct, bad)

// Instruction-set clones of the block loops (the inline bodies above are compiled into each).
NH_CLONES void masked_blocks_f32(const Problem<float>& p, const MaskPlan& plan, const float* wt, const double* bias,
                                 int64_t M, size_t bb, size_t be, int64_t* correct, std::atomic<int64_t>* bad) {
    NH_BY_CLASSES(p.C, NH_MASKED)
}
NH_CLONES void masked_blocks_f64(const Problem<double>& p, const MaskPlan& plan, const double* wt, const double* bias,
                                 int64_t M, size_t bb, size_t be, int64_t* correct, std::atomic<int64_t>* bad) {
    NH_BY_CLASSES(p.C, NH_MASKED)
}
NH_CLONES void prefix_blocks_f32(const Problem<float>& p, const int64_t* order, int64_t K, const float* wo,
                                 const double* bias, size_t bb, size_t be, int64_t* correct, std::atomic<int64_t>* bad) {
    NH_BY_CLASSES(p.C, NH_PREFIX)
}
NH_CLONES void prefix_blocks_f64(const Problem<double>& p, const int64_t* order, int64_t K, const double* wo,
                                 const double* bias, size_t bb, size_t be, int64_t* correct, std::atomic<int64_t>* bad) {
    NH_BY_CLASSES(p.C, NH_PREFIX)
}

void run_masked(const Problem<float>& p, const MaskPlan& plan, const float* wt, const double* bias, int64_t M,
                size_t bb, size_t be, int64_t* correct, std::atomic<int64_t>* bad) {
    masked_blocks_f32(p, plan, wt, bias, M, bb, be, correct, bad);
}
void run_masked(const Problem<double>& p, const MaskPlan& plan, const double* wt, const double* bias, int64_t M,
                size_t bb, size_t be, int64_t* correct, std::atomic<int64_t>* bad) {
    masked_blocks_f64(p, plan, wt, bias, M, bb, be, correct, bad);
}
void run_prefix(const Problem<float>& p, const int64_t* order, int64_t K, const float* wo, const double* bias,
                size_t bb, size_t be, int64_t* correct, std::atomic<int64_t>* bad) {
    prefix_blocks_f32(p, order, K, wo, bias, bb, be, correct, bad);
}
void run_prefix(const Problem<double>& p, const int64_t* order, int64_t K, const double* wo, const double* bias,
                size_t bb, size_t be, int64_t* correct, std::atomic<int64_t>* bad) {
    prefix_blocks_f64(p, order, K, wo, bias, bb, be, correct, bad);
}

// Runs `body(begin, end, counts_of_worker)` over all row blocks and sums the per-worker counts.
template <class F>
std::vector<int64_t> over_blocks(int64_t N, int64_t outputs, double cost_per_block, F&& body) {
    const int workers = std::max(1, num_threads());
    std::vector<std::vector<int64_t>> parts(workers, std::vector<int64_t>(static_cast<size_t>(outputs), 0));
    parallel_for(static_cast<size_t>((N + R - 1) / R), cost_per_block, 2e6, workers,
                 [&](size_t bb, size_t be, size_t worker) { body(bb, be, parts[worker].data()); });
    std::vector<int64_t> total(static_cast<size_t>(outputs), 0);
    for (const auto& part : parts)
        for (int64_t i = 0; i < outputs; ++i) total[i] += part[i];
    return total;
}

template <class T>
std::vector<double> as_double(const T* b, int64_t C) {
    return std::vector<double>(b, b + C);
}

}  // namespace

template <class T>
std::vector<int64_t> masked_correct(const T* X, int64_t N, int64_t D, const T* W, int64_t C, const T* b,
                                    const int64_t* y, const uint8_t* masks, int64_t M, int64_t* bad_row) {
    const Problem<T> p{X, N, D, W, C, b, y};
    const MaskPlan plan = plan_masks(masks, M, D);
    const std::vector<T> wt = weight_rows(W, C, D, nullptr, D);
    const std::vector<double> bias = as_double(b, C);
    int64_t visits = 0;
    for (int64_t v : plan.eval) visits += static_cast<int64_t>(plan.add[v].size() + plan.sub[v].size());
    std::atomic<int64_t> bad{-1};
    auto counts = over_blocks(N, M, static_cast<double>((visits + D) * C * R), [&](size_t bb, size_t be, int64_t* out) {
        run_masked(p, plan, wt.data(), bias.data(), M, bb, be, out, &bad);
    });
    *bad_row = bad.load();
    return counts;
}

template <class T>
std::vector<int64_t> prefix_correct(const T* X, int64_t N, int64_t D, const T* W, int64_t C, const T* b,
                                    const int64_t* y, const int64_t* order, int64_t K, int64_t* bad_row) {
    const Problem<T> p{X, N, D, W, C, b, y};
    const std::vector<T> wo = weight_rows(W, C, D, order, K);
    const std::vector<double> bias = as_double(b, C);
    std::atomic<int64_t> bad{-1};
    auto counts = over_blocks(N, K, static_cast<double>((K + D) * C * R), [&](size_t bb, size_t be, int64_t* out) {
        run_prefix(p, order, K, wo.data(), bias.data(), bb, be, out, &bad);
    });
    *bad_row = bad.load();
    return counts;
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
