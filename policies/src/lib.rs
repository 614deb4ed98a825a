//! Pure decision engine for clawgate. It will hold Cedar policies, Biscuit tokens, data-flow labels and schema checks, and does no IO.
