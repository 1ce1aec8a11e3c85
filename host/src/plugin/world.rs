//! The three slots' worlds as the runtime sees them: how to prepare and
//! instantiate a component of each, and each slot's conformance set.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::{parser, replies, router};
use super::conformance::Draw;
use super::sandbox::{Runtime, Sandbox};
use super::{SlotName, conformance};

/// One plugin world: what a slot needs to know about the components it runs.
pub(crate) trait World: Sized + Send + Sync + 'static {
    /// The slot this world fills.
    const SLOT: SlotName;
    /// A compiled, linked and type-checked component, ready to instantiate.
    type Pre: Clone + Send + Sync + 'static;

    /// Type-checks a linked component against the world.
    fn prepare(pre: InstancePre<Sandbox>) -> wasmtime::Result<Self::Pre>;

    /// A fresh instance in `store`.
    fn instantiate(pre: &Self::Pre, store: &mut Store<Sandbox>) -> wasmtime::Result<Self>;

    /// Runs the slot's conformance set with values from `draw`; returns the
    /// most fuel one case used, or an error that names the first case that failed.
    fn conformance(runtime: &Runtime, pre: &Self::Pre, draw: &mut Draw) -> Result<u64, String>;
}

/// The parser world.
pub(crate) type Parser = parser::Parser;
/// The router world.
pub(crate) type Router = router::Router;
/// The replies world.
pub(crate) type Replies = replies::Replies;

impl World for Parser {
    const SLOT: SlotName = SlotName::Parser;
    type Pre = parser::ParserPre<Sandbox>;

    fn prepare(pre: InstancePre<Sandbox>) -> wasmtime::Result<Self::Pre> {
        parser::ParserPre::new(pre)
    }

    fn instantiate(pre: &Self::Pre, store: &mut Store<Sandbox>) -> wasmtime::Result<Self> {
        pre.instantiate(store)
    }

    fn conformance(runtime: &Runtime, pre: &Self::Pre, draw: &mut Draw) -> Result<u64, String> {
        conformance::parser(runtime, pre, draw)
    }
}

impl World for Router {
    const SLOT: SlotName = SlotName::Router;
    type Pre = router::RouterPre<Sandbox>;

    fn prepare(pre: InstancePre<Sandbox>) -> wasmtime::Result<Self::Pre> {
        router::RouterPre::new(pre)
    }

    fn instantiate(pre: &Self::Pre, store: &mut Store<Sandbox>) -> wasmtime::Result<Self> {
        pre.instantiate(store)
    }

    fn conformance(runtime: &Runtime, pre: &Self::Pre, draw: &mut Draw) -> Result<u64, String> {
        conformance::router(runtime, pre, draw)
    }
}

impl World for Replies {
    const SLOT: SlotName = SlotName::Replies;
    type Pre = replies::RepliesPre<Sandbox>;

    fn prepare(pre: InstancePre<Sandbox>) -> wasmtime::Result<Self::Pre> {
        replies::RepliesPre::new(pre)
    }

    fn instantiate(pre: &Self::Pre, store: &mut Store<Sandbox>) -> wasmtime::Result<Self> {
        pre.instantiate(store)
    }

    fn conformance(runtime: &Runtime, pre: &Self::Pre, draw: &mut Draw) -> Result<u64, String> {
        conformance::replies(runtime, pre, draw)
    }
}
