//! Everything the master and the workers must agree on: the configuration (types, loading,
//! validation), the master<->worker channel protocol, and the compiled access-log format.
//!
//! Data flows one way: a file is read into its [`schema`] and validated here into a runtime
//! [`config::Config`], the master
//! binds and forks with it, and each worker builds its request pipeline from the copy it inherits
//! through `fork()`. Nothing here touches sockets except [`channel`].

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod channel;
pub mod cidr;
pub mod config;
pub mod convert;
pub mod errlog;
pub mod glob;
pub mod load;
pub mod localtime;
pub mod logformat;
pub mod metrics;
pub mod schema;
mod tls_check;
pub mod token;
mod validate;
