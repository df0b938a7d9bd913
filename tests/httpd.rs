// mod_wsgi.so in a real Apache: the seed's configurations, the environ, errors, restarts and MPMs.

use crate::support::apache::*;
use crate::support::*;

const APPS_ACCESS: &str = "<Directory @REPO@/tests/apps>\n    Require all granted\n</Directory>\n";

#[test]
fn seed_hello_configuration_answers_hello_world() {
    let apache = Apache::start(
        "WSGIScriptAlias / @REPO@/examples/hello.py\n<Directory @REPO@/examples>\n    Require all granted\n</Directory>\n",
    );
    let response = apache.get("/");
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "Hello World!"),
        "{}",
        apache.error_log()
    );
    assert_eq!(
        response.header("Content-Type").as_deref(),
        Some("text/plain")
    );
}

/// The seed's Django configuration as it writes it (Apache 2.2 access lines, so mod_access_compat), with
/// its `</Directory>` closed and a WSGIPythonHome for the venv.
fn seed_django() -> Apache {
    let venv = venv();
    Apache::start(&format!(
        r#"WSGIPythonHome "{venv}"
Alias /site_media/ "@REPO@/tests/apps/django_site/site_media/"

<Directory @REPO@/tests/apps/django_site/site_media>
Order deny,allow
Allow from all
</Directory>

WSGIScriptAlias / @REPO@/tests/apps/django_site/mysite.wsgi

<Directory @REPO@/tests/apps/django_site>
Order deny,allow
Allow from all
</Directory>
"#,
        venv = venv.display()
    ))
}

#[test]
fn seed_django_configuration_serves_pages_forms_uploads_streams_and_static_files() {
    let apache = seed_django();
    crate::frameworks::assert_django_pages(&apache, &|| apache.error_log());
    crate::frameworks::assert_django_form_and_upload(&apache);
    crate::frameworks::assert_django_stream(&apache);

    let css = apache.get("/site_media/style.css");
    assert_eq!(css.status, 200);
    assert_eq!(css.text(), "body { color: #333; }\n");
    assert_eq!(css.header("Content-Type").as_deref(), Some("text/css"));
}

fn suite(extra: &str) -> Apache {
    Apache::start(&format!(
        "WSGIScriptAlias /suite @REPO@/tests/apps/suite.py\n{APPS_ACCESS}{extra}"
    ))
}

