// The `mod_wsgi` module's API beyond its attributes: event subscriptions and their payloads,
// request_data(), active_requests, process_stopping at shutdown, and the metrics accessors.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

fn quiet(args: &[&str]) -> Server {
    Server::start_with(
        args,
        &repo(),
        &[("MOD_WSGI_API_QUIET", std::path::Path::new("1"))],
    )
}

/// The events the app's second subscriber recorded for requests to `path`, in order, once the last of
/// them finished (request_finished is published just after the response went out).
fn events_for(server: &Server, path: &str) -> Vec<Value> {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let events: Vec<Value> = server
            .get("/events")
            .json()
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["path"] == path)
            .cloned()
            .collect();
        if events
            .last()
            .is_some_and(|e| e["name"] == "request_finished")
        {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "no request_finished for {path}: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The paths of the requests in `active_requests`, polled until they are `expected`.
fn wait_for_active(server: &Server, expected: &[&str]) {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let active = server.get("/active").json();
        if active["paths"] == serde_json::json!(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "active_requests never became {expected:?}: {active}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn names(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["name"].as_str().unwrap()).collect()
}

fn keys(event: &Value) -> Vec<&str> {
    event["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect()
}

#[test]
fn a_request_publishes_started_response_and_finished_events() {
    let server = Server::start(&[&app("mod_wsgi_api.py"), "--threads", "2"]);
    let hello = server.get("/hello");
    assert_eq!(hello.status, 200, "{}", server.log());
    let body = hello.json();
    // The subscriber's and the app's writes share one request_data() dict.
    assert_eq!(body["request_data"]["seen_by"], "first");
    assert_eq!(body["request_data"]["app"], "set by the app");
    assert_eq!(
        body["import_time_request_data"],
        "RuntimeError: no active request for thread"
    );
    // The request is in active_requests while it runs, under its request_id.
    assert_eq!(body["own_entry_id_matches"], true);
    assert!(body["own_entry_keys"]
        .as_array()
        .unwrap()
        .contains(&"request_environ".into()));

    let events = events_for(&server, "/hello");
    assert_eq!(
        names(&events),
        ["request_started", "response_started", "request_finished"]
    );
    let (started, response, finished) = (&events[0], &events[1], &events[2]);
    for key in [
        "request_id",
        "thread_id",
        "server_pid",
        "request_start",
        "queue_start",
        "daemon_start",
        "application_start",
        "application_object",
        "callable_object",
        "request_environ",
        "request_data",
    ] {
        assert!(keys(started).contains(&key), "request_started lacks {key}");
    }
    assert_eq!(started["callable_object"], "application");
    assert_eq!(started["times_ok"], true);
    assert_eq!(started["app_is_callable"], true);
    assert_eq!(started["server_pid"], finished["server_pid"]);
    // A dict returned by an earlier subscriber is merged into what later ones get.
    assert_eq!(started["merged_by_first"], true);
    assert_eq!(started["thread_id"], finished["thread_id"]);
    assert!(started["thread_id"].as_u64().unwrap() >= 1);

    assert_eq!(
        keys(response),
        [
            "exception_info",
            "request_data",
            "request_id",
            "response_headers",
            "response_status"
        ]
    );
    assert_eq!(response["response_status"], "200 OK");
    assert_eq!(response["response_headers"][0][0], "Content-Type");
    assert_eq!(response["request_id"], started["request_id"]);

    for key in [
        "request_id",
        "thread_id",
        "server_pid",
        "request_start",
        "application_start",
        "application_finish",
        "application_time",
        "input_reads",
        "input_length",
        "input_time",
        "output_writes",
        "output_length",
        "output_time",
        "status",
        "cpu_user_time",
        "cpu_system_time",
        "cpu_time",
        "gil_wait_time",
        "gil_wait_count",
        "request_data",
    ] {
        assert!(
            keys(finished).contains(&key),
            "request_finished lacks {key}"
        );
    }
    assert_eq!(finished["request_id"], started["request_id"]);
    assert_eq!(finished["status"], 200);
    assert_eq!(finished["output_length"], hello.body.len());
    assert_eq!(finished["output_writes"], 1);
    assert_eq!(finished["input_length"], 0);
    assert_eq!(finished["times_ok"], true);
    // request_data carries across the request's events.
    assert_eq!(finished["request_data"]["app"], "set by the app");
}

#[test]
fn events_report_status_headers_and_body_figures() {
    let server = Server::start(&[&app("mod_wsgi_api.py")]);
    assert_eq!(server.get("/created").status, 201);
    let events = events_for(&server, "/created");
    assert_eq!(events[1]["response_status"], "201 Created");
    assert_eq!(
        events[1]["response_headers"][1],
        serde_json::json!(["X-Test", "yes"])
    );
    assert_eq!(events[2]["status"], 201);

    let posted = server.post("/post", "text/plain", b"abcdef");
    assert_eq!(posted.text(), "got abcdef");
    let events = events_for(&server, "/post");
    let finished = events.last().unwrap();
    assert_eq!(finished["name"], "request_finished");
    assert_eq!(finished["input_length"], 6);
    assert!(finished["input_reads"].as_u64().unwrap() >= 1);
    assert_eq!(finished["output_length"], 10);

    assert_eq!(server.get("/not_found").status, 404);
    let events = events_for(&server, "/not_found");
    assert_eq!(events.last().unwrap()["status"], 404);
}

#[test]
fn an_exception_from_the_app_is_published_before_the_500() {
    let server = Server::start(&[&app("mod_wsgi_api.py")]);
    assert_eq!(server.get("/raise").status, 500);
    let events = events_for(&server, "/raise");
    assert_eq!(
        names(&events),
        ["request_started", "request_exception", "request_finished"]
    );
    let exception = &events[1];
    assert_eq!(
        keys(exception),
        ["exception_info", "request_data", "request_id"]
    );
    assert_eq!(
        exception["exception"],
        "ValueError: the app failed on purpose"
    );
    assert_eq!(exception["has_traceback"], true);
    assert_eq!(exception["request_id"], events[0]["request_id"]);
    // The app never called start_response: mod_wsgi reports status 0.
    assert_eq!(events[2]["status"], 0);
}

#[test]
fn a_request_started_subscriber_can_wrap_the_application() {
    let server = Server::start(&[&app("mod_wsgi_api.py")]);
    assert_eq!(server.get("/wrapped").text(), "wrapped app");
    // Other requests get the application itself.
    assert_eq!(server.get("/anything").text(), "ok");
}

#[test]
fn a_failing_subscriber_is_logged_and_the_request_still_served() {
    let server = Server::start(&[&app("mod_wsgi_api.py")]);
    let response = server.get("/callback_error");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "still served");
    let log = server.wait_for_log("exception raised by event callback for 'request_started'");
    assert!(
        log.contains("ValueError exception raised by event callback for 'request_started'."),
        "{log}"
    );
    assert!(log.contains("subscriber failed on purpose"), "{log}");
    // The subscribers after it still ran.
    assert_eq!(
        names(&events_for(&server, "/callback_error")),
        ["request_started", "response_started", "request_finished"]
    );
}

#[test]
fn subscribe_signals_accepts_the_callback_but_says_it_is_never_called() {
    let server = Server::start(&[&app("mod_wsgi_api.py")]);
    assert_eq!(server.get("/anything").status, 200);
    let log = server.wait_for_log("rwsgi publishes no process_signal events");
    assert!(log.contains("mod_wsgi_api.py"), "{log}");
}

#[test]
fn request_data_belongs_to_the_request_thread() {
    let server = Server::start(&[&app("mod_wsgi_api.py")]);
    let result = server.get("/other_thread").json();
    assert_eq!(
        result,
        serde_json::json!(["RuntimeError: no active request for thread"])
    );
}

#[test]
fn without_subscribers_request_data_and_active_requests_still_work() {
    let server = quiet(&[&app("mod_wsgi_api.py"), "--threads", "2"]);
    let body = server.get("/hello").json();
    assert_eq!(body["request_data"]["app"], "set by the app");
    assert!(body["request_data"].get("seen_by").is_none());
    // active_requests is kept from its first use on: the next request is in it.
    let active = server.get("/active").json();
    assert_eq!(active["paths"], serde_json::json!(["/active"]));
    assert_eq!(active["listed"], true);
    assert_eq!(server.get("/events").json(), serde_json::json!([]));
    // request_data() is a fresh dict per request.
    let again = server.get("/hello").json();
    assert_eq!(
        again["request_data"],
        serde_json::json!({"app": "set by the app"})
    );
}

#[test]
fn active_requests_lists_the_requests_in_flight() {
    let server = Server::start(&[&app("mod_wsgi_api.py"), "--threads", "4"]);
    let mut slow = server.connect();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    wait_for_active(&server, &["/active", "/slow"]);
    server.get("/release");
    let response = read_response(&mut std::io::BufReader::new(slow), false).unwrap();
    assert_eq!(response.json()["released"], true);
    // Finished requests leave it.
    wait_for_active(&server, &["/active"]);
}

#[test]
fn process_stopping_reaches_shutdown_and_event_subscribers() {
    let mut server = Server::start(&[&app("mod_wsgi_api.py")]);
    assert_eq!(server.get("/anything").status, 200);
    assert!(server.signal_and_wait("TERM").success());
    let log = server.log();
    let event = log
        .find("event subscriber saw process_stopping, reason ''")
        .unwrap_or_else(|| panic!("{log}"));
    let shutdown = log
        .find("shutdown subscriber called with 'process_stopping', reason ''")
        .unwrap_or_else(|| panic!("{log}"));
    // subscribe_events callbacks first, then subscribe_shutdown ones; each once.
    assert!(event < shutdown, "{log}");
    assert_eq!(
        log.matches("shutdown subscriber called").count(),
        1,
        "{log}"
    );
}

#[test]
fn metrics_are_none_until_recording_starts() {
    let server = quiet(&[&app("mod_wsgi_api.py"), "--threads", "3"]);
    assert_eq!(
        server.get("/metrics/none").json(),
        serde_json::json!({"request": null, "process": null, "server": null})
    );
    assert_eq!(server.get("/metrics/start").status, 200);
    for _ in 0..3 {
        assert_eq!(server.get("/anything").status, 200);
    }
    assert_eq!(server.get("/not_found").status, 404);
    assert_eq!(
        server.post("/post", "text/plain", b"12345").text(),
        "got 12345"
    );

    let sample = server.get("/metrics/request").json();
    // Completed since recording began: 3 + the 404 + the POST (the start request began before it).
    assert_eq!(sample["request_count"], 5, "{sample}");
    assert_eq!(sample["status_2xx"], 4);
    assert_eq!(sample["status_4xx"], 1);
    assert_eq!(sample["status_5xx"], 0);
    assert_eq!(sample["input_bytes"], 5);
    assert_eq!(sample["request_threads_maximum"], 3);
    assert_eq!(
        sample["request_threads_completed"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        sample["request_threads_buckets"],
        sample["request_threads_completed"]
    );
    assert_eq!(
        sample["application_time_buckets"].as_array().unwrap().len(),
        65
    );
    assert_eq!(sample["queue_time"], Value::Null);
    assert_eq!(sample["daemon_time_min_us"], Value::Null);
    assert!(
        sample["application_time_max_us"].as_u64().unwrap()
            >= sample["application_time_min_us"].as_u64().unwrap()
    );
    assert!(sample["sample_period"].as_f64().unwrap() > 0.0);
    assert!(sample["memory_rss"].as_u64().unwrap() > 0);
    assert!(sample["request_threads_active"].as_u64().unwrap() >= 1);
    assert!(sample["pid"].is_u64());
    for key in [
        "start_time",
        "stop_time",
        "request_throughput",
        "capacity_utilization",
        "request_threads_started",
        "request_threads_busy_time",
        "request_threads_cpu_time",
        "request_threads_current_elapsed",
        "request_threads_max_duration",
        "server_time",
        "application_time",
        "request_time",
        "input_read_time",
        "output_write_time",
        "gil_wait_time",
        "gil_wait_count",
        "gil_wait_time_buckets",
        "input_reads",
        "output_bytes",
        "output_writes",
        "status_1xx",
        "status_3xx",
        "cpu_user_utilization",
        "cpu_system_utilization",
        "cpu_utilization",
        "cpu_time",
        "memory_max_rss",
    ] {
        assert!(sample.get(key).is_some(), "request_metrics() lacks {key}");
    }
    // A drain: the next sample covers only what came after (the previous /metrics/request call).
    let next = server.get("/metrics/request").json();
    assert_eq!(next["request_count"], 1, "{next}");
    assert_eq!(next["start_time"], sample["stop_time"]);

    let process = server.get("/metrics/process").json();
    // Every request of the process, also those before recording began.
    assert!(process["request_count"].as_u64().unwrap() >= 9, "{process}");
    assert_eq!(process["active_requests"], 1);
    assert!(process["request_threads"].as_u64().unwrap() >= 1);
    assert!(process["running_time"].as_u64().is_some());
    assert!(process["cpu_time"].as_f64().unwrap() > 0.0);
    assert!(process["memory_max_rss"].as_u64().unwrap() >= process["memory_rss"].as_u64().unwrap());
    let threads = process["threads"].as_array().unwrap();
    let served: u64 = threads
        .iter()
        .map(|t| t["request_count"].as_u64().unwrap())
        .sum();
    assert_eq!(served, process["request_count"].as_u64().unwrap());
    assert!(threads
        .iter()
        .all(|t| t["thread_id"].as_u64().unwrap() >= 1));
    for key in [
        "pid",
        "restart_time",
        "current_time",
        "request_busy_time",
        "cpu_user_time",
        "cpu_system_time",
    ] {
        assert!(process.get(key).is_some(), "process_metrics() lacks {key}");
    }
}

#[test]
fn under_apache_each_interpreter_has_its_own_subscribers_and_is_told_it_stops() {
    use crate::support::apache::Apache;
    let mut apache = Apache::start(
        "StartServers 1\nServerLimit 1\nThreadsPerChild 4\nMaxRequestWorkers 4\nMinSpareThreads 1\n\
         MaxSpareThreads 4\n\
         WSGIScriptAlias /sub @REPO@/tests/apps/mod_wsgi_api.py\n\
         WSGIScriptAlias /main @REPO@/tests/apps/mod_wsgi_api.py application-group=%{GLOBAL}\n\
         <Directory @REPO@/tests/apps>\n    Require all granted\n</Directory>\n",
    );
    for mount in ["/sub", "/main"] {
        let hello = apache.get(&format!("{mount}/hello"));
        assert_eq!(hello.status, 200, "{}", apache.error_log());
        assert_eq!(hello.json()["request_data"]["seen_by"], "first");
        assert_eq!(hello.json()["own_entry_id_matches"], true);
    }
    assert_eq!(apache.get("/sub/created").status, 201);
    // Each interpreter's subscribers saw only its own requests.
    let deadline = Instant::now() + IO_TIMEOUT;
    for (mount, expected) in [("/sub", 2), ("/main", 1)] {
        loop {
            let events = apache.get(&format!("{mount}/events")).json();
            let finished: Vec<&Value> = events
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["name"] == "request_finished" && e["path"] != "/events")
                .collect();
            if finished.len() == expected {
                assert!(finished.iter().all(|e| e["times_ok"] == true), "{events}");
                break;
            }
            assert!(Instant::now() < deadline, "{mount}: {events}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(apache.stop().success());
    let log = apache.error_log();
    assert_eq!(
        log.matches("shutdown subscriber called with 'process_stopping', reason ''")
            .count(),
        2,
        "{log}"
    );
    assert_eq!(
        log.matches("event subscriber saw process_stopping").count(),
        2,
        "{log}"
    );
}
