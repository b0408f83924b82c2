//! Sets pyo3's configuration flags (`Py_LIMITED_API`, `PyPy`, `Py_3_14`, …)
//! for this crate too, so that code reading CPython's own layout
//! (`fastde::text`) is built only where that layout is known.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
