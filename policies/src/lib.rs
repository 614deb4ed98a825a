//! Pure decision engine for clawgate: everything here is a function of its inputs, with no IO,
//! so it can be tested exhaustively and fuzzed. It will hold Cedar policies, Biscuit tokens and
//! data-flow labels; today it holds the tool-integrity checks.
//!
//! # Layout
//! - [`integrity`]: canonical definitions and their digests (pins), structural diffs,
//!   the text sanitiser, and the poisoning heuristics for tool descriptions.
//! - [`token`]: Biscuit capability tokens (mint, attenuate, verify with a cache, authorize
//!   under run limits). Not yet wired into the call path.

pub mod integrity;
pub mod token;
