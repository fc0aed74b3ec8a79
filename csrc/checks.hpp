// Argument checks shared by the pybind11 boundary (module.cpp, bind_pooling.cpp): every error names the
// argument, its dtype and its shape.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace nh::checks {

namespace py = pybind11;

inline std::string shape_of(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

inline std::string dtype_of(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// A float32/float64, C-contiguous array of `ndim` dimensions, none of them empty.
inline void check_float(const py::array& a, const char* name, py::ssize_t ndim, const char* expected) {
    const char kind = a.dtype().kind();
    if (kind != 'f' || (a.itemsize() != 4 && a.itemsize() != 8))
        throw py::type_error(std::string(name) + " must be float32 or float64, got " + dtype_of(a) +
                             " with shape " + shape_of(a));
    if (a.ndim() != ndim)
        throw py::value_error(std::string(name) + " must have shape " + expected + ", got " + shape_of(a));
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + " with shape " + shape_of(a) +
                              " must be C-contiguous (use numpy.ascontiguousarray)");
    for (py::ssize_t i = 0; i < ndim; ++i)
        if (a.shape(i) == 0)
            throw py::value_error(std::string(name) + " must have shape " + expected + " with no empty axis, got " +
                                  shape_of(a));
}

template <class T>
inline void check_finite_small(const py::array& a, const char* name) {
    const T* p = static_cast<const T*>(a.data());
    for (py::ssize_t i = 0; i < a.size(); ++i)
        if (!std::isfinite(p[i]))
            throw py::value_error(std::string(name) + " with shape " + shape_of(a) + " holds NaN or Inf (flat index " +
                                  std::to_string(i) + ")");
}

inline void check_finite_small(const py::array& a, const char* name) {
    if (a.itemsize() == 4) check_finite_small<float>(a, name);
    else check_finite_small<double>(a, name);
}

// Any integer array of one dimension, copied to int64.
inline std::vector<int64_t> int_vector(const py::array& a, const char* name, const char* expected) {
    const char kind = a.dtype().kind();
    if (kind != 'i' && kind != 'u')
        throw py::type_error(std::string(name) + " must be an integer array " + expected + ", got " + dtype_of(a) +
                             " with shape " + shape_of(a));
    if (a.ndim() != 1)
        throw py::value_error(std::string(name) + " must have shape " + expected + ", got " + shape_of(a));
    auto c = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
    return std::vector<int64_t>(c.data(), c.data() + c.size());
}

inline void check_range(const std::vector<int64_t>& v, int64_t hi, const char* name, const char* what) {
    for (size_t i = 0; i < v.size(); ++i)
        if (v[i] < 0 || v[i] >= hi)
            throw py::value_error(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(v[i]) +
                                  " is out of range: " + what + " must lie in [0, " + std::to_string(hi) + ")");
}

inline void check_unique(const std::vector<int64_t>& v, int64_t D, const char* name) {
    std::vector<char> seen(static_cast<size_t>(D), 0);
    for (size_t i = 0; i < v.size(); ++i) {
        if (seen[v[i]]) throw py::value_error(std::string(name) + " repeats neuron " + std::to_string(v[i]));
        seen[v[i]] = 1;
    }
}

inline double check_fraction(double p, const char* name) {
    if (!(p >= 0.0 && p <= 1.0))
        throw py::value_error(std::string(name) + " must be a fraction of the weight mass in [0, 1], got " +
                              std::to_string(p));
    return p;
}

template <class V>
inline py::array_t<typename V::value_type> to_numpy(const V& v) {
    py::array_t<typename V::value_type> out(static_cast<py::ssize_t>(v.size()));
    std::copy(v.begin(), v.end(), out.mutable_data());
    return out;
}

}  // namespace nh::checks
