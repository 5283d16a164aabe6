//! Community health: four scores from 0 to 100 per issue, from the last
//! [`WINDOW_DAYS`] UTC days of activity (`issue_daily`, today included) and
//! the current members (`user_issues`).
//!
//! With `m` members and `J` joins, `L` leaves, `P` posts, `A` actions in
//! the window (`x / y` rounded to the nearest whole number, halves up, and
//! every score clamped to 0..=100):
//!
//! - `membership` (growth) = 100 × (J − L) / max(m, 1): an issue that
//!   doubled its members in the window scores 100, one that shrank 0;
//! - `connection` (conversation) = 100 × P / max(m, 1): one post per member
//!   in the window scores 100;
//! - `influence` (taking part) = 10 × A: ten actions in the window score 100;
//! - `needs_met` (retention) = 100 × J / (J + L); with no joins or leaves, 100
//!   if the issue has members (nobody left) and 0 if not.

use serde::Serialize;

use super::ratio_round;

pub const WINDOW_DAYS: u32 = 28;

/// What the scores are computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    pub members: i64,
    pub joins: i64,
    pub leaves: i64,
    pub posts: i64,
    pub actions: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Scores {
    pub needs_met: i64,
    pub membership: i64,
    pub influence: i64,
    pub connection: i64,
}

fn clamp(score: i64) -> i64 {
    score.clamp(0, 100)
}

pub fn scores(a: &Activity) -> Scores {
    let members = a.members.max(1);
    let movement = a.joins.max(0) + a.leaves.max(0);
    let needs_met = if movement == 0 {
        if a.members > 0 {
            100
        } else {
            0
        }
    } else {
        ratio_round(100 * a.joins, movement)
    };
    Scores {
        needs_met: clamp(needs_met),
        membership: clamp(ratio_round(100 * (a.joins - a.leaves), members)),
        influence: clamp(10 * a.actions),
        connection: clamp(ratio_round(100 * a.posts, members)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(members: i64, joins: i64, leaves: i64, posts: i64, actions: i64) -> Activity {
        Activity {
            members,
            joins,
            leaves,
            posts,
            actions,
        }
    }

    #[test]
    fn a_quiet_empty_issue_scores_zero() {
        assert_eq!(scores(&Activity::default()), Scores::default());
    }

    #[test]
    fn scores_follow_the_documented_formula() {
        // 10 members, 4 joined and 1 left in the window, 5 posts, 3 actions.
        let s = scores(&activity(10, 4, 1, 5, 3));
        assert_eq!(
            s,
            Scores {
                needs_met: 80,
                membership: 30,
                influence: 30,
                connection: 50,
            }
        );
    }

    #[test]
    fn scores_stay_within_0_to_100() {
        let s = scores(&activity(1, 50, 0, 40, 30));
        assert_eq!((s.membership, s.connection, s.influence), (100, 100, 100));
        let shrinking = scores(&activity(5, 0, 7, 0, 0));
        assert_eq!((shrinking.membership, shrinking.needs_met), (0, 0));
        let steady = scores(&activity(5, 0, 0, 0, 0));
        assert_eq!(steady.needs_met, 100, "members and nobody left");
    }
}
