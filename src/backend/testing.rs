//! A store that misbehaves on purpose, for unit tests: [`Hooked`] passes
//! every call to an inner backend except where its [`Hooks`] step in.

use std::sync::Arc;

use super::{Backend, Data, FileKind, FileSink};
use crate::error::Result;
use crate::repo::{InitOptions, KdfParams, Repository};

/// A new repository on `backend` with 1 MiB packs and a cheap key
/// derivation, so tests fill several packs with little data, quickly.
pub(crate) fn repo_of_small_packs(backend: Arc<dyn Backend>) -> Repository {
    let opts = InitOptions {
        pack_size: 1 << 20,
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            lanes: 1,
        },
        ..InitOptions::default()
    };
    Repository::init(backend, b"pw", &opts).expect("init a test repository")
}

/// Where a test's store departs from the backend it wraps. Each hook
/// returns `None` to let the call through.
pub(crate) trait Hooks: Send + Sync {
    /// Whether the store claims to be remote (see
    /// [`Backend::prefers_ranges`]); by default what the inner one says.
    fn prefers_ranges(&self, inner: &dyn Backend) -> bool {
        inner.prefers_ranges()
    }

    /// Replaces the outcome of `read`.
    fn read(&self, _kind: FileKind, _name: &str) -> Option<Result<Data>> {
        None
    }

    /// Replaces the outcome of `write`.
    fn write(&self, _kind: FileKind, _name: &str) -> Option<Result<()>> {
        None
    }

    /// Replaces the outcome of `remove`.
    fn remove(&self, _kind: FileKind, _name: &str) -> Option<Result<()>> {
        None
    }

    /// Replaces the outcome of `settle_removals`.
    fn settle_removals(&self) -> Option<Result<()>> {
        None
    }

    /// The store's pack sink, given the inner backend's; by default none
    /// (the [`Backend`] default), so packs are written whole.
    fn pack_sink(&self, _inner: &dyn Backend) -> Result<Option<Box<dyn FileSink>>> {
        Ok(None)
    }
}

/// `inner` with `hooks` applied.
pub(crate) struct Hooked<B, H> {
    pub inner: B,
    pub hooks: H,
}

impl<B: Backend, H: Hooks> Backend for Hooked<B, H> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn exists(&self) -> Result<bool> {
        self.inner.exists()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn list(&self, kind: FileKind) -> Result<Vec<String>> {
        self.inner.list(kind)
    }
    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.inner.size(kind, name)
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Data> {
        self.hooks
            .read(kind, name)
            .unwrap_or_else(|| self.inner.read(kind, name))
    }
    fn read_listed(&self, kind: FileKind, name: &str, size: u64) -> Result<Data> {
        self.hooks
            .read(kind, name)
            .unwrap_or_else(|| self.inner.read_listed(kind, name, size))
    }
    fn read_range(&self, kind: FileKind, name: &str, at: u64, len: usize) -> Result<Vec<u8>> {
        self.inner.read_range(kind, name, at, len)
    }
    fn write(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
        self.hooks
            .write(kind, name)
            .unwrap_or_else(|| self.inner.write(kind, name, bytes))
    }
    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.hooks
            .remove(kind, name)
            .unwrap_or_else(|| self.inner.remove(kind, name))
    }
    fn settle_removals(&self) -> Result<()> {
        self.hooks
            .settle_removals()
            .unwrap_or_else(|| self.inner.settle_removals())
    }
    fn pack_sink(&self) -> Result<Option<Box<dyn FileSink>>> {
        self.hooks.pack_sink(&self.inner)
    }
    fn prefers_ranges(&self) -> bool {
        self.hooks.prefers_ranges(&self.inner)
    }
}
