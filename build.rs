//! Build script: only tells cargo to rebuild when a migration changes.
//!
//! `sqlx::migrate!` embeds `migrations/*` at compile time but cannot make cargo notice a newly
//! added migration file; without this, a new migration is silently missing from the binary
//! until something else triggers a rebuild (this is the script `sqlx migrate build-script` writes).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
