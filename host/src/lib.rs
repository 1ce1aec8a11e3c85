//! Switchboard: a call platform driven by chat commands.
//!
//! People chat with a bot; the bot places calls for them, bridges the legs,
//! grows the call into a conference and bills every paid leg. How commands
//! are read, how calls are routed and what the bot says live in sandboxed
//! WebAssembly plugins ([`plugin`]) that operators replace while calls are up.

#![warn(missing_docs)]

pub mod billing;
pub mod chat;
pub mod config;
pub mod demo;
pub mod media;
pub mod metrics;
pub mod plugin;
pub mod service;
pub mod session;
pub mod sip;
pub mod web;
