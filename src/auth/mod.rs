//! Users and tokens (DESIGN.md "Users and tokens"): password rules and hashing, the signing
//! keyring, access-token issue and verification, login throttling, and the account operations
//! (register, login, refresh with rotation, logout) built from them.
//!
//! Everything here except [`accounts`] and [`hasher`] (the password-hashing worker threads)
//! is pure: time comes in as an argument.

pub mod accounts;
pub mod hasher;
pub mod keys;
pub mod password;
pub mod throttle;
pub mod token;

pub use accounts::{Accounts, AuthError, Principal};
