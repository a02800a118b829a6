//! The pure core: plain functions over data, no connection and no task — what producers' messages and rows mean,
//! and what keys and values they become. Tested inline.

pub mod backoff;
pub mod codec;
pub mod crypto;
pub mod derive;
pub mod glob;
pub mod model;
pub mod plan;
pub mod predicate;
pub mod render;
pub mod trigger;
pub mod value;
pub mod words;
