//! Links the engine's own test binaries against libpython with an rpath, so they run without LD_LIBRARY_PATH,
//! and tells dependent crates (as `DEP_RWSGI_PYTHON_LIB_DIR`) where libpython is, for their own rpath.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    let config = pyo3_build_config::get();
    if let Some(executable) = config.executable() {
        println!("cargo:rustc-env=RWSGI_BUILD_PYTHON={executable}");
    }
    println!(
        "cargo:rustc-env=RWSGI_PYTHON_VERSION={}.{}",
        config.version().major,
        config.version().minor
    );
    if let Some(lib_dir) = config.lib_dir() {
        println!("cargo:lib_dir={lib_dir}");
    }
}
