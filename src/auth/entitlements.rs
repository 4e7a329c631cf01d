//! Who may play what: the one pure rule behind the API, the feed, and the LL-HLS/VOD token
//! checks (which only see the signed result of this rule, the playback token).
//!
//! | visibility    | anonymous | signed in | active subscriber | owner / admin |
//! |---------------|-----------|-----------|-------------------|---------------|
//! | `public`      | yes       | yes       | yes               | yes           |
//! | `subscribers` | no        | no        | yes               | yes           |
//! | `private`     | no        | no        | no                | yes           |

use crate::store::{User, Visibility};

/// The signed-in caller, as far as entitlements care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    pub user_id: i64,
    pub is_admin: bool,
}

impl From<&User> for Viewer {
    fn from(u: &User) -> Self {
        Viewer { user_id: u.id, is_admin: u.is_admin }
    }
}

/// Whether `viewer` may play content owned by `owner_id` with `visibility`.
/// `has_active_subscription`: the viewer has an active subscription whose plan covers it.
pub fn can_play(
    viewer: Option<&Viewer>,
    owner_id: Option<i64>,
    visibility: Visibility,
    has_active_subscription: bool,
) -> bool {
    if visibility == Visibility::Public {
        return true;
    }
    let Some(v) = viewer else {
        return false;
    };
    if v.is_admin || owner_id == Some(v.user_id) {
        return true;
    }
    visibility == Visibility::Subscribers && has_active_subscription
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix() {
        use Visibility::*;
        let user = Viewer { user_id: 2, is_admin: false };
        let owner = Viewer { user_id: 1, is_admin: false };
        let admin = Viewer { user_id: 9, is_admin: true };
        // (viewer, subscribed, [public, subscribers, private])
        let cases: [(Option<&Viewer>, bool, [bool; 3]); 5] = [
            (None, false, [true, false, false]),
            (None, true, [true, false, false]),
            (Some(&user), false, [true, false, false]),
            (Some(&user), true, [true, true, false]),
            (Some(&owner), false, [true, true, true]),
        ];
        for (viewer, sub, want) in cases {
            for (vis, want) in [Public, Subscribers, Private].into_iter().zip(want) {
                assert_eq!(can_play(viewer, Some(1), vis, sub), want, "{viewer:?} sub={sub} {vis}");
            }
        }
        assert!(can_play(Some(&admin), Some(1), Private, false));
        assert!(!can_play(Some(&user), None, Private, true));
    }
}
