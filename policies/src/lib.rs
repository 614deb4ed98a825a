//! Pure decision engine for clawgate: everything here is a function of its inputs, with no IO
//! and no async runtime, so it can be tested exhaustively. The gateway reads files and keys
//! and hands their contents in.
//!
//! # Layout
//! - [`token`]: Biscuit capability tokens (mint, attenuate, verify once per token with a
//!   bounded cache, authorize each call under run limits, list visibility).
//! - [`cedar`]: the merged Cedar schema (static base plus one typed action per tool), policy
//!   loading with file/line errors, per-action slices, typed requests and verdicts.
//! - [`args`]: argument validation against the pinned JSON Schema (no `$ref` is ever fetched).
//! - [`decision`]: the combined decision (deny wins, errors deny).
//! - [`labels`]: data-flow labels (integrity, readers, origins), result labelling rules, and
//!   the per-session provenance index that traces argument values to earlier results.
//! - [`ratelimit`]: per-key call rate limits (GCRA, in memory, bounded, sharded; the caller
//!   passes the time in).
//! - [`integrity`]: canonical definitions and their digests (pins), structural diffs, the text
//!   sanitiser, and the poisoning heuristics for tool descriptions.

pub mod args;
pub mod cedar;
pub mod decision;
pub mod integrity;
pub mod labels;
pub mod ratelimit;
pub mod token;
