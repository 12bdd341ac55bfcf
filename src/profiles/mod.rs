//! Profiles: who may get which token (`shared/spec/profiles.md`).
#![forbid(unsafe_code)]

pub mod glob;
pub mod permissions;
pub mod rules;
