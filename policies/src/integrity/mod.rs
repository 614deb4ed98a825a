//! Tool integrity: what a tool definition is (canonical JSON and its SHA-256), how it changed
//! (structural diff), what hidden text it carries (sanitiser) and whether it reads like an
//! attack on the model (poisoning heuristics).

pub mod canonical;
pub mod diff;
pub mod poison;
pub mod sanitize;
