//! Users: accounts that own channels and sign in to the API.
//!
//! Emails are stored lowercased, so the plain UNIQUE constraint makes them unique without regard
//! to case and lookups lowercase their argument the same way. Passwords arrive already hashed
//! (Argon2id PHC strings from `crate::auth`); this module never sees one in clear. `User`'s
//! `Debug` redacts the hash.

use std::fmt;

use super::{now_ms, unique_violation_column, Store};
use crate::error::{Error, ErrorKind};

/// Longest email accepted, in bytes (RFC 5321 §4.5.3.1.3 path limit, minus the angle brackets).
const MAX_EMAIL_LEN: usize = 254;
/// Longest username, in characters.
const MAX_USERNAME_LEN: usize = 64;

const USER_COLUMNS: &str = "id, email, username, password_hash, is_admin, created_at_ms";

/// A user as stored.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    /// Lowercased.
    pub email: String,
    pub username: String,
    /// Argon2id PHC string; `None` for accounts that cannot sign in with a password.
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub created_at_ms: i64,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("username", &self.username)
            .field("password_hash", &self.password_hash.as_ref().map(|_| "<redacted>"))
            .field("is_admin", &self.is_admin)
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

/// What [`Store::create_user`] needs. `password_hash` is a PHC string from
/// `crate::auth::hash_password`, never a password.
#[derive(Clone)]
pub struct NewUser {
    pub email: String,
    pub username: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("email", &self.email)
            .field("username", &self.username)
            .field("password_hash", &self.password_hash.as_ref().map(|_| "<redacted>"))
            .field("is_admin", &self.is_admin)
            .finish()
    }
}

/// The stored form of an email: trimmed and lowercased.
fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

impl Store {
    /// Creates a user. The email is stored lowercased. A taken email or username is
    /// `AlreadyExists`, and the message says which.
    pub async fn create_user(&self, new: NewUser) -> crate::Result<User> {
        let email = normalize_email(&new.email);
        // A shape check only; whether the address works is for a confirmation mail to find out.
        let plausible = matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty());
        if !plausible || email.len() > MAX_EMAIL_LEN {
            return Err(Error::invalid("email must look like name@domain, at most 254 bytes"));
        }
        let username = new.username.trim();
        if username.is_empty() || username.chars().count() > MAX_USERNAME_LEN {
            return Err(Error::invalid(format!("username must be 1-{MAX_USERNAME_LEN} characters")));
        }
        let sql = format!(
            "INSERT INTO users (email, username, password_hash, is_admin, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5) \
             RETURNING {USER_COLUMNS}"
        );
        let now = now_ms();
        with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(&email)
                .bind(username)
                .bind(new.password_hash.as_deref())
                .bind(new.is_admin)
                .bind(now)
                .fetch_one(pool)
                .await
        })
        .map_err(|e| match unique_violation_column(&e, &["email", "username"]) {
            Some("email") => Error::with_source(
                ErrorKind::AlreadyExists,
                format!("a user with email '{email}' already exists"),
                e,
            ),
            Some("username") => Error::with_source(
                ErrorKind::AlreadyExists,
                format!("a user named '{username}' already exists"),
                e,
            ),
            Some(_) => Error::with_source(ErrorKind::AlreadyExists, "user already exists", e),
            None => Error::from(e),
        })
    }

    /// Looks a user up by email, ignoring case.
    pub async fn user_by_email(&self, email: &str) -> crate::Result<Option<User>> {
        let email = normalize_email(email);
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
        let user = with_pool!(self, |pool| { sqlx::query_as(&sql).bind(&email).fetch_optional(pool).await })?;
        Ok(user)
    }

    pub async fn user_by_id(&self, id: i64) -> crate::Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let user = with_pool!(self, |pool| sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?;
        Ok(user)
    }
}
