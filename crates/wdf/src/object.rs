//! The object model: attributes, the parent/child tree, typed contexts and cleanup callbacks.
//!
//! Every framework object has an [`ObjectHeader`]: its name, its children, its contexts and its
//! cleanup callback. Deleting an object runs the cleanup callbacks of all its children first,
//! then its own, and never under a callback lock (spec §1.3).
//!
//! Equivalent to: `WDF_OBJECT_ATTRIBUTES`, `FxObject`, `WdfObjectGetTypedContext`,
//! `EvtCleanupCallback`.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::sync::{ExecutionLevel, SyncScope};

/// A cleanup callback: runs once when the object is deleted, children first.
pub type CleanupCallback = Box<dyn FnOnce() + Send + Sync>;

/// Attributes every object is created with.
///
/// Equivalent to: `WDF_OBJECT_ATTRIBUTES` (`WDF_OBJECT_ATTRIBUTES_INIT` gives
/// InheritFromParent for both fields, as `Default` does here).
#[derive(Default)]
pub struct ObjectAttributes {
    /// Which callbacks are serialized, and by whose lock.
    pub sync_scope: SyncScope,
    /// The IRQL callbacks run at.
    pub execution_level: ExecutionLevel,
    /// Runs when the object is deleted, after its children's cleanup callbacks.
    pub cleanup: Option<CleanupCallback>,
}

impl ObjectAttributes {
    /// Attributes with the given scope (level inherited).
    pub fn scope(sync_scope: SyncScope) -> Self {
        ObjectAttributes {
            sync_scope,
            ..Default::default()
        }
    }

    /// Attributes with the given level (scope inherited).
    pub fn level(execution_level: ExecutionLevel) -> Self {
        ObjectAttributes {
            execution_level,
            ..Default::default()
        }
    }

    /// Sets the scope.
    pub fn with_scope(mut self, sync_scope: SyncScope) -> Self {
        self.sync_scope = sync_scope;
        self
    }

    /// Sets the level.
    pub fn with_level(mut self, execution_level: ExecutionLevel) -> Self {
        self.execution_level = execution_level;
        self
    }

    /// Sets the cleanup callback.
    pub fn with_cleanup(mut self, f: impl FnOnce() + Send + Sync + 'static) -> Self {
        self.cleanup = Some(Box::new(f));
        self
    }
}

impl fmt::Debug for ObjectAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectAttributes")
            .field("sync_scope", &self.sync_scope)
            .field("execution_level", &self.execution_level)
            .field("cleanup", &self.cleanup.is_some())
            .finish()
    }
}

/// Where an object is in its life. Equivalent to: `FxObjectState` (reduced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectState {
    /// Created and usable.
    Created,
    /// Its cleanup callbacks have run; it no longer accepts work.
    Deleted,
}

struct HeaderState {
    state: ObjectState,
    children: Vec<Arc<ObjectHeader>>,
    cleanup: Option<CleanupCallback>,
    /// The framework's own teardown of the object (a timer's rundown), run before its cleanup.
    dispose: Option<CleanupCallback>,
    contexts: Vec<Arc<dyn Any + Send + Sync>>,
}

/// What every framework object has: a name, children, contexts, a cleanup callback.
pub struct ObjectHeader {
    kind: &'static str,
    name: String,
    inner: Mutex<HeaderState>,
}

impl ObjectHeader {
    pub(crate) fn new(
        kind: &'static str,
        name: String,
        cleanup: Option<CleanupCallback>,
    ) -> Arc<Self> {
        Arc::new(ObjectHeader {
            kind,
            name,
            inner: Mutex::new(HeaderState {
                state: ObjectState::Created,
                children: Vec::new(),
                cleanup,
                dispose: None,
                contexts: Vec::new(),
            }),
        })
    }

    /// The object's kind (`"device"`, `"queue"`, ...).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The object's state.
    pub fn state(&self) -> ObjectState {
        self.inner.lock().state
    }

    pub(crate) fn add_child(&self, child: Arc<ObjectHeader>) {
        self.inner.lock().children.push(child);
    }

    /// Attaches a typed context. A second context of the same type replaces nothing: it is
    /// refused (`Err` gives it back). Equivalent to: `WdfObjectAllocateContext`.
    pub fn add_context<T: Any + Send + Sync>(&self, ctx: Arc<T>) -> Result<(), Arc<T>> {
        let mut st = self.inner.lock();
        if st.contexts.iter().any(|c| c.is::<T>()) {
            return Err(ctx);
        }
        st.contexts.push(ctx);
        Ok(())
    }

    pub(crate) fn add_context_dyn(&self, ctx: Arc<dyn Any + Send + Sync>) {
        self.inner.lock().contexts.push(ctx);
    }

    /// The context of type `T`, if one was attached. Equivalent to: `WdfObjectGetTypedContext`.
    pub fn context<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let st = self.inner.lock();
        st.contexts
            .iter()
            .find_map(|c| c.clone().downcast::<T>().ok())
    }

    /// Runs the cleanup callbacks of the subtree, children first; idempotent.
    /// Sets the framework's own teardown, run when the object is deleted, before its cleanup
    /// callback.
    pub(crate) fn set_dispose(&self, f: CleanupCallback) {
        self.inner.lock().dispose = Some(f);
    }

    pub(crate) fn delete(&self) {
        let (children, cleanup, dispose) = {
            let mut st = self.inner.lock();
            if st.state == ObjectState::Deleted {
                return;
            }
            st.state = ObjectState::Deleted;
            (
                std::mem::take(&mut st.children),
                st.cleanup.take(),
                st.dispose.take(),
            )
        };
        for c in children.iter().rev() {
            c.delete();
        }
        if let Some(f) = dispose {
            f();
        }
        if let Some(f) = cleanup {
            crate::invoke::contained(self.kind, &self.name, "EvtCleanupCallback", f);
        }
    }
}

impl fmt::Debug for ObjectHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectHeader")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .finish()
    }
}
