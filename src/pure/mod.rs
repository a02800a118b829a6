//! The pure core: plain functions over data, no connection and no task — what producers' messages and rows mean,
//! and what keys and values they become. Tested inline.

pub(crate) mod backoff;
pub(crate) mod codec;
pub(crate) mod crypto;
pub(crate) mod derive;
pub(crate) mod glob;
pub(crate) mod members;
pub mod model;
pub(crate) mod plan;
pub(crate) mod predicate;
pub(crate) mod render;
pub(crate) mod trigger;
pub(crate) mod value;
pub(crate) mod words;
