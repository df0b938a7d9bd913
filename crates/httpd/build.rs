//! Generates bindings to Apache httpd's and APR's headers (found with `apxs`, as a C module's build finds
//! them), and gives the module an rpath to the libpython the engine links.
use std::path::PathBuf;
use std::process::Command;

fn apxs_query(apxs: &str, name: &str) -> String {
    let output = Command::new(apxs)
        .args(["-q", name])
        .output()
        .unwrap_or_else(|err| {
            panic!("running `{apxs} -q {name}` failed ({err}): install apache2-dev, or set APXS to its path")
        });
    assert!(
        output.status.success(),
        "`{apxs} -q {name}` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-env-changed=APXS");
    let apxs = std::env::var("APXS").unwrap_or_else(|_| "apxs".to_owned());
    let include_dir = apxs_query(&apxs, "INCLUDEDIR");
    let apr_include_dir = apxs_query(&apxs, "APR_INCLUDEDIR");
    let apu_include_dir = apxs_query(&apxs, "APU_INCLUDEDIR");

    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args([
            format!("-I{include_dir}"),
            format!("-I{apr_include_dir}"),
            format!("-I{apu_include_dir}"),
            "-DLINUX".to_owned(),
            "-D_REENTRANT".to_owned(),
            "-D_GNU_SOURCE".to_owned(),
        ])
        .allowlist_function("ap_.*|apr_.*")
        .allowlist_type("authn_provider|authz_provider|apr_table_entry_t|request_rec|conn_rec|server_rec|module|command_rec|cmd_parms|process_rec")
        .allowlist_var("ap_unixd_config|ap_server_conf|MODULE_MAGIC_.*|AP_.*|APR_.*|OR_.*|ACCESS_CONF|RSRC_CONF|EXEC_ON_READ|OPT_.*|HTTP_.*|OK|DECLINED|DONE|APLOG_.*|REQUEST_.*|M_.*|SERVER_DEAD|SERVER_IDLE_KILL")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("generating Apache bindings failed");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("httpd.rs"))
        .expect("writing Apache bindings failed");

    // Apache's own functions (ap_*, apr_*) are found in the httpd process that loads the module; the unit
    // test harness, which never calls them, links with them unresolved too.
    println!("cargo:rustc-link-arg=-Wl,--unresolved-symbols=ignore-all");
    if let Ok(lib_dir) = std::env::var("DEP_RWSGI_PYTHON_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
}
