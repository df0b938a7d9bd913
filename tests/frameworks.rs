// Real frameworks from the test venv: Django in the seed's mysite.wsgi form, and Flask.

use crate::support::*;

fn django() -> Server {
    let venv = venv();
    Server::start(&[
        &app("django_site/mysite.wsgi"),
        "--python-home",
        venv.to_str().unwrap(),
        "--threads",
        "4",
    ])
}

#[test]
fn django_plain_and_template_views() {
    let server = django();
    assert_django_pages(&server, &|| server.log());
}

#[test]
fn django_form_post_and_multipart_upload() {
    let server = django();
    assert_django_form_and_upload(&server);
}

#[test]
fn django_streaming_response() {
    let server = django();
    assert_django_stream(&server);
}

// The test site's checks, shared with the Apache tests (tests/httpd.rs), which serve the same site.

/// The plain and the template view; `log` explains a failure.
pub(crate) fn assert_django_pages(client: &impl Client, log: &dyn Fn() -> String) {
    let hello = client.get("/");
    assert_eq!(
        (hello.status, hello.text().as_str()),
        (200, "Hello from Django"),
        "{}",
        log()
    );
    let page = client.get("/page/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<td>ITEM 29</td>"));
    assert!(page.text().contains("Hello, Visitor."));
}

/// A form POST, and a 300 KB multipart upload checked by size, name, field and SHA-256.
pub(crate) fn assert_django_form_and_upload(client: &impl Client) {
    let form = client.post(
        "/form/",
        "application/x-www-form-urlencoded",
        b"name=r%C3%A9my&count=3",
    );
    assert_eq!(
        form.json()["fields"],
        serde_json::json!({"name": "r\u{e9}my", "count": "3"})
    );
    let file: Vec<u8> = (0..300_000u32).map(|i| (i % 256) as u8).collect();
    let boundary = "----rwsgiboundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi there\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"data.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let upload = client.post(
        "/upload/",
        &format!("multipart/form-data; boundary={boundary}"),
        &body,
    );
    let report = upload.json();
    assert_eq!(report["size"], file.len());
    assert_eq!(report["name"], "data.bin");
    assert_eq!(report["note"], "hi there");
    let sha = python(&format!(
        "import hashlib; print(hashlib.sha256(bytes(i % 256 for i in range({}))).hexdigest())",
        file.len()
    ));
    assert_eq!(report["sha256"], sha);
}

/// A StreamingHttpResponse arrives chunked and complete.
pub(crate) fn assert_django_stream(client: &impl Client) {
    let response = client.get("/stream/");
    assert_eq!(response.status, 200);
    assert!(response.chunked && response.complete);
    assert_eq!(response.text(), "row 0\nrow 1\nrow 2\nrow 3\nrow 4\n");
}

#[test]
fn flask_app() {
    let venv = venv();
    let server = Server::start(&[
        "flask_app:app",
        "--python-path",
        &app(""),
        "--python-home",
        venv.to_str().unwrap(),
    ]);
    assert_eq!(server.get("/").text(), "Hello from Flask");
    let echo = server.post("/echo?x=1", "application/json", br#"{"a": [1, 2]}"#);
    assert_eq!(
        echo.json(),
        serde_json::json!({"json": {"a": [1, 2]}, "args": {"x": "1"}})
    );
    assert_eq!(server.get("/stream").text(), "part 0\npart 1\npart 2\n");
}
