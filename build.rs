//! Gives the `rwsgi` binary an rpath to the libpython the engine links, so it runs with no LD_LIBRARY_PATH.
fn main() {
    if let Ok(lib_dir) = std::env::var("DEP_RWSGI_PYTHON_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
}
