//! Waiting on the API server without polling: a [`Watched`] set of objects is kept current by
//! kube's watcher (one list, paginated, then one long watch from its resourceVersion; on `410
//! Gone` the watcher lists again, as client-go's reflector does), and a wait wakes on each change
//! instead of asking every 100 ms. The number of requests of a wait does not grow with its length
//! (one watch per `timeoutSeconds`, 290 s by kube's default).

use std::collections::BTreeMap;

use futures::stream::BoxStream;
use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

/// The objects a watch selects, kept current.
pub struct Watched<K: Resource + Clone + 'static> {
    stream: BoxStream<'static, Result<Event<K>, watcher::Error>>,
    /// The objects by name, once the first list is complete.
    current: Option<BTreeMap<String, K>>,
    /// A list in progress (after the first or after a 410).
    listing: BTreeMap<String, K>,
    /// The last error of the watch (it retries with backoff), for a timeout's message.
    pub last_error: Option<String>,
}

fn name_of<K: Resource>(k: &K) -> String {
    k.meta().name.clone().unwrap_or_default()
}

impl<K> Watched<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    /// Starts watching what `config` selects (labels, fields) through `api`.
    pub fn new(api: Api<K>, config: watcher::Config) -> Self {
        Watched {
            stream: watcher::watcher(api, config.page_size(500))
                .default_backoff()
                .boxed(),
            current: None,
            listing: BTreeMap::new(),
            last_error: None,
        }
    }

    /// The objects as last seen (empty until the first list completed).
    pub fn objects(&self) -> impl Iterator<Item = &K> {
        self.current.iter().flat_map(|m| m.values())
    }

    /// The object named `name`, if seen.
    pub fn get(&self, name: &str) -> Option<&K> {
        self.current.as_ref().and_then(|m| m.get(name))
    }

    /// Whether the first list completed.
    pub fn synced(&self) -> bool {
        self.current.is_some()
    }

    /// Waits until the objects changed (true) or `until` passed (false). Cancel-safe: an event
    /// is applied as soon as it is taken from the stream.
    pub async fn changed(&mut self, until: Instant) -> bool {
        loop {
            let next = tokio::select! {
                n = self.stream.next() => n,
                _ = tokio::time::sleep_until(until) => return false,
            };
            match next {
                None => {
                    // The watcher never ends; if it did, wait out the deadline.
                    tokio::time::sleep_until(until).await;
                    return false;
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "watch failed; the watcher retries");
                    self.last_error = Some(e.to_string());
                }
                Some(Ok(ev)) => {
                    if self.apply(ev) {
                        return true;
                    }
                }
            }
        }
    }

    /// Applies one event; true when the current objects changed.
    fn apply(&mut self, ev: Event<K>) -> bool {
        match ev {
            Event::Init => {
                self.listing.clear();
                false
            }
            Event::InitApply(k) => {
                self.listing.insert(name_of(&k), k);
                false
            }
            Event::InitDone => {
                self.current = Some(std::mem::take(&mut self.listing));
                true
            }
            Event::Apply(k) => {
                self.current
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name_of(&k), k);
                true
            }
            Event::Delete(k) => {
                if let Some(m) = self.current.as_mut() {
                    m.remove(&name_of(&k));
                }
                true
            }
        }
    }
}
