//! Readiness: whether the server may vend now. Set by the readiness thread once the key set, the
//! installation's account and the first profile generation are loaded; false again while the
//! server drains.
#![forbid(unsafe_code)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::http::ServerHandle;

/// See the module documentation.
#[derive(Default)]
pub struct Readiness {
    loaded: AtomicBool,
    server: OnceLock<ServerHandle>,
}

impl Readiness {
    /// Ready to vend: everything loaded, and the server (once attached) not draining.
    pub fn is_ready(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
            && !self.server.get().is_some_and(ServerHandle::is_draining)
    }

    /// Everything readiness waits for is loaded (draining or not): requests on connections
    /// already accepted are still served while draining.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }

    /// Records whether everything readiness waits for is loaded.
    pub fn set_loaded(&self, loaded: bool) {
        self.loaded.store(loaded, Ordering::SeqCst);
    }

    /// Attaches the running server (whose draining ends readiness); once.
    pub fn attach(&self, server: ServerHandle) {
        let _ = self.server.set(server);
    }

    /// The running server, once attached.
    pub fn server(&self) -> Option<&ServerHandle> {
        self.server.get()
    }
}
