// The pybind11 boundary of the pooling kernel (pooling.cpp): per-item moments of a batch of frame
// activations, returned (neurohook.moments) or written into a RunningPool's CPU storage rows
// (neurohook.pooling). Checked as in module.cpp (errors name the argument and its shape).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <vector>

#include "checks.hpp"
#include "parallel.hpp"
#include "pooling.hpp"

namespace py = pybind11;

namespace {

using namespace nh::checks;

// Frames as the kernel reads them: (B, T, F) at element strides (sb, st, sf).
struct Frames {
    const float* data = nullptr;
    int64_t B = 0, T = 0, F = 0, sb = 0, st = 1, sf = 1;
};

// X as frames: float32 (B, T, F), or (B, F, T) when time_last, or (B, F) as one frame each, with
// non-negative strides and unit stride on time or on units; false where X is none of these.
bool as_frames(const py::array& X, bool time_last, Frames& f) {
    bool ok = X.dtype().kind() == 'f' && X.itemsize() == 4 && (X.ndim() == 3 || (X.ndim() == 2 && !time_last));
    for (py::ssize_t i = 0; ok && i < X.ndim(); ++i) ok = X.strides(i) >= 0 && X.strides(i) % 4 == 0;
    if (!ok) return false;
    const int ta = X.ndim() == 2 ? -1 : (time_last ? 2 : 1), fa = X.ndim() == 2 ? 1 : (time_last ? 1 : 2);
    f.data = static_cast<const float*>(X.data());
    f.B = X.shape(0), f.T = ta < 0 ? 1 : X.shape(ta), f.F = X.shape(fa), f.sb = X.strides(0) / 4;
    f.st = f.T > 1 ? X.strides(ta) / 4 : 1, f.sf = f.F > 1 ? X.strides(fa) / 4 : 1;
    return f.st == 1 || f.sf == 1;
}

// Checked: X (B, T, F) float32 as as_frames reads it (read-only allowed; a permuted torch view as it
// is), count (B,) integers in [0, T]; threads <= 0: num_threads().
py::tuple frame_moments(const py::array& X, const py::array& count, int threads) {
    Frames f;
    if (!as_frames(X, false, f) || X.ndim() != 3)
        throw py::type_error("X must be a float32 (B, T, F) array with unit stride on time or on units, got " +
                             dtype_of(X) + " with shape " + shape_of(X));
    const std::vector<int64_t> n = int_vector(count, "count", "(B,)");
    if (static_cast<int64_t>(n.size()) != f.B)
        throw py::value_error("count has " + std::to_string(n.size()) + " entries but X has " + std::to_string(f.B) + " items");
    check_range(n, f.T + 1, "count", "frame counts");
    py::array_t<double> mean({f.B, f.F}), m2({f.B, f.F});
    if (f.B * f.F > 0) {
        double* mp = mean.mutable_data();
        double* qp = m2.mutable_data();
        py::gil_scoped_release nogil;
        nh::frame_moments(f.data, f.B, f.T, f.F, f.sb, f.st, f.sf, n.data(), mp, qp, threads > 0 ? threads : nh::num_threads());
    }
    return py::make_tuple(mean, m2);
}

// Storage rows (R, F) float32 or float64, C-contiguous and writable.
void check_storage(const py::array& a, const char* name) {
    check_float(a, name, 2, "(R, F)");
    if (!a.writeable()) throw py::value_error(std::string(name) + " must be writable");
}

template <class S>
void write_rows(py::array& store, const std::vector<int64_t>& rows, const std::vector<double>& v, int64_t F) {
    S* base = static_cast<S*>(store.mutable_data());
    for (size_t b = 0; b < rows.size(); ++b)
        std::transform(v.begin() + b * F, v.begin() + (b + 1) * F, base + rows[b] * F, [](double x) { return S(x); });
}

// Checked storage: counts (R,) int64, mean and m2 (R, F) float32 or float64 (m2 may be None), all
// C-contiguous and writable; count None or (B,) integers (clamped to [0, T]); rows (B,) integers.
// True when the frames' moments were written into rows `rows`; false, writing nothing, where the frames
// are not what as_frames takes or do not fit the storage (F, B rows), or a row lies outside [0, R),
// repeats, or already has frames.
bool store_frame_moments(const py::array& X, const py::object& count, const py::array& rows, py::array counts,
                         py::array mean, const py::object& m2, bool time_last) {
    if (counts.dtype().kind() != 'i' || counts.itemsize() != 8 || counts.ndim() != 1 || !counts.writeable() ||
        !(counts.flags() & py::array::c_style))
        throw py::type_error("counts must be a writable, C-contiguous int64 (R,) array, got " + dtype_of(counts) +
                             " with shape " + shape_of(counts));
    check_storage(mean, "mean");
    py::array q = m2.is_none() ? py::array() : py::cast<py::array>(m2);
    if (!m2.is_none()) check_storage(q, "m2");
    const int64_t R = counts.shape(0), width = mean.shape(1);
    if (mean.shape(0) != R || (!m2.is_none() && (q.shape(0) != R || q.shape(1) != width)))
        throw py::value_error("counts, mean and m2 disagree: " + shape_of(counts) + ", " + shape_of(mean) +
                              (m2.is_none() ? "" : ", " + shape_of(q)));
    Frames f;
    const std::vector<int64_t> r = int_vector(rows, "rows", "(B,)");
    if (!as_frames(X, time_last, f) || f.F != width || static_cast<int64_t>(r.size()) != f.B) return false;
    int64_t* seen = static_cast<int64_t*>(counts.mutable_data());
    std::vector<int64_t> sorted(r);
    std::sort(sorted.begin(), sorted.end());
    if (!sorted.empty() && (sorted.front() < 0 || sorted.back() >= R)) return false;
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) return false;
    for (int64_t row : r)
        if (seen[row] != 0) return false;
    std::vector<int64_t> n(f.B, f.T);
    if (!count.is_none()) {
        n = int_vector(py::cast<py::array>(count), "count", "(B,)");
        if (static_cast<int64_t>(n.size()) != f.B)
            throw py::value_error("count has " + std::to_string(n.size()) + " entries but X has " + std::to_string(f.B) + " items");
        for (int64_t& c : n) c = std::min(std::max<int64_t>(c, 0), f.T);
    }
    std::vector<double> mu(f.B * f.F), m2v(f.B * f.F);
    if (f.B * f.F > 0) {
        py::gil_scoped_release nogil;  // one thread: the layer's own threads may still spin (neurohook.moments)
        nh::frame_moments(f.data, f.B, f.T, f.F, f.sb, f.st, f.sf, n.data(), mu.data(), m2v.data(), 1);
    }
    for (int64_t b = 0; b < f.B; ++b) seen[r[b]] = n[b];
    if (mean.itemsize() == 4) write_rows<float>(mean, r, mu, f.F);
    else write_rows<double>(mean, r, mu, f.F);
    if (!m2.is_none()) {
        if (q.itemsize() == 4) write_rows<float>(q, r, m2v, f.F);
        else write_rows<double>(q, r, m2v, f.F);
    }
    return true;
}

}  // namespace

void bind_pooling(py::module_& m) {
    m.def("frame_moments", &frame_moments, py::arg("X"), py::arg("count"), py::arg("threads") = 0,
          "(mean, m2) float64 (B, F) over the first count[b] frames of each item of float32 X (B, T, F), on at most "
          "`threads` threads (0: the kernels' setting).");
    m.def("store_frame_moments", &store_frame_moments, py::arg("X"), py::arg("count"), py::arg("rows"),
          py::arg("counts"), py::arg("mean"), py::arg("m2"), py::arg("time_last") = false,
          "Write the frame counts, means and M2 of float32 X (B, T, F) ((B, F, T) when time_last; (B, F): one frame "
          "each), the first count[b] frames of each item (None: all; clamped to [0, T]), into rows `rows` (B,) of "
          "counts (R,), mean and m2 (R, F) (m2 may be None). False, writing nothing, where X does not fit or a row is "
          "out of range, repeated or already has frames.");
}