#[test]
fn environ_is_mod_wsgis() {
    let apache = suite("");
    let response = apache.request(
        "GET /suite/environ/a%20b//c?x=1&y=%41 HTTP/1.1\r\nHost: localhost\r\nX-Custom: one\r\n\
         X-Custom: two\r\nX_Under: dropped\r\nProxy: evil\r\nAuthorization: Basic dXNlcjpwYXNz\r\n\
         Connection: close\r\n\r\n",
    );
    assert_eq!(response.status, 200, "{}", apache.error_log());
    let env = response.json();
    // Host names no port, so Apache (UseCanonicalName Off) reports the scheme's default, as mod_wsgi does.
    for (key, value) in [
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", "/suite"),
        ("PATH_INFO", "/environ/a b/c"),
        ("QUERY_STRING", "x=1&y=%41"),
        ("REQUEST_URI", "/suite/environ/a%20b//c?x=1&y=%41"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("HTTP_X_CUSTOM", "one, two"),
        ("wsgi.url_scheme", "http"),
        ("mod_wsgi.process_group", ""),
        ("mod_wsgi.callable_object", "application"),
        ("mod_wsgi.request_handler", "wsgi-script"),
        ("mod_wsgi.listener_host", "127.0.0.1"),
    ] {
        assert_eq!(env[key], value, "{key} in {env:#}");
    }
    assert_eq!(env["mod_wsgi.application_group"], "localhost|/suite");
    assert_eq!(
        env["SCRIPT_FILENAME"],
        format!("{}/tests/apps/suite.py", repo().display())
    );
    for absent in [
        "HTTP_X_UNDER",
        "HTTP_PROXY",
        "HTTP_AUTHORIZATION",
        "PATH",
        "mod_wsgi.x-script_reloading",
        "mod_wsgi.script_reloading",
    ] {
        assert!(env.get(absent).is_none(), "{absent} in {env:#}");
    }
    assert!(env["mod_wsgi.request_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    assert_eq!(env["wsgi.multithread"], true);
}

#[test]
fn authorization_reaches_the_app_only_with_wsgi_pass_authorization() {
    let apache = Apache::start(&format!(
        "WSGIScriptAlias /plain @REPO@/tests/apps/suite.py\n\
         WSGIScriptAlias /passed @REPO@/tests/apps/suite.py pass-authorization=On\n\
         <Location /dir>\n    WSGIPassAuthorization On\n</Location>\n\
         WSGIScriptAlias /dir @REPO@/tests/apps/suite.py\n{APPS_ACCESS}"
    ));
    let auth = |path: &str| {
        apache
            .request(&format!(
                "GET {path}/environ HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer t0k\r\nConnection: close\r\n\r\n"
            ))
            .json()["HTTP_AUTHORIZATION"]
            .clone()
    };
    assert_eq!(auth("/plain"), serde_json::Value::Null);
    assert_eq!(auth("/passed"), "Bearer t0k");
    assert_eq!(auth("/dir"), "Bearer t0k");
}

#[test]
fn app_errors_give_500_and_a_traceback_naming_the_script() {
    let apache = Apache::start(&format!(
        "WSGIScriptAlias /broken @REPO@/tests/apps/broken.py\nWSGIScriptAlias /suite @REPO@/tests/apps/suite.py\n{APPS_ACCESS}"
    ));
    assert_eq!(apache.get("/broken").status, 500);
    let log = apache.wait_for_log("missing_dependency_for_test");
    assert!(
        log.contains(&format!(
            "Failed to exec Python script file '{}/tests/apps/broken.py'",
            repo().display()
        )),
        "{log}"
    );
    assert!(log.contains("Traceback (most recent call last)"), "{log}");

    assert_eq!(apache.get("/suite/raise/before").status, 500);
    apache.wait_for_log("RuntimeError: failed before sending");

    // A failure after the body started: the client sees the response end without its final chunk.
    let partial = apache.get("/suite/raise/after");
    assert_eq!(partial.status, 200);
    assert_eq!(partial.text(), "partial");
    assert!(
        !partial.complete,
        "a failed response must not look complete"
    );

    // wsgi.errors and stderr go to the error log, with the request's id.
    assert_eq!(apache.get("/suite/errors").text(), "logged");
    let log = apache.wait_for_log("message to stderr");
    // Both lines carry the same request id: `mod_wsgi (pid=N): [ID] message …`.
    let id_of = |log: &str, message: &str| {
        log.lines()
            .find(|l| l.ends_with(message))
            .and_then(|l| {
                l.rsplit_once("): [")?
                    .1
                    .split_once("] ")
                    .map(|(id, _)| id.to_owned())
            })
            .unwrap_or_else(|| panic!("no request id before {message:?} in:\n{log}"))
    };
    assert_eq!(
        id_of(&log, "message to stderr"),
        id_of(&log, "message to wsgi.errors")
    );

    // A line left unfinished is logged as the request ends, with that request's id, never run into
    // the next request's.
    for text in ["first-unfinished", "second-unfinished"] {
        assert_eq!(
            apache.get(&format!("/suite/errors-partial?{text}")).text(),
            "logged"
        );
    }
    let log = apache.wait_for_log("second-unfinished");
    assert_ne!(
        id_of(&log, "first-unfinished"),
        id_of(&log, "second-unfinished")
    );
}

#[test]
fn graceful_and_restart_repeated_then_a_clean_stop() {
    let mut apache = suite("");
    for action in ["graceful", "graceful", "restart", "graceful", "restart"] {
        apache.control_and_wait(action);
        // The old generation may still answer for a moment; the new one must come up and serve.
        let deadline = std::time::Instant::now() + IO_TIMEOUT;
        loop {
            let response = std::panic::catch_unwind(|| apache.get("/suite/environ"));
            if let Ok(response) = response {
                if response.status == 200 {
                    break;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}",
                apache.error_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    // Apache's parent never runs Python, so restarts leave nothing behind in it: its memory stays flat.
    let parent_rss = || apache.parent_rss_kib();
    let before = parent_rss();
    for _ in 0..20 {
        apache.control_and_wait("graceful");
    }
    let after = parent_rss();
    assert!(
        after <= before + 512,
        "Apache's parent grew from {before} KiB to {after} KiB over 20 graceful restarts"
    );
    let status = apache.stop();
    assert!(status.success(), "apache2 exited with {status}");
    let log = apache.error_log();
    for bad in [
        "Segmentation fault",
        "exit signal",
        "AH00052",
        "Fatal Python error",
    ] {
        assert!(!log.contains(bad), "{bad} in:\n{log}");
    }
    assert!(log.contains("caught SIGTERM, shutting down"), "{log}");
}

#[test]
fn a_stopping_child_runs_atexit_hooks_in_every_interpreter() {
    let mut apache = Apache::start(&format!(
        "{ONE_CHILD}WSGIScriptAlias /sub @REPO@/tests/apps/atexit_app.py\n\
         WSGIScriptAlias /main @REPO@/tests/apps/atexit_app.py application-group=%{{GLOBAL}}\n{APPS_ACCESS}"
    ));
    assert_eq!(apache.get("/sub").text(), "registered");
    assert_eq!(apache.get("/main").text(), "registered");
    assert!(apache.stop().success());
    let log = apache.error_log();
    assert!(
        log.contains("atexit ran in group 'localhost|/sub'"),
        "{log}"
    );
    assert!(log.contains("atexit ran in group ''"), "{log}");
}

#[test]
fn every_mpm_serves_the_app() {
    for mpm in [Mpm::Prefork, Mpm::Worker, Mpm::Event] {
        let body = format!("WSGIScriptAlias /suite @REPO@/tests/apps/suite.py\n{APPS_ACCESS}");
        let apache = Apache::start_with(Setup {
            mpm,
            ..Setup::new(&body)
        });
        let env = apache.get("/suite/environ").json();
        assert_eq!(env["REQUEST_METHOD"], "GET", "{mpm:?}");
        // prefork runs one thread per process.
        assert_eq!(
            env["wsgi.multithread"],
            !matches!(mpm, Mpm::Prefork),
            "{mpm:?}"
        );
        let stream = apache.get("/suite/stream?n=50");
        assert!(
            stream.complete && stream.text().ends_with("chunk 49\n"),
            "{mpm:?}"
        );
    }
}

#[test]
fn add_handler_runs_scripts_only_with_options_execcgi() {
    let apache = Apache::start(
        "Alias /cgi @REPO@/tests/apps\nAlias /nocgi @REPO@/tests/apps\n\
         <Location /cgi>\n    Options +ExecCGI\n    AddHandler wsgi-script .py\n</Location>\n\
         <Location /nocgi>\n    Options -ExecCGI\n    AddHandler wsgi-script .py\n</Location>\n\
         <Directory @REPO@/tests/apps>\n    Require all granted\n</Directory>\n",
    );
    let response = apache.get("/cgi/suite.py/environ");
    assert_eq!(response.status, 200, "{}", apache.error_log());
    let env = response.json();
    assert_eq!(env["SCRIPT_NAME"], "/cgi/suite.py");
    assert_eq!(env["PATH_INFO"], "/environ");
    assert_eq!(apache.get("/nocgi/suite.py/environ").status, 403);
    apache.wait_for_log("Options ExecCGI is off in this directory.");
}

#[test]
fn bad_directives_are_syntax_errors_naming_the_line() {
    let out = config_must_fail("\n\nWSGIScriptReloading Sometimes\n");
    assert!(out.contains("line 11"), "{out}");
    assert!(
        out.contains("WSGIScriptReloading: must be On or Off."),
        "{out}"
    );
    let out = config_must_fail("WSGIScriptAlias /only-one-argument\n");
    assert!(
        out.contains("WSGIScriptAlias: requires at least two arguments"),
        "{out}"
    );
    let out = config_must_fail("WSGIDaemonProcess site processes=0\n");
    assert!(
        out.contains("WSGIDaemonProcess: Invalid process count for WSGI daemon process."),
        "{out}"
    );
    let out = config_must_fail("WSGIScriptAlias / /x.wsgi colour=blue\n");
    assert!(out.contains("Invalid option 'colour=blue'"), "{out}");
}

fn rwsgi(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rwsgi"))
        .args(args)
        .env_remove("VIRTUAL_ENV")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "rwsgi {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn module_config_prints_the_lines_to_load_the_module() {
    let module = our_module().canonicalize().unwrap();
    assert_eq!(
        rwsgi(&["module-config"], &[]),
        format!("LoadModule wsgi_module \"{}\"\n", module.display())
    );
    let venv = venv().canonicalize().unwrap();
    let with_venv = format!(
        "LoadModule wsgi_module \"{}\"\nWSGIPythonHome \"{}\"\n",
        module.display(),
        venv.display()
    );
    assert_eq!(
        rwsgi(
            &["module-config"],
            &[("VIRTUAL_ENV", venv.to_str().unwrap())]
        ),
        with_venv
    );
    assert_eq!(
        rwsgi(
            &["module-config", "--python-home", venv.to_str().unwrap()],
            &[]
        ),
        with_venv
    );
}

#[test]
fn install_module_copies_it_as_mod_wsgi_so_and_apache_loads_that() {
    let dir = std::env::temp_dir().join(format!("rwsgi-modules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let printed = rwsgi(
        &["install-module", "--modules-dir", dir.to_str().unwrap()],
        &[],
    );
    let installed = dir.canonicalize().unwrap().join("mod_wsgi.so");
    assert_eq!(
        printed,
        format!("LoadModule wsgi_module \"{}\"\n", installed.display())
    );
    let apache = Apache::start_with(Setup {
        module: installed,
        ..Setup::new(
            "WSGIScriptAlias / @REPO@/examples/hello.py\n<Directory @REPO@/examples>\n    Require all granted\n</Directory>\n",
        )
    });
    assert_eq!(apache.get("/").text(), "Hello World!");
    drop(apache);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One child process, so every request meets the same interpreters.
const ONE_CHILD: &str = "StartServers 1\nServerLimit 1\nThreadsPerChild 4\nMaxRequestWorkers 4\n\
                         MinSpareThreads 1\nMaxSpareThreads 4\n";

#[test]
fn application_groups_are_separate_interpreters() {
    application_groups_in(our_module(), true);
}

/// The C mod_wsgi on the same config isolates %{RESOURCE} groups as we do. (Past that it goes wrong here:
/// a %{GLOBAL} request on a thread that last served a sub-interpreter ran in that sub-interpreter — the
/// environ said group '' while `mod_wsgi.application_group` and `sys.modules` were '/a''s — so the rest
/// of the scenario is checked on ours only.)
#[test]
fn application_groups_match_the_c_mod_wsgi_for_resource_groups() {
    application_groups_in(crate::httpd_parity::c_module(), false);
}

fn application_groups_in(module: std::path::PathBuf, whole_scenario: bool) {
    let apache = Apache::start_with(Setup {
        module,
        ..Setup::new(&format!(
            "{ONE_CHILD}WSGIPythonPath @REPO@/tests/apps\n\
         WSGIScriptAlias /a @REPO@/tests/apps/counter_a.py\n\
         WSGIScriptAlias /b @REPO@/tests/apps/counter_b.py\n\
         WSGIScriptAlias /global-a @REPO@/tests/apps/counter_a.py application-group=%{{GLOBAL}}\n\
         WSGIScriptAlias /global-b @REPO@/tests/apps/counter_b.py application-group=%{{GLOBAL}}\n\
         WSGIScriptAlias /named-a @REPO@/tests/apps/counter_a.py application-group=shared\n\
         <Location /named-b>\n    WSGIApplicationGroup shared\n</Location>\n\
         WSGIScriptAlias /named-b @REPO@/tests/apps/counter_b.py\n{APPS_ACCESS}"
        ))
    });
    let hit = |path: &str| {
        let response = apache.get(path);
        assert_eq!(response.status, 200, "{path}: {}", apache.error_log());
        response.json()
    };
    // %{RESOURCE} (the default): each script has its own interpreter, so its own module and count.
    assert_eq!(hit("/a")["count"], 1);
    assert_eq!(hit("/a")["count"], 2);
    let b = hit("/b");
    assert_eq!(b["count"], 1, "{b}");
    assert_eq!(b["group"], "localhost|/b");
    assert_eq!(b["module_group"], "localhost|/b");
    assert_ne!(hit("/a")["modules_id"], b["modules_id"]);
    if !whole_scenario {
        return;
    }
    // %{GLOBAL}: both scripts in the main interpreter share it.
    assert_eq!(hit("/global-a")["count"], 1);
    let global_b = hit("/global-b");
    assert_eq!(global_b["count"], 2);
    assert_eq!(global_b["group"], "");
    // A named group, given by an alias option or by WSGIApplicationGroup, is shared by name.
    assert_eq!(hit("/named-a")["count"], 1);
    let named_b = hit("/named-b");
    assert_eq!(named_b["count"], 2);
    assert_eq!(named_b["group"], "shared");
    // And none of this disturbed the first interpreter.
    assert_eq!(hit("/a")["count"], 4);
}

#[test]
fn access_authentication_and_group_scripts() {
    let apache = Apache::start(&format!(
        "LoadModule auth_basic_module {MODULES}/mod_auth_basic.so\n\
         LoadModule authn_core_module {MODULES}/mod_authn_core.so\n\
         LoadModule authz_user_module {MODULES}/mod_authz_user.so\n\
         WSGIScriptAlias /suite @REPO@/tests/apps/suite.py\n\
         <Location /suite/environ>\n    AuthType Basic\n    AuthName rwsgi\n    AuthBasicProvider wsgi\n\
             WSGIAuthUserScript @REPO@/tests/apps/auth.wsgi\n    Require valid-user\n</Location>\n\
         <Location /suite/stream>\n    AuthType Basic\n    AuthName rwsgi\n    AuthBasicProvider wsgi\n\
             WSGIAuthUserScript @REPO@/tests/apps/auth.wsgi\n\
             WSGIAuthGroupScript @REPO@/tests/apps/auth.wsgi\n    Require wsgi-group admins\n</Location>\n\
         <Location /suite/status>\n    WSGIAccessScript @REPO@/tests/apps/auth.wsgi\n</Location>\n\
         {APPS_ACCESS}"
    ));
    let get = |path: &str, extra: &str| {
        apache.request(&format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n"
        ))
    };
    let basic = |credentials: &str| {
        let encoded = python(&format!(
            "import base64; print(base64.b64encode(b'{credentials}').decode())"
        ));
        format!("Authorization: Basic {encoded}\r\n")
    };
    assert_eq!(get("/suite/environ", "").status, 401);
    let alice = get("/suite/environ", &basic("alice:secret"));
    assert_eq!(alice.status, 200, "{}", apache.error_log());
    assert_eq!(alice.json()["REMOTE_USER"], "alice");
    assert_eq!(alice.json()["AUTH_TYPE"], "Basic");
    assert_eq!(get("/suite/environ", &basic("alice:wrong")).status, 401);
    assert_eq!(get("/suite/environ", &basic("nobody:x")).status, 401);
    // A string from check_password authenticates, as that user.
    let carol = get("/suite/environ", &basic("carol:any"));
    assert_eq!(carol.json()["REMOTE_USER"], "carol-renamed");

    assert_eq!(get("/suite/stream", &basic("alice:secret")).status, 200);
    let dave = get("/suite/stream", &basic("dave:pass"));
    assert!(matches!(dave.status, 401 | 403), "{}", dave.status);

    assert_eq!(get("/suite/status", "X-Let-Me-In: yes\r\n").status, 299);
    assert_eq!(get("/suite/status", "").status, 403);
}

/// preload.wsgi at /p was imported into group 'preloaded' before any request, and /p used that module.
pub(crate) fn assert_preloaded(apache: &Apache) -> String {
    let log = apache.wait_for_log("into application group 'preloaded'.");
    let before_request = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let report = apache.get("/p").json();
    assert!(
        report["imported_at"].as_f64().unwrap() < before_request,
        "{report}"
    );
    assert_eq!(report["group"], "preloaded");
    // The request used the imported module: the script ran once.
    assert_eq!(report["executions"], 1);
    log
}

#[test]
fn import_scripts_run_at_process_start_in_their_group() {
    let apache = Apache::start(&format!(
        "{ONE_CHILD}WSGIPythonPath @REPO@/tests/apps\n\
         WSGIImportScript @REPO@/tests/apps/preload.wsgi process-group=%{{GLOBAL}} application-group=preloaded\n\
         WSGIScriptAlias /p @REPO@/tests/apps/preload.wsgi application-group=preloaded\n{APPS_ACCESS}"
    ));
    assert_preloaded(&apache);
    let out = config_must_fail("WSGIImportScript /x.wsgi application-group=%{GLOBAL}\n");
    assert!(
        out.contains("must specify both process-group= and application-group="),
        "{out}"
    );
}

fn write_script(path: &std::path::Path, text: &str, mtime_secs: u64) {
    let source = format!(
        "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'{text}']\n"
    );
    std::fs::write(path, source).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime_secs))
        .unwrap();
}

#[test]
fn a_changed_script_is_reloaded_unless_script_reloading_is_off() {
    let dir = std::env::temp_dir().join(format!("rwsgi-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (live, fixed) = (dir.join("live.wsgi"), dir.join("fixed.wsgi"));
    write_script(&live, "v1", 1_700_000_000);
    write_script(&fixed, "v1", 1_700_000_000);
    let dir_text = dir.display().to_string();
    // One child: a child that first loads the script after the change would load the new code, reloading
    // or not.
    let apache = Apache::start(&format!(
        "{ONE_CHILD}WSGIScriptAlias /live {live}\nWSGIScriptAlias /fixed {fixed}\n\
         <Location /fixed>\n    WSGIScriptReloading Off\n</Location>\n\
         <Directory {dir_text}>\n    Require all granted\n</Directory>\n",
        live = live.display(),
        fixed = fixed.display()
    ));
    assert_eq!(apache.get("/live").text(), "v1");
    assert_eq!(apache.get("/fixed").text(), "v1");
    write_script(&live, "v2", 1_700_000_100);
    write_script(&fixed, "v2", 1_700_000_100);
    // The engine looks at a script's modification time at most every 100 ms.
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while apache.get("/live").text() != "v2" {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            apache.error_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(250));
    assert_eq!(apache.get("/fixed").text(), "v1");
    drop(apache);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn chunked_request_bodies_need_wsgi_chunked_request() {
    let apache = Apache::start(&format!(
        "WSGIScriptAlias /plain @REPO@/tests/apps/suite.py\n\
         WSGIScriptAlias /chunked @REPO@/tests/apps/suite.py\n\
         <Location /chunked>\n    WSGIChunkedRequest On\n</Location>\n{APPS_ACCESS}"
    ));
    let chunked = |path: &str| {
        apache.request(&format!(
            "POST {path}/input/read HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        ))
    };
    assert_eq!(chunked("/plain").status, 411);
    let echoed = chunked("/chunked");
    assert_eq!(echoed.status, 200, "{}", apache.error_log());
    assert!(echoed.text().contains("hello world"), "{}", echoed.text());
    let sized = apache.post("/plain/input/read", "text/plain", b"sized body");
    assert!(sized.text().contains("sized body"), "{}", sized.text());
}

#[test]
fn trusted_proxy_headers_apply_only_from_trusted_proxies() {
    let apache = Apache::start(&format!(
        "WSGIScriptAlias /trusting @REPO@/tests/apps/suite.py\n\
         WSGIScriptAlias /wary @REPO@/tests/apps/suite.py\n\
         <Location /trusting>\n    WSGITrustedProxyHeaders X-Forwarded-For X-Forwarded-Proto X-Forwarded-Host\n\
             WSGITrustedProxies 127.0.0.1 10.0.0.0/8\n</Location>\n\
         <Location /wary>\n    WSGITrustedProxyHeaders X-Forwarded-For X-Forwarded-Proto\n\
             WSGITrustedProxies 10.0.0.0/8\n</Location>\n{APPS_ACCESS}"
    ));
    let forwarded = |path: &str| {
        apache
            .request(&format!(
                "GET {path}/environ HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 9.9.9.9, 10.1.2.3\r\n\
                 X-Forwarded-Proto: https\r\nX-Forwarded-Host: example.com\r\nX-Real-IP: 6.6.6.6\r\n\
                 Connection: close\r\n\r\n"
            ))
            .json()
    };
    let env = forwarded("/trusting");
    assert_eq!(env["REMOTE_ADDR"], "9.9.9.9", "{env:#}");
    assert_eq!(env["HTTP_X_FORWARDED_FOR"], "9.9.9.9, 10.1.2.3");
    assert_eq!(env["wsgi.url_scheme"], "https");
    assert_eq!(env["HTTP_HOST"], "example.com");
    assert!(env.get("HTTP_X_REAL_IP").is_none(), "spoofable header kept");
    // The direct client (127.0.0.1) is no trusted proxy here: the headers are dropped, not believed.
    let env = forwarded("/wary");
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(env["wsgi.url_scheme"], "http");
    assert!(env.get("HTTP_X_FORWARDED_FOR").is_none());
    assert!(env.get("HTTP_X_FORWARDED_PROTO").is_none());
    let out = config_must_fail("WSGITrustedProxies 10.0.0.0/99\n");
    assert!(
        out.contains("Unable to parse trusted proxy IP address/subnet"),
        "{out}"
    );
}

#[test]
fn restrictions_on_stdout_stdin_and_signals() {
    let apache = Apache::start(&format!(
        "WSGIRestrictStdout On\nWSGIRestrictStdin On\n\
         WSGIScriptAlias /r @REPO@/tests/apps/restricted.py\n{APPS_ACCESS}"
    ));
    let report = apache.get("/r").json();
    assert_eq!(report["stdout"], "sys.stdout access restricted by mod_wsgi");
    assert_eq!(report["stdin"], "sys.stdin access restricted by mod_wsgi");
    // WSGIRestrictSignal is On by default: the handler is not installed, and the attempt is logged.
    assert_eq!(report["signal"], "ignored");
    apache.wait_for_log("Callback registration for signal 12 ignored.");

    let relaxed = Apache::start(&format!(
        "WSGIRestrictSignal Off\nWSGIScriptAlias /r @REPO@/tests/apps/restricted.py\n{APPS_ACCESS}"
    ));
    let report = relaxed.get("/r").json();
    assert_eq!(report["stdout"], "allowed");
    assert!(
        report["signal"].as_str().unwrap().contains("main thread"),
        "{report}"
    );
    relaxed.wait_for_log("to stdout");
}

#[test]
fn wsgi_error_override_hands_error_pages_to_apache() {
    let apache = Apache::start(&format!(
        "WSGIScriptAlias /plain @REPO@/tests/apps/suite.py\n\
         WSGIScriptAlias /overridden @REPO@/tests/apps/suite.py\n\
         <Location /overridden>\n    WSGIErrorOverride On\n    ErrorDocument 404 \"apache's own not-found page\"\n</Location>\n\
         {APPS_ACCESS}"
    ));
    let plain = apache.get("/plain/no-such-route");
    assert_eq!(plain.status, 404);
    assert!(plain.text().contains("no-such-route"), "{}", plain.text());
    let overridden = apache.get("/overridden/no-such-route");
    assert_eq!(overridden.status, 404);
    assert_eq!(overridden.text(), "apache's own not-found page");
    // Success pages are the app's own.
    assert_eq!(apache.get("/overridden/environ").status, 200);
}

#[test]
fn dispatch_script_chooses_group_and_callable() {
    let apache = Apache::start(&format!(
        "WSGIDispatchScript @REPO@/tests/apps/dispatch.wsgi\n\
         WSGIDaemonProcess elsewhere threads=2\n\
         WSGIScriptAlias /d @REPO@/tests/apps/dispatch_target.py\n{APPS_ACCESS}"
    ));
    let hit = |query: &str| {
        let response = apache.get(&format!("/d?{query}"));
        (response.status, response.text())
    };
    let json = |query: &str| serde_json::from_str::<serde_json::Value>(&hit(query).1).unwrap();
    let plain = json("none");
    assert_eq!(plain["callable"], "application");
    assert_eq!(plain["group"], "localhost|/d");
    assert_eq!(json("chosen")["group"], "chosen");
    assert_eq!(json("global")["group"], "");
    let alternate = json("alt&chosen");
    assert_eq!(alternate["callable"], "alternate");
    assert_eq!(alternate["group"], "chosen");
    // The process group it chooses is where the request runs.
    let daemon = json("daemon");
    assert_eq!(daemon["process_group"], "elsewhere");
    assert_ne!(daemon["pid"], plain["pid"]);
}

#[test]
fn script_alias_match_and_handler_scripts() {
    let apache = Apache::start(&format!(
        "WSGIScriptAliasMatch ^/m/([^/]+) @REPO@/tests/apps/$1.py\n\
         WSGIHandlerScript my-handler @REPO@/tests/apps/handler.wsgi\n\
         <Location /h>\n    SetHandler my-handler\n</Location>\n{APPS_ACCESS}"
    ));
    let env = apache.get("/m/suite/environ").json();
    assert_eq!(env["SCRIPT_NAME"], "/m/suite");
    assert_eq!(env["PATH_INFO"], "/environ");
    assert_eq!(
        env["SCRIPT_FILENAME"],
        format!("{}/tests/apps/suite.py", repo().display())
    );
    assert_eq!(apache.get("/m/no_such_app/x").status, 404);

    let handled = apache.get("/h/any/path");
    assert_eq!(handled.status, 200, "{}", apache.error_log());
    let env = handled.json();
    assert_eq!(env["mod_wsgi.request_handler"], "my-handler");
    assert_eq!(env["mod_wsgi.callable_object"], "handle_request");
    assert_eq!(
        env["mod_wsgi.handler_script"],
        format!("{}/tests/apps/handler.wsgi", repo().display())
    );
}

#[test]
fn digest_authentication_through_get_realm_hash() {
    let apache = Apache::start(&format!(
        "LoadModule auth_digest_module {MODULES}/mod_auth_digest.so\n\
         LoadModule authn_core_module {MODULES}/mod_authn_core.so\n\
         LoadModule authz_user_module {MODULES}/mod_authz_user.so\n\
         WSGIScriptAlias /suite @REPO@/tests/apps/suite.py\n\
         <Location /suite>\n    AuthType Digest\n    AuthName realm1\n    AuthDigestProvider wsgi\n\
             WSGIAuthUserScript @REPO@/tests/apps/auth.wsgi\n    Require valid-user\n</Location>\n\
         {APPS_ACCESS}"
    ));
    let curl = |credentials: &str| {
        let output = std::process::Command::new("curl")
            .args([
                "-s",
                "-m",
                "20",
                "--digest",
                "-u",
                credentials,
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
            ])
            .arg(format!("http://{}/suite/environ", apache.addr))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let good = curl("alice:secret");
    assert!(good.ends_with("\n200"), "{good}\n{}", apache.error_log());
    assert!(good.contains("\"REMOTE_USER\": \"alice\""), "{good}");
    assert!(good.contains("\"AUTH_TYPE\": \"Digest\""), "{good}");
    assert!(curl("alice:wrong").ends_with("\n401"));
    assert!(curl("nobody:x").ends_with("\n401"));
}

#[test]
fn set_env_and_mod_rewrite_variables_reach_the_environ() {
    let apache = Apache::start(&format!(
        "LoadModule rewrite_module {MODULES}/mod_rewrite.so\n\
         SetEnv DEPLOYMENT staging\n\
         RewriteEngine On\n\
         RewriteRule ^/suite/environ - [E=REWRITTEN:yes]\n\
         WSGIScriptAlias /suite @REPO@/tests/apps/suite.py\n{APPS_ACCESS}"
    ));
    let env = apache.get("/suite/environ").json();
    assert_eq!(env["DEPLOYMENT"], "staging", "{env:#}");
    assert_eq!(env["REWRITTEN"], "yes", "{env:#}");
}

#[test]
fn file_wrapper_goes_out_as_a_file_without_python_reads() {
    let apache = Apache::start(&format!(
        "{ONE_CHILD}WSGIScriptAlias /suite @REPO@/tests/apps/suite.py\n{APPS_ACCESS}"
    ));
    // World-readable, since Apache's children run as www-data.
    let path = std::env::temp_dir().join(format!("rwsgi-apache-file-{}", std::process::id()));
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    let response = apache.get(&format!("/suite/file?path={}", path.display()));
    assert_eq!(response.status, 200, "{}", apache.error_log());
    assert_eq!(response.body.len(), content.len());
    assert!(response.body == content, "file bytes differ");
    let limited = apache.get(&format!("/suite/file?path={}&cl=1000", path.display()));
    assert_eq!(limited.body, content[..1000]);
    assert_eq!(
        apache.get("/suite/file_reads").json()["reads"],
        0,
        "the file was read through Python"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn reload_required_hook_and_a_lost_mtime_reload_the_script() {
    use std::os::unix::fs::PermissionsExt as _;
    let flags = std::path::Path::new("/tmp/rwsgi-reload-hook");
    let _ = std::fs::remove_dir_all(flags);
    std::fs::create_dir_all(flags).unwrap();
    // The app runs as www-data and removes the flag it acts on.
    std::fs::set_permissions(flags, std::fs::Permissions::from_mode(0o777)).unwrap();
    let apache = Apache::start(&format!(
        // One child, one copy of the script: the ids compared are that copy's.
        "{ONE_CHILD}WSGIScriptAlias /r @REPO@/tests/apps/reload_hook.py\n{APPS_ACCESS}"
    ));
    let id = || apache.get("/r").text();
    let first = id();
    assert_eq!(id(), first, "{}", apache.error_log());
    std::fs::write(flags.join("reload"), "").unwrap();
    let second = id();
    assert_ne!(second, first, "reload_required() returned True");
    assert_eq!(id(), second, "one True, one reload");
    std::fs::write(flags.join("raise"), "").unwrap();
    assert_eq!(id(), second, "a raising hook reloads nothing");
    apache.wait_for_log("RuntimeError: reload hook raising on purpose");
    std::fs::remove_file(flags.join("raise")).unwrap();
    apache.get("/r?strip");
    assert_ne!(id(), second, "a module without __mtime__ is loaded again");
    let _ = std::fs::remove_dir_all(flags);
}

#[test]
fn server_metrics_show_apache_s_scoreboard_as_the_c_mod_wsgi_does() {
    let body = "WSGIServerMetrics On\n\
                WSGIScriptAlias /on @REPO@/tests/apps/server_metrics.py\n\
                WSGIDaemonProcess metrics threads=2 server-metrics=On\n\
                WSGIScriptAlias /daemon @REPO@/tests/apps/server_metrics.py process-group=metrics\n\
                <Directory @REPO@/tests/apps>\n    Require all granted\n</Directory>\n";
    let mut seen = Vec::new();
    for module in [our_module(), crate::httpd_parity::c_module()] {
        let apache = Apache::start_with(Setup {
            module: module.clone(),
            ..Setup::new(body)
        });
        let shown = module.display();
        let embedded = apache.get("/on").json();
        assert_eq!(embedded["serving_me"], 1, "{shown}: {embedded}");
        assert_eq!(embedded["processes"], embedded["server_limit"], "{shown}");
        assert_eq!(
            embedded["workers_per_process"],
            serde_json::json!([embedded["thread_limit"]]),
            "{shown}"
        );
        assert_eq!(embedded["clock_skew"], true, "{shown}");
        let daemon = apache.get("/daemon").json();
        // The child worker relaying this request to the daemon is the one sending.
        assert_eq!(daemon["serving_me"], 1, "{shown}: {daemon}");
        seen.push((
            embedded["types"].clone(),
            embedded["process_types"].clone(),
            embedded["worker_types"].clone(),
            embedded["requests_shown"].clone(),
            daemon.is_null(),
        ));
    }
    assert_eq!(seen[0], seen[1], "ours, then the C module's");
    // Off unless asked for.
    let apache = Apache::start(
        "WSGIScriptAlias /off @REPO@/tests/apps/server_metrics.py\n\
         <Directory @REPO@/tests/apps>\n    Require all granted\n</Directory>\n",
    );
    assert_eq!(apache.get("/off").json(), serde_json::Value::Null);
}
