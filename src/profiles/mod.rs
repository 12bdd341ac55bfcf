//! Profiles: who may get which token (`shared/spec/profiles.md`).
#![forbid(unsafe_code)]

pub mod glob;
mod json;
pub mod permissions;
pub mod rules;
mod schema;
