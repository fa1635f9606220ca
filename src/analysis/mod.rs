//! Exact analyses of a policy: diff (what a new snapshot changes), lint (shadowed and redundant rules, missing return paths,
//! exposed ports, untracked flows, stale references, quotas), over a box algebra of the header
//! space a rule sees.

pub mod diff;
pub mod lint;
pub mod space;
