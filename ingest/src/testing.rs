//! What the unit tests of every route family share: one fake sink in place of Kafka, and the
//! services of a configuration with a detached quota view (filled by hand, no Kafka).

use crate::config::IngestConfig;
use crate::quota::QuotaState;
use crate::server::{routes, Services};
use crate::write::sink::{EventSink, SinkError, SinkRecord};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{web, App};
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Keeps what it is given; while `failing` is set it is unavailable, while `refusing` is set
/// it refuses every record for good.
#[derive(Default)]
pub struct FakeSink {
    pub records: Mutex<Vec<SinkRecord>>,
    pub failing: AtomicBool,
    pub refusing: AtomicBool,
}

impl EventSink for FakeSink {
    fn publish(&self, records: Vec<SinkRecord>) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            if self.failing.load(Ordering::Relaxed) {
                return Err(SinkError::Unavailable("broker down".into()));
            }
            if self.refusing.load(Ordering::Relaxed) {
                return Err(SinkError::Rejected("message too large".into()));
            }
            self.records.lock().expect("lock").extend(records);
            Ok(())
        })
    }

    fn is_ready(&self) -> bool {
        !self.failing.load(Ordering::Relaxed)
    }
}

/// The services `config.roles` names, over `sink` and a quota view that follows nothing.
pub fn services(config: IngestConfig, sink: Arc<dyn EventSink>) -> web::Data<Services> {
    let quota = QuotaState::detached(config.quota.clone());
    web::Data::new(Services::new(config, sink, quota).expect("services"))
}

/// The quota view of `services` (every test configuration serves a role that has one).
pub fn view(services: &Services) -> &QuotaState {
    services
        .quota
        .as_deref()
        .expect("a role with the quota view")
}

/// An app serving `services` as the server does, without its middleware.
pub fn app(
    services: &web::Data<Services>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(services.clone())
        .configure(|cfg| routes(cfg, services))
}
