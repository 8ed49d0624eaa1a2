//! A thread that reads a topic from its beginning and then follows it, handing every record's
//! payload to a callback, and says how fresh what it read is.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tally_runtime::kafka::KafkaConfig;

/// How far the follower has got; shared with whoever answers from what it read.
#[derive(Debug, Default)]
pub struct FollowerState {
    caught_up: AtomicBool,
    last_contact_ms: AtomicI64,
    records: AtomicU64,
}

impl FollowerState {
    /// Whether the follower has once read up to the end the topic had.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Milliseconds since the broker last answered the follower (`None` before it ever did).
    pub fn staleness_ms(&self, now_ms: i64) -> Option<i64> {
        match self.last_contact_ms.load(Ordering::Acquire) {
            0 => None,
            at => Some((now_ms - at).max(0)),
        }
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        self.last_contact_ms
            .store(crate::now_ms(), Ordering::Release);
    }
}

/// The running follower; stops its thread when dropped.
pub struct Follower {
    state: Arc<FollowerState>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Follower {
    /// Starts following `topic`; `apply` gets each record's key and payload, in order (a
    /// tombstone has no payload).
    pub fn start<F>(kafka: &KafkaConfig, topic: &str, apply: F) -> anyhow::Result<Self>
    where
        F: FnMut(Option<&[u8]>, Option<&[u8]>) + Send + 'static,
    {
        // Fails early on a bad configuration; the thread builds its own clients.
        drop(consumer(kafka)?);
        let state = Arc::new(FollowerState::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop, topic, kafka) =
                (state.clone(), stop.clone(), topic.to_owned(), kafka.clone());
            std::thread::Builder::new()
                .name(format!("follow-{topic}"))
                .spawn(move || follow(&kafka, &topic, &state, &stop, apply))?
        };
        Ok(Self {
            state,
            stop,
            thread: Some(thread),
        })
    }

    pub fn state(&self) -> Arc<FollowerState> {
        self.state.clone()
    }

    /// Waits until the follower has read the topic to its end once, or `timeout` passes.
    pub fn wait_caught_up(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.state.is_caught_up() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// After this long without an answer from the broker the follower drops its client and
/// builds a new one: librdkafka can keep a broker it lost as unusable (a cached "unknown
/// partition", a request waiting out its timeout) well after the broker is back.
const RECONNECT_AFTER: Duration = Duration::from_secs(15);

fn consumer(kafka: &KafkaConfig) -> anyhow::Result<BaseConsumer> {
    Ok(kafka
        .client_config()
        .set(
            "group.id",
            format!("tally-follower-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("socket.timeout.ms", "10000")
        .create()?)
}

/// Follows the topic until `stop`, with a new client after each long outage; every record
/// is applied once, in order (a new client starts after the last record applied).
fn follow<F: FnMut(Option<&[u8]>, Option<&[u8]>)>(
    kafka: &KafkaConfig,
    topic: &str,
    state: &FollowerState,
    stop: &AtomicBool,
    mut apply: F,
) {
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut ends: Option<Vec<i64>> = None;
    while !stop.load(Ordering::Acquire) {
        match consumer(kafka) {
            Ok(consumer) => {
                follow_with(
                    &consumer, topic, state, stop, &mut next, &mut ends, &mut apply,
                );
            }
            Err(err) => tracing::warn!(topic, %err, "cannot create a Kafka client"),
        }
        if !stop.load(Ordering::Acquire) {
            tracing::warn!(topic, "no answer from Kafka for a while; reconnecting");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// One client's share of [`follow`]: returns on `stop`, or once the broker has not answered
/// for [`RECONNECT_AFTER`].
fn follow_with<F: FnMut(Option<&[u8]>, Option<&[u8]>)>(
    consumer: &BaseConsumer,
    topic: &str,
    state: &FollowerState,
    stop: &AtomicBool,
    next: &mut HashMap<i32, i64>,
    ends: &mut Option<Vec<i64>>,
    apply: &mut F,
) {
    let since = Instant::now();
    let partitions = loop {
        if stop.load(Ordering::Acquire) || since.elapsed() > RECONNECT_AFTER {
            return;
        }
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(2)) {
            Ok(metadata) => match metadata.topics().first() {
                Some(t) if !t.partitions().is_empty() => {
                    break t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>()
                }
                _ => tracing::warn!(topic, "topic not found yet; waiting"),
            },
            Err(err) => tracing::warn!(topic, %err, "cannot reach kafka to follow the topic"),
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        let offset = next
            .get(p)
            .map_or(Offset::Beginning, |at| Offset::Offset(*at));
        let _ = assignment.add_partition_offset(topic, *p, offset);
    }
    if let Err(err) = consumer.assign(&assignment) {
        tracing::error!(topic, %err, "cannot assign the topic's partitions");
        return;
    }
    state.touch();
    let mut answered = Instant::now();
    let mut last_probe = Instant::now() - Duration::from_secs(10);
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                apply(message.key(), message.payload());
                next.insert(message.partition(), message.offset() + 1);
                state.records.fetch_add(1, Ordering::Relaxed);
                state.touch();
                answered = Instant::now();
            }
            Some(Err(err)) => tracing::debug!(topic, %err, "follower poll error"),
            None => {}
        }
        if last_probe.elapsed() >= Duration::from_secs(1) {
            last_probe = Instant::now();
            // Asking for the end offsets proves the broker answers, and tells when the
            // first full read is done.
            let probed: Result<Vec<i64>, _> = partitions
                .iter()
                .map(|p| {
                    consumer
                        .fetch_watermarks(topic, *p, Duration::from_secs(1))
                        .map(|(_, high)| high)
                })
                .collect();
            match probed {
                Ok(highs) => {
                    state.touch();
                    answered = Instant::now();
                    ends.get_or_insert(highs);
                }
                Err(err) => {
                    tracing::debug!(topic, %err, "cannot read the topic's end offsets");
                    if answered.elapsed() > RECONNECT_AFTER {
                        return;
                    }
                }
            }
        }
        if !state.is_caught_up() {
            if let Some(ends) = ends.as_ref() {
                if reached(consumer, topic, &partitions, ends) {
                    state.caught_up.store(true, Ordering::Release);
                    tracing::info!(topic, records = state.records(), "caught up");
                }
            }
        }
    }
}

fn reached(consumer: &BaseConsumer, topic: &str, partitions: &[i32], ends: &[i64]) -> bool {
    let Ok(positions) = consumer.position() else {
        return false;
    };
    partitions.iter().zip(ends).all(|(p, end)| {
        *end == 0
            || matches!(
                positions.find_partition(topic, *p).map(|e| e.offset()),
                Some(Offset::Offset(at)) if at >= *end
            )
    })
}
