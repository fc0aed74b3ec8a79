// The pybind11 boundary of the pooling kernel (pooling.cpp): per-item moments of a batch of frame
// activations, for neurohook.moments. Checked as in module.cpp (errors name the argument and its shape).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "checks.hpp"
#include "parallel.hpp"
#include "pooling.hpp"

namespace py = pybind11;

namespace {

using namespace nh::checks;

// Checked: X (B, T, F) float32 with non-negative strides and unit stride on time or on units (read-only
// allowed; a permuted torch view as it is), count (B,) integers in [0, T]; threads <= 0: num_threads().
py::tuple frame_moments(const py::array& X, const py::array& count, int threads) {
    bool strided = X.dtype().kind() == 'f' && X.itemsize() == 4 && X.ndim() == 3;
    for (py::ssize_t i = 0; strided && i < 3; ++i) strided = X.strides(i) >= 0 && X.strides(i) % 4 == 0;
    const int64_t B = strided ? X.shape(0) : 0, T = strided ? X.shape(1) : 0, F = strided ? X.shape(2) : 0;
    const int64_t st = T > 1 && strided ? X.strides(1) / 4 : 1, sf = F > 1 && strided ? X.strides(2) / 4 : 1;
    if (!strided || (st != 1 && sf != 1))
        throw py::type_error("X must be a float32 (B, T, F) array with unit stride on time or on units, got " +
                             dtype_of(X) + " with shape " + shape_of(X));
    const std::vector<int64_t> n = int_vector(count, "count", "(B,)");
    if (static_cast<int64_t>(n.size()) != B)
        throw py::value_error("count has " + std::to_string(n.size()) + " entries but X has " + std::to_string(B) + " items");
    check_range(n, T + 1, "count", "frame counts");
    py::array_t<double> mean({B, F}), m2({B, F});
    if (B * F > 0) {
        const float* x = static_cast<const float*>(X.data());
        double* mp = mean.mutable_data();
        double* qp = m2.mutable_data();
        py::gil_scoped_release nogil;
        nh::frame_moments(x, B, T, F, X.strides(0) / 4, st, sf, n.data(), mp, qp, threads > 0 ? threads : nh::num_threads());
    }
    return py::make_tuple(mean, m2);
}

}  // namespace

void bind_pooling(py::module_& m) {
    m.def("frame_moments", &frame_moments, py::arg("X"), py::arg("count"), py::arg("threads") = 0,
          "(mean, m2) float64 (B, F) over the first count[b] frames of each item of float32 X (B, T, F), on at most "
          "`threads` threads (0: the kernels' setting).");
}
