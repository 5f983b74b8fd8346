//! An [`Embedder`] that remembers recent query embeddings, so the customer's message is
//! embedded once per turn whether retrieval or the sentiment model asks first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{EmbedError, Embedder};

/// Wraps an embedder with a least-recently-used map of single-query embeddings (batches and
/// passages pass straight through: ingestion would only evict the useful entries).
pub struct CachedQueryEmbedder {
    inner: Arc<dyn Embedder>,
    capacity: usize,
    entries: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    tick: u64,
    map: HashMap<String, (Vec<f32>, u64)>,
}

impl CachedQueryEmbedder {
    /// Keeps at most `capacity` queries; 0 turns the cache off.
    pub fn new(inner: Arc<dyn Embedder>, capacity: usize) -> Self {
        Self {
            inner,
            capacity,
            entries: Mutex::new(Lru::default()),
        }
    }

    fn lookup(&self, key: &str) -> Option<Vec<f32>> {
        let mut lru = self.entries.lock().expect("query cache lock");
        lru.tick += 1;
        let tick = lru.tick;
        lru.map.get_mut(key).map(|(vector, used)| {
            *used = tick;
            vector.clone()
        })
    }

    fn remember(&self, key: &str, vector: &[f32]) {
        if self.capacity == 0 {
            return;
        }
        let mut lru = self.entries.lock().expect("query cache lock");
        if lru.map.len() >= self.capacity && !lru.map.contains_key(key) {
            // Linear scan: the cache is small (hundreds) and a miss costs an inference anyway.
            if let Some(oldest) = lru
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            {
                lru.map.remove(&oldest);
            }
        }
        lru.tick += 1;
        let tick = lru.tick;
        lru.map.insert(key.to_string(), (vector.to_vec(), tick));
    }
}

impl Embedder for CachedQueryEmbedder {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn embed_queries(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let [text] = texts else {
            return self.inner.embed_queries(texts);
        };
        if let Some(hit) = self.lookup(text) {
            return Ok(vec![hit]);
        }
        let out = self.inner.embed_queries(texts)?;
        if let Some(vector) = out.first() {
            self.remember(text, vector);
        }
        Ok(out)
    }

    fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.inner.embed_passages(texts)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts the queries that reach the model.
    struct Counting(AtomicUsize);

    impl Embedder for Counting {
        fn model_id(&self) -> &str {
            "counting"
        }
        fn dim(&self) -> usize {
            1
        }
        fn embed_queries(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.0.fetch_add(texts.len(), Ordering::SeqCst);
            Ok(texts
                .iter()
                .map(|t| vec![t.chars().count() as f32])
                .collect())
        }
        fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.embed_queries(texts)
        }
    }

    #[test]
    fn repeats_are_served_from_memory_and_the_least_recent_is_evicted() {
        let inner = Arc::new(Counting(AtomicUsize::new(0)));
        let cache = CachedQueryEmbedder::new(inner.clone(), 2);
        let calls = || inner.0.load(Ordering::SeqCst);
        assert_eq!(cache.embed_queries(&["あ"]).unwrap(), vec![vec![1.0]]);
        assert_eq!(cache.embed_queries(&["あ"]).unwrap(), vec![vec![1.0]]);
        assert_eq!(calls(), 1);
        cache.embed_queries(&["いい"]).unwrap();
        // Touch あ so that いい is the least recently used.
        cache.embed_queries(&["あ"]).unwrap();
        cache.embed_queries(&["ううう"]).unwrap();
        assert_eq!(calls(), 3);
        cache.embed_queries(&["あ"]).unwrap();
        assert_eq!(calls(), 3, "あ was used recently and must still be cached");
        cache.embed_queries(&["いい"]).unwrap();
        assert_eq!(calls(), 4, "いい was evicted");
        // Batches and passages are never cached.
        cache.embed_queries(&["あ", "いい"]).unwrap();
        cache.embed_passages(&["あ"]).unwrap();
        assert_eq!(calls(), 7);
    }

    #[test]
    fn capacity_zero_turns_caching_off() {
        let inner = Arc::new(Counting(AtomicUsize::new(0)));
        let cache = CachedQueryEmbedder::new(inner.clone(), 0);
        cache.embed_queries(&["あ"]).unwrap();
        cache.embed_queries(&["あ"]).unwrap();
        assert_eq!(inner.0.load(Ordering::SeqCst), 2);
    }
}
