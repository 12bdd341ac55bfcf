//! TODO
#![allow(unsafe_code)]
