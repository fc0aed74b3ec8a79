// Minimal fork-join helper: split [0, n) into contiguous chunks, one std::thread per chunk.
// Work is assigned statically, so every result is independent of the thread count.
#pragma once

#include <algorithm>
#include <cstddef>
#include <thread>
#include <vector>

namespace nh {

int num_threads();           // threads a kernel may use (set_num_threads, NEUROHOOK_NUM_THREADS, or cores)
void set_num_threads(int n); // n <= 0 restores the default

// Calls fn(begin, end, worker) over chunks of [0, n) with worker < max_workers. Runs inline when
// the estimated work (n * cost_per_item) is below `min_work`, or when max_workers is 1.
template <class F>
void parallel_for(std::size_t n, double cost_per_item, double min_work, int max_workers, F&& fn) {
    std::size_t workers = static_cast<std::size_t>(std::max(1, max_workers));
    const double work = static_cast<double>(n) * cost_per_item;
    workers = std::min<std::size_t>(workers, std::max<std::size_t>(1, static_cast<std::size_t>(work / min_work)));
    workers = std::min(workers, std::max<std::size_t>(n, 1));
    if (workers <= 1) {
        fn(std::size_t(0), n, std::size_t(0));
        return;
    }
    std::vector<std::thread> pool;
    pool.reserve(workers - 1);
    const std::size_t chunk = (n + workers - 1) / workers;
    for (std::size_t w = 1; w < workers; ++w) {
        const std::size_t begin = std::min(n, w * chunk), end = std::min(n, begin + chunk);
        pool.emplace_back([&fn, begin, end, w] { fn(begin, end, w); });
    }
    fn(std::size_t(0), std::min(n, chunk), std::size_t(0));
    for (auto& t : pool) t.join();
}

}  // namespace nh
