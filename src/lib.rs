//! tidecast: an actor-based live and VOD media server.
//! (Crate docs: data flow, actor tree and glossary are written out below as the modules land.)

pub mod actors;
pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod http;
pub mod media;
pub mod metrics;
pub mod protocols;
pub mod store;

pub use error::{Error, ErrorKind, Result};
