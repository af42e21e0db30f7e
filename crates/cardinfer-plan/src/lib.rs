#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod budget;

pub use budget::{Budget, PlanError};
