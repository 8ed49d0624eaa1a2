//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, tally-ingest exports one span per request over
//! OTLP/HTTP, carrying the project and the batch size. A small receiver here collects them.

use actix_web::{web, App, HttpResponse, HttpServer};
use chrono::{Duration as ChronoDuration, Utc};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally_tests::devstack::Private;
use tally_tests::env::new_key;
use tally_tests::private_stack::free_port;
use tally_tests::processes::{service_command, terminate, KillOnDrop};
use tally_tests::workload::{batch_body, Workload};

type Received = Arc<Mutex<Vec<Vec<u8>>>>;

async fn receive(received: web::Data<Received>, body: web::Bytes) -> HttpResponse {
    received.lock().expect("lock").push(body.to_vec());
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(Vec::new())
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_are_exported_over_otlp() {
    let received: Received = Arc::default();
    let data = web::Data::new(received.clone());
    let receiver = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/v1/traces", web::post().to(receive))
    })
    .bind("127.0.0.1:0")
    .expect("bind");
    let receiver_port = receiver.addrs()[0].port();
    let receiver = receiver.workers(1).disable_signals().run();
    let receiver_handle = receiver.handle();
    tokio::spawn(receiver);

    // Every topic private: ingest creates the ones its config names at start.
    let private = Private::new(1);
    let kafka = &private.kafka;
    kafka.ensure_topics().await.expect("topics");
    let (key, key_config) = new_key(&[tally_ingest::auth::Scope::Ingest]);
    let port = free_port();
    let config = std::env::temp_dir().join(format!("tally-otlp-{}.toml", private.name));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[kafka]\nbrokers = \"{}\"\nevents_topic = \"{}\"\n\
             dead_letter_topic = \"{}\"\nquota_topic = \"{}\"\nalerts_topic = \"{}\"\n\
             [[projects]]\nid = \"otlp-project\"\nkeys = [{{ sha256 = \"{}\", scopes = [\"ingest\"] }}]\n",
            kafka.brokers,
            kafka.events_topic,
            kafka.dead_letter_topic,
            kafka.quota_topic,
            kafka.alerts_topic,
            key_config.sha256
        ),
    )
    .expect("config");
    let mut ingest = KillOnDrop(
        service_command("tally-ingest")
            .args(["--config", &config.display().to_string()])
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{receiver_port}"),
            )
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("ingest starts"),
    );

    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("{url}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "ingest did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = Workload::new(8, Utc::now() - ChronoDuration::minutes(1)).session(0, "acct");
    let response = http
        .post(format!("{url}/v1/batch"))
        .bearer_auth(&key)
        .json(&batch_body(&events))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);

    let deadline = Instant::now() + Duration::from_secs(20);
    let exported = loop {
        let found = received
            .lock()
            .expect("lock")
            .iter()
            .find(|body| contains(body, "POST /v1/batch"))
            .cloned();
        if let Some(body) = found {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no request span reached the OTLP receiver"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for attribute in [
        "tally-ingest",
        "project",
        "otlp-project",
        "batch_size",
        "request_id",
    ] {
        assert!(
            contains(&exported, attribute),
            "the exported span carries {attribute}"
        );
    }

    // A request whose path holds an account id is named by its route in the spans.
    let response = http
        .get(format!("{url}/v1/usage/acct-in-the-path-77"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 403, "an ingest key may not read usage");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !received
        .lock()
        .expect("lock")
        .iter()
        .any(|body| contains(body, "GET /v1/usage/{account_id}"))
    {
        assert!(
            Instant::now() < deadline,
            "no span of the usage request reached the receiver"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !received
            .lock()
            .expect("lock")
            .iter()
            .any(|body| contains(body, "acct-in-the-path-77")),
        "an account id from a path reached the exported spans"
    );

    terminate(&mut ingest.0);
    receiver_handle.stop(true).await;
    let _ = std::fs::remove_file(&config);
    private.remove().await;
}
