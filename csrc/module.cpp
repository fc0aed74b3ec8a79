// neurohook._core: the pybind11 boundary (the pooling kernel's part in bind_pooling.cpp). Every argument
// is checked here (dtype, layout, shape, finiteness, ranges; checks.hpp) and errors name the argument and
// its shape; the kernels in ranking.cpp, rescore.cpp and gather.cpp then run on raw pointers with the GIL
// released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "checks.hpp"
#include "gather.hpp"
#include "parallel.hpp"
#include "ranking.hpp"
#include "rescore.hpp"

namespace py = pybind11;

namespace nh {

static int g_threads = 0;  // 0: default

// NEUROHOOK_NUM_THREADS is read and checked in Python (neurohook.ranking), which sets g_threads.
int num_threads() {
    if (g_threads > 0) return g_threads;
    return std::max(1u, std::thread::hardware_concurrency());
}

void set_num_threads(int n) { g_threads = n > 0 ? n : 0; }

}  // namespace nh

namespace {

using namespace nh::checks;

py::array_t<int64_t> rank_per_class(const py::array& W) {
    check_float(W, "W", 2, "(C, D)");
    check_finite_small(W, "W");
    const int64_t C = W.shape(0), D = W.shape(1);
    std::vector<int64_t> out;
    {
        py::gil_scoped_release nogil;
        out = W.itemsize() == 4 ? nh::rank_rows(static_cast<const float*>(W.data()), C, D, true)
                                : nh::rank_rows(static_cast<const double*>(W.data()), C, D, true);
    }
    py::array_t<int64_t> res({C, D});
    std::copy(out.begin(), out.end(), res.mutable_data());
    return res;
}

py::tuple mass_neurons(const py::array& W, double p, bool descending) {
    check_float(W, "W", 2, "(C, D)");
    check_finite_small(W, "W");
    check_fraction(p, "p");
    const int64_t C = W.shape(0), D = W.shape(1);
    std::vector<std::vector<int64_t>> per_class;
    std::vector<int64_t> all;
    {
        py::gil_scoped_release nogil;
        per_class = W.itemsize() == 4 ? nh::mass_prefixes(static_cast<const float*>(W.data()), C, D, p, descending)
                                      : nh::mass_prefixes(static_cast<const double*>(W.data()), C, D, p, descending);
        std::vector<char> in(static_cast<size_t>(D), 0);
        for (const auto& cls : per_class)
            for (int64_t n : cls) in[n] = 1;
        for (int64_t d = 0; d < D; ++d)
            if (in[d]) all.push_back(d);
    }
    py::list classes;
    for (const auto& cls : per_class) classes.append(to_numpy(cls));
    return py::make_tuple(to_numpy(all), classes);
}

py::tuple neuron_ordering(const py::array& W, py::object steps) {
    check_float(W, "W", 2, "(C, D)");
    check_finite_small(W, "W");
    std::vector<double> schedule;
    if (steps.is_none()) {
        for (int s = 0; s <= 100; ++s) schedule.push_back(s / 100.0);
    } else {
        auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(steps);
        if (!a || a.ndim() != 1 || a.size() == 0)
            throw py::value_error("steps must be a non-empty 1-D sequence of fractions in [0, 1]");
        schedule.assign(a.data(), a.data() + a.size());
        for (size_t i = 0; i < schedule.size(); ++i) {
            check_fraction(schedule[i], "every step");
            if (i && !(schedule[i] > schedule[i - 1]))
                throw py::value_error("steps must increase strictly; steps[" + std::to_string(i) +
                                      "] = " + std::to_string(schedule[i]) + " follows " + std::to_string(schedule[i - 1]));
        }
    }
    const int64_t C = W.shape(0), D = W.shape(1);
    std::vector<int64_t> order, cutoffs;
    {
        py::gil_scoped_release nogil;
        if (W.itemsize() == 4) nh::ordering(static_cast<const float*>(W.data()), C, D, schedule, order, cutoffs);
        else nh::ordering(static_cast<const double*>(W.data()), C, D, schedule, order, cutoffs);
    }
    return py::make_tuple(to_numpy(order), to_numpy(cutoffs));
}

// Shared checks of (X, W, b, y) for the re-scoring kernels; returns the labels as int64.
std::vector<int64_t> check_classifier(const py::array& X, const py::array& W, const py::array& b, const py::array& y) {
    check_float(X, "X", 2, "(N, D)");
    check_float(W, "W", 2, "(C, D)");
    check_float(b, "b", 1, "(C,)");
    if (!X.dtype().is(W.dtype()) || !X.dtype().is(b.dtype()))
        throw py::type_error("X, W and b must share one dtype, got X " + dtype_of(X) + ", W " + dtype_of(W) + ", b " +
                             dtype_of(b));
    const int64_t N = X.shape(0), D = X.shape(1), C = W.shape(0);
    if (W.shape(1) != D)
        throw py::value_error("W " + shape_of(W) + " does not match X " + shape_of(X) + ": both need D = " +
                              std::to_string(D) + " neurons");
    if (b.shape(0) != C)
        throw py::value_error("b " + shape_of(b) + " does not match W " + shape_of(W) + ": one bias per class");
    check_finite_small(W, "W");
    check_finite_small(b, "b");
    std::vector<int64_t> labels = int_vector(y, "y", "(N,)");
    if (static_cast<int64_t>(labels.size()) != N)
        throw py::value_error("y " + shape_of(y) + " does not match X " + shape_of(X) + ": one label per row");
    check_range(labels, C == 1 ? 2 : C, "y", "class indices");
    return labels;
}

void raise_bad_row(const py::array& X, int64_t bad_block_start) {
    const int64_t N = X.shape(0), D = X.shape(1);
    const int64_t end = std::min<int64_t>(N, bad_block_start + 8);
    auto scan = [&](auto* p) {
        for (int64_t n = bad_block_start; n < end; ++n)
            for (int64_t d = 0; d < D; ++d)
                if (!std::isfinite(p[n * D + d]))
                    throw py::value_error("X with shape " + shape_of(X) + " holds NaN or Inf at row " + std::to_string(n) +
                                          ", column " + std::to_string(d));
    };
    if (X.itemsize() == 4) scan(static_cast<const float*>(X.data()));
    else scan(static_cast<const double*>(X.data()));
    throw py::value_error("X holds NaN or Inf");
}

template <class V>
py::array_t<double> fractions(const V& counts, int64_t N) {
    py::array_t<double> out(static_cast<py::ssize_t>(counts.size()));
    double* o = out.mutable_data();
    for (size_t i = 0; i < counts.size(); ++i) o[i] = static_cast<double>(counts[i]) / static_cast<double>(N);
    return out;
}

py::array_t<double> masked_accuracy(const py::array& X, const py::array& W, const py::array& b, const py::array& y,
                                    const py::array& masks) {
    const std::vector<int64_t> labels = check_classifier(X, W, b, y);
    const int64_t N = X.shape(0), D = X.shape(1), C = W.shape(0);
    if (masks.dtype().kind() != 'b')
        throw py::type_error("masks must be a boolean array (M, D), got " + dtype_of(masks) + " with shape " +
                             shape_of(masks));
    if (masks.ndim() != 2 || masks.shape(1) != D)
        throw py::value_error("masks must have shape (M, D) with D = " + std::to_string(D) + ", got " + shape_of(masks));
    if (!(masks.flags() & py::array::c_style))
        throw py::value_error("masks with shape " + shape_of(masks) + " must be C-contiguous");
    const int64_t M = masks.shape(0);
    if (M == 0) return py::array_t<double>(0);
    std::vector<int64_t> correct;
    int64_t bad = -1;
    {
        py::gil_scoped_release nogil;
        const auto* mk = static_cast<const uint8_t*>(masks.data());
        if (X.itemsize() == 4)
            correct = nh::masked_correct(static_cast<const float*>(X.data()), N, D, static_cast<const float*>(W.data()), C,
                                         static_cast<const float*>(b.data()), labels.data(), mk, M, &bad);
        else
            correct = nh::masked_correct(static_cast<const double*>(X.data()), N, D, static_cast<const double*>(W.data()),
                                         C, static_cast<const double*>(b.data()), labels.data(), mk, M, &bad);
    }
    if (bad >= 0) raise_bad_row(X, bad);
    return fractions(correct, N);
}

py::array_t<double> prefix_accuracy(const py::array& X, const py::array& W, const py::array& b, const py::array& y,
                                    const py::array& order) {
    const std::vector<int64_t> labels = check_classifier(X, W, b, y);
    const int64_t N = X.shape(0), D = X.shape(1), C = W.shape(0);
    const std::vector<int64_t> ord = int_vector(order, "order", "(K,) with K <= D");
    if (ord.empty()) throw py::value_error("order is empty: give at least one neuron index");
    check_range(ord, D, "order", "neuron indices");
    check_unique(ord, D, "order");
    const int64_t K = static_cast<int64_t>(ord.size());
    std::vector<int64_t> correct;
    int64_t bad = -1;
    {
        py::gil_scoped_release nogil;
        if (X.itemsize() == 4)
            correct = nh::prefix_correct(static_cast<const float*>(X.data()), N, D, static_cast<const float*>(W.data()), C,
                                         static_cast<const float*>(b.data()), labels.data(), ord.data(), K, &bad);
        else
            correct = nh::prefix_correct(static_cast<const double*>(X.data()), N, D, static_cast<const double*>(W.data()),
                                         C, static_cast<const double*>(b.data()), labels.data(), ord.data(), K, &bad);
    }
    if (bad >= 0) raise_bad_row(X, bad);
    return fractions(correct, N);
}

py::array_t<int64_t> layer_counts(const py::array& neurons, const py::array& layer_sizes) {
    const std::vector<int64_t> sizes = int_vector(layer_sizes, "layer_sizes", "(L,)");
    if (sizes.empty()) throw py::value_error("layer_sizes is empty: give the neuron count of each layer");
    std::vector<int64_t> start(sizes.size() + 1, 0);
    for (size_t l = 0; l < sizes.size(); ++l) {
        if (sizes[l] <= 0)
            throw py::value_error("layer_sizes[" + std::to_string(l) + "] = " + std::to_string(sizes[l]) +
                                  " must be positive");
        start[l + 1] = start[l] + sizes[l];
    }
    const std::vector<int64_t> idx = int_vector(neurons, "neurons", "(K,)");
    check_range(idx, start.back(), "neurons", "neuron indices");
    check_unique(idx, start.back(), "neurons");
    std::vector<int64_t> counts(sizes.size(), 0);
    for (int64_t n : idx) counts[std::upper_bound(start.begin(), start.end(), n) - start.begin() - 1] += 1;
    return to_numpy(counts);
}

// X (N, D) float32 whose rows are contiguous: C order, or a column slice of a C-order matrix.
void check_rows_float32(const py::array& X) {
    if (X.dtype().kind() != 'f' || X.itemsize() != 4 || X.ndim() != 2 || (X.shape(1) > 1 && X.strides(1) != 4) ||
        X.strides(0) < 0 || X.strides(0) % 4 != 0 || (X.shape(0) > 1 && X.strides(0) / 4 < X.shape(1)))
        throw py::type_error("X must be a float32 (N, D) array with contiguous rows, got " + dtype_of(X) + " with shape " +
                             shape_of(X));
}

// Checked: X (N, D) float32 with unit column stride (C-contiguous or a column slice; read-only allowed), rows (n,) and cols (d,) int64 in range,
// hi / lo / inv (d,) float32, out (n, d) float32 C-contiguous and writable.
void standardize_rows(const py::array& X, const py::array& rows, const py::object& cols, const py::array& hi,
                      const py::array& lo, const py::array& inv, py::array& out) {
    const auto f32 = [](const py::array& a, const char* name, py::ssize_t ndim) {
        if (a.dtype().kind() != 'f' || a.itemsize() != 4 || a.ndim() != ndim || !(a.flags() & py::array::c_style))
            throw py::type_error(std::string(name) + " must be a C-contiguous float32 array of " + std::to_string(ndim) +
                                 " dimension(s), got " + dtype_of(a) + " with shape " + shape_of(a));
    };
    check_rows_float32(X);
    f32(out, "out", 2);
    if (!out.writeable()) throw py::value_error("out must be writable");
    const int64_t N = X.shape(0), D = X.shape(1), n = out.shape(0), d = out.shape(1);
    const std::vector<int64_t> r = int_vector(rows, "rows", "(n,)");
    if (static_cast<int64_t>(r.size()) != n)
        throw py::value_error("rows has " + std::to_string(r.size()) + " entries but out has " + std::to_string(n) + " rows");
    check_range(r, N, "rows", "row indices");
    std::vector<int64_t> c;
    if (!cols.is_none()) {
        c = int_vector(cols.cast<py::array>(), "cols", "(d,)");
        check_range(c, D, "cols", "column indices");
    }
    if ((cols.is_none() ? D : static_cast<int64_t>(c.size())) != d)
        throw py::value_error("out has " + std::to_string(d) + " columns but " +
                              (cols.is_none() ? "X has " + std::to_string(D) : "cols has " + std::to_string(c.size())));
    for (const auto& [a, name] : {std::pair<const py::array&, const char*>{hi, "hi"}, {lo, "lo"}, {inv, "inv"}}) {
        f32(a, name, 1);
        if (a.shape(0) != d)
            throw py::value_error(std::string(name) + " must have shape (" + std::to_string(d) + ",), got " + shape_of(a));
    }
    py::gil_scoped_release nogil;
    nh::standardize_rows(static_cast<const float*>(X.data()), X.strides(0) / 4, D, r.data(), n, cols.is_none() ? nullptr : c.data(), d,
                         static_cast<const float*>(hi.data()), static_cast<const float*>(lo.data()),
                         static_cast<const float*>(inv.data()), static_cast<float*>(out.mutable_data()));
}


// (mean, m2) float64 (D,) of the rows `rows` of X: the mean and summed squared deviations per column.
py::tuple column_moments(const py::array& X, const py::array& rows) {
    check_rows_float32(X);
    const std::vector<int64_t> r = int_vector(rows, "rows", "(n,)");
    if (r.empty()) throw py::value_error("rows is empty: give at least one row");
    check_range(r, X.shape(0), "rows", "row indices");
    const int64_t D = X.shape(1), n = static_cast<int64_t>(r.size());
    py::array_t<double> mean(D), m2(D);
    std::vector<double> s1(static_cast<std::size_t>(D)), s2(static_cast<std::size_t>(D));
    const float* x = static_cast<const float*>(X.data());
    {
        py::gil_scoped_release nogil;
        nh::shifted_moments(x, X.strides(0) / 4, D, r.data(), n, s1.data(), s2.data());
    }
    double* mp = mean.mutable_data();
    double* qp = m2.mutable_data();
    const float* shift = x + r[0] * (X.strides(0) / 4);
    for (int64_t j = 0; j < D; ++j) {
        mp[j] = static_cast<double>(shift[j]) + s1[j] / n;
        qp[j] = std::max(0.0, s2[j] - s1[j] * s1[j] / n);
    }
    return py::make_tuple(mean, m2);
}

}  // namespace

