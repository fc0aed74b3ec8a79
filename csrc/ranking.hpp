// Neuron ranking from a linear probe's weights (the paper's Algorithm 1 and its ordering).
// All functions take a row-major C x D weight matrix; inputs are validated by module.cpp.
#pragma once

#include <cstdint>
#include <vector>

namespace nh {

// Per class, neuron indices sorted by |W[c, d]| (descending or ascending), ties by index.
// Returns C * D indices, row-major.
template <class T>
std::vector<int64_t> rank_rows(const T* W, int64_t C, int64_t D, bool descending);

// Shortest prefix of each class's sorted list whose cumulative |w| reaches p * total mass
// (the crossing neuron included). Returns one index list per class, in ranked order.
template <class T>
std::vector<std::vector<int64_t>> mass_prefixes(const T* W, int64_t C, int64_t D, double p, bool descending);

// NeuroX-style ordering: raise p through `steps`, appending each neuron when first selected;
// inside one step, by its largest class-normalised |w| (descending), then index. Neurons never
// selected (zero weights) are appended last in the same way, so `order` is a permutation of D.
// `cutoffs[s]` is the ordering's length after step s.
template <class T>
void ordering(const T* W, int64_t C, int64_t D, const std::vector<double>& steps,
              std::vector<int64_t>& order, std::vector<int64_t>& cutoffs);

}  // namespace nh
