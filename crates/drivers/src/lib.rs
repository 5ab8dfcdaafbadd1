//! Sample drivers written only against `wdf`'s public API.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
