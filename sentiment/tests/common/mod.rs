//! The real e5 model, shared by the integration tests.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use kizuna_knowledge::embed::E5Model;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model_path() -> PathBuf {
    std::env::var_os("KIZUNA_E5_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models/e5-small-q4.bin"))
}

/// The e5 model, or `None` (after printing "skipped") when it is absent and
/// `KIZUNA_SKIP_MODEL_TESTS=1`. Panics with instructions when it is absent otherwise.
pub fn e5(test: &str) -> Option<Arc<E5Model>> {
    static MODEL: OnceLock<Option<Arc<E5Model>>> = OnceLock::new();
    let loaded = MODEL.get_or_init(|| {
        let path = model_path();
        if !path.exists() {
            if std::env::var("KIZUNA_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
                return None;
            }
            panic!(
                "the e5 model is missing at {}: run scripts/setup-embedder, or set \
                 KIZUNA_SKIP_MODEL_TESTS=1 to skip the tests that need it",
                path.display()
            );
        }
        Some(Arc::new(E5Model::load(&path).expect("load the e5 model")))
    });
    if loaded.is_none() {
        println!("{test}: skipped (no e5 model; KIZUNA_SKIP_MODEL_TESTS=1)");
    }
    loaded.clone()
}
