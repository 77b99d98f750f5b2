//! `snn!` and `include_snn!` live here (issue 6). The crate exists so the workspace layout
//! is fixed from the start; it exports nothing yet.