void bind_pooling(py::module_& m);  // bind_pooling.cpp

PYBIND11_MODULE(_core, m) {
    m.doc() = "neurohook's compiled core: neuron ranking and masked re-scoring on numpy arrays.";
    m.def("rank_per_class", &rank_per_class, py::arg("W"),
          "Per class, neuron indices sorted by |W[c]| descending (ties by index). W: (C, D) -> (C, D) int64.");
    m.def("top_neurons", [](const py::array& W, double p) { return mass_neurons(W, p, true); }, py::arg("W"),
          py::arg("p"), "Union and per-class lists of the top neurons covering p of each class's |w| mass.");
    m.def("bottom_neurons", [](const py::array& W, double p) { return mass_neurons(W, p, false); }, py::arg("W"),
          py::arg("p"), "As top_neurons on the ascending order of |w|.");
    m.def("neuron_ordering", &neuron_ordering, py::arg("W"), py::arg("steps") = py::none(),
          "Ordering of all D neurons by the step at which the mass threshold first selects them; and cut-offs.");
    m.def("masked_accuracy", &masked_accuracy, py::arg("X"), py::arg("W"), py::arg("b"), py::arg("y"), py::arg("masks"),
          "Accuracy of the unchanged classifier for each keep-mask (masked neurons set to zero).");
    m.def("prefix_accuracy", &prefix_accuracy, py::arg("X"), py::arg("W"), py::arg("b"), py::arg("y"), py::arg("order"),
          "Accuracy when keeping the first k neurons of order, for k = 1..len(order).");
    m.def("layer_counts", &layer_counts, py::arg("neurons"), py::arg("layer_sizes"),
          "Number of the given neurons that fall in each layer of a concatenated representation.");
    m.def("standardize_rows", &standardize_rows, py::arg("X"), py::arg("rows"), py::arg("cols"), py::arg("hi"),
          py::arg("lo"), py::arg("inv"), py::arg("out"),
          "out = ((X[rows][:, cols] - hi) - lo) * inv in one pass (float32; cols None: all columns).");
    m.def("column_moments", &column_moments, py::arg("X"), py::arg("rows"),
          "(mean, m2) float64 (D,) over the rows `rows` of float32 X: column means and summed squared deviations.");
    bind_pooling(m);
    m.def("set_num_threads", &nh::set_num_threads, py::arg("n"), "Threads the kernels may use (n <= 0: default).");
    m.def("get_num_threads", &nh::num_threads, "Threads the kernels may use.");
}
