//! S8: reading status is open to every local user; changing tunnels or
//! routes needs root or membership of the admin group; and a signed helper
//! answers only programs whose code satisfies its requirement. The decision
//! ([`AdminGroup::decide`]) is a pure function of what the transport learned
//! from the kernel — `SO_PEERCRED`, or the XPC audit token and the code
//! signature it names — never of the peer's own claims.

use ztun_proto::{ErrorCode, ErrorReply, Op};

/// Who is on the other end of a Unix-socket connection, as the kernel says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    /// The peer process's effective primary group.
    pub gid: u32,
}

/// What the helper learned about the code of the program on the other end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeCheck {
    /// Not checked: the Unix socket names no code, and an unsigned
    /// (development) helper has no team whose code it could require.
    NotEnforced,
    /// The helper is signed, and the peer's code satisfies its requirement.
    Satisfied,
    /// The helper is signed, and the peer's code does not satisfy its
    /// requirement, for this reason.
    Failed(String),
}

impl CodeCheck {
    /// The verdict for one message: `check` (the peer's signature against
    /// the requirement) runs only when the helper is signed.
    pub fn of(helper_signed: bool, check: impl FnOnce() -> Result<(), String>) -> Self {
        if !helper_signed {
            return CodeCheck::NotEnforced;
        }
        match check() {
            Ok(()) => CodeCheck::Satisfied,
            Err(why) => CodeCheck::Failed(why),
        }
    }
}

/// A peer as authorisation sees it: the facts its transport gathered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    /// The user's name, for refusals; `None` when the uid has no name.
    pub user: Option<String>,
    /// The user's groups as far as they matter here: the primary group and,
    /// when the user is a member, the admin group.
    pub groups: Vec<u32>,
    pub code: CodeCheck,
}

/// The group whose members may change tunnels and routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminGroup {
    pub name: String,
    /// `None` when no such group exists: then only root may change anything.
    pub gid: Option<u32>,
    /// User names listed as members in the group database.
    pub members: Vec<String>,
}

impl AdminGroup {
    /// Looks `name` up in the group database.
    pub fn lookup(name: &str) -> std::io::Result<Self> {
        let group = nix::unistd::Group::from_name(name).map_err(std::io::Error::from)?;
        Ok(match group {
            Some(g) => Self {
                name: name.to_owned(),
                gid: Some(g.gid.as_raw()),
                members: g.mem,
            },
            None => Self {
                name: name.to_owned(),
                gid: None,
                members: Vec::new(),
            },
        })
    }

    /// Whether `caller` may send `op`; a refusal says who is refused and
    /// what would fix it. Code comes first: a program a signed helper does
    /// not trust may not even read, whoever runs it. Then reads are open,
    /// and changes need root or the admin group.
    pub fn decide(&self, op: Op, caller: &Caller) -> Result<(), ErrorReply> {
        if let CodeCheck::Failed(why) = &caller.code {
            return Err(ErrorReply::new(
                ErrorCode::Unauthorized,
                format!(
                    "{op}: the program asking is not one the helper trusts ({why}); \
                     use ztunctl or a menu-bar app signed by the helper's team"
                ),
            ));
        }
        let in_group = self.gid.is_some_and(|g| caller.groups.contains(&g));
        if !op.is_mutating() || caller.uid == 0 || in_group {
            return Ok(());
        }
        let who = caller
            .user
            .as_ref()
            .map_or_else(|| format!("uid {}", caller.uid), |u| format!("user {u}"));
        let fix = if self.gid.is_some() {
            format!("ask an administrator to add you to group {}", self.name)
        } else {
            format!("group {} does not exist, so only root may", self.name)
        };
        Err(ErrorReply::new(
            ErrorCode::Unauthorized,
            format!(
                "{op}: {who} is not root and not in group {}; {fix}",
                self.name
            ),
        ))
    }

    /// A Unix-socket peer as a [`Caller`]: its name, and whether the group
    /// database lists it as a member (the kernel gives only the primary
    /// group). The socket names no code.
    pub fn caller(&self, peer: &Peer) -> Caller {
        let user = user_name(peer.uid);
        let mut groups = vec![peer.gid];
        if let Some(gid) = self.gid {
            if user
                .as_ref()
                .is_some_and(|u| self.members.iter().any(|m| m == u))
            {
                groups.push(gid);
            }
        }
        Caller {
            uid: peer.uid,
            user,
            groups,
            code: CodeCheck::NotEnforced,
        }
    }

    /// [`AdminGroup::decide`] for a Unix-socket peer.
    pub fn authorize(&self, op: Op, peer: &Peer) -> Result<(), ErrorReply> {
        self.decide(op, &self.caller(peer))
    }
}

/// The name of user `uid`, if the user database has one.
pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admins(gid: Option<u32>, members: &[&str]) -> AdminGroup {
        AdminGroup {
            name: "ztun".into(),
            gid,
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    /// A uid no test machine has a user for.
    const STRANGER: u32 = 4_000_000_001;

    #[test]
    fn everyone_may_read() {
        let a = admins(Some(5000), &[]);
        for op in [Op::Version, Op::Status, Op::Watch, Op::Doctor, Op::Flows] {
            assert_eq!(
                a.authorize(
                    op,
                    &Peer {
                        uid: STRANGER,
                        gid: STRANGER
                    }
                ),
                Ok(()),
                "{op}"
            );
        }
    }

    #[test]
    fn root_may_change_anything_even_without_the_group() {
        let a = admins(None, &[]);
        for op in Op::ALL {
            assert_eq!(a.authorize(op, &Peer { uid: 0, gid: 0 }), Ok(()), "{op}");
        }
    }

    #[test]
    fn primary_group_membership_is_enough() {
        let a = admins(Some(5000), &[]);
        assert_eq!(
            a.authorize(
                Op::Up,
                &Peer {
                    uid: STRANGER,
                    gid: 5000
                }
            ),
            Ok(())
        );
    }

    #[test]
    fn a_member_listed_by_name_may_change_tunnels() {
        let nobody = nix::unistd::User::from_name("nobody")
            .unwrap()
            .expect("user nobody exists");
        let peer = Peer {
            uid: nobody.uid.as_raw(),
            gid: nobody.gid.as_raw(),
        };
        assert_eq!(
            admins(Some(5000), &["nobody"]).authorize(Op::Up, &peer),
            Ok(())
        );
        assert!(admins(Some(5000), &["somebody"])
            .authorize(Op::Up, &peer)
            .is_err());
    }

    #[test]
    fn others_are_refused_every_mutating_op_with_a_fix() {
        let a = admins(Some(5000), &["alice"]);
        for op in Op::ALL.into_iter().filter(|o| o.is_mutating()) {
            let err = a
                .authorize(
                    op,
                    &Peer {
                        uid: STRANGER,
                        gid: STRANGER,
                    },
                )
                .unwrap_err();
            assert_eq!(err.code, ErrorCode::Unauthorized);
            assert_eq!(
                err.message,
                format!("{op}: uid {STRANGER} is not root and not in group ztun; ask an administrator to add you to group ztun")
            );
        }
    }

    #[test]
    fn without_the_group_only_root_may_change_and_the_message_says_so() {
        let err = admins(None, &[])
            .authorize(
                Op::Down,
                &Peer {
                    uid: STRANGER,
                    gid: STRANGER,
                },
            )
            .unwrap_err();
        assert!(
            err.message
                .ends_with("group ztun does not exist, so only root may"),
            "{}",
            err.message
        );
    }

    #[test]
    fn looking_up_a_missing_group_is_not_an_error() {
        let a = AdminGroup::lookup("ztun-no-such-group-xyz").unwrap();
        assert_eq!(a.gid, None);
    }

    // The decision over every combination of who asks (root, a member of
    // the admin group, anyone else), whether the admin group exists,
    // whether the helper is signed, and whether the peer's code satisfies
    // the helper's requirement, for every operation.

    const ADMIN: u32 = 80;
    const STAFF: u32 = 20;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Who {
        Root,
        Member,
        Other,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Outcome {
        Allowed,
        /// Not root and not in the admin group.
        NotAdmin,
        /// The helper is signed and the peer's code fails its requirement.
        Untrusted,
    }
    use Outcome::{Allowed, NotAdmin, Untrusted};

    /// (who, admin group exists, helper signed, signature valid) →
    /// (outcome for read ops, outcome for mutating ops).
    #[rustfmt::skip]
    const DECISIONS: [(Who, bool, bool, bool, Outcome, Outcome); 24] = [
        // An unsigned helper checks no code: uid and groups decide.
        (Who::Root,   true,  false, false, Allowed,   Allowed),
        (Who::Root,   true,  false, true,  Allowed,   Allowed),
        (Who::Root,   false, false, false, Allowed,   Allowed),
        (Who::Root,   false, false, true,  Allowed,   Allowed),
        (Who::Member, true,  false, false, Allowed,   Allowed),
        (Who::Member, true,  false, true,  Allowed,   Allowed),
        (Who::Member, false, false, false, Allowed,   NotAdmin),
        (Who::Member, false, false, true,  Allowed,   NotAdmin),
        (Who::Other,  true,  false, false, Allowed,   NotAdmin),
        (Who::Other,  true,  false, true,  Allowed,   NotAdmin),
        (Who::Other,  false, false, false, Allowed,   NotAdmin),
        (Who::Other,  false, false, true,  Allowed,   NotAdmin),
        // A signed helper refuses untrusted code everything, even root's.
        (Who::Root,   true,  true,  false, Untrusted, Untrusted),
        (Who::Root,   true,  true,  true,  Allowed,   Allowed),
        (Who::Root,   false, true,  false, Untrusted, Untrusted),
        (Who::Root,   false, true,  true,  Allowed,   Allowed),
        (Who::Member, true,  true,  false, Untrusted, Untrusted),
        (Who::Member, true,  true,  true,  Allowed,   Allowed),
        (Who::Member, false, true,  false, Untrusted, Untrusted),
        (Who::Member, false, true,  true,  Allowed,   NotAdmin),
        (Who::Other,  true,  true,  false, Untrusted, Untrusted),
        (Who::Other,  true,  true,  true,  Allowed,   NotAdmin),
        (Who::Other,  false, true,  false, Untrusted, Untrusted),
        (Who::Other,  false, true,  true,  Allowed,   NotAdmin),
    ];

    fn caller(who: Who, helper_signed: bool, signature_valid: bool) -> Caller {
        let (uid, groups) = match who {
            Who::Root => (0, vec![0]),
            Who::Member => (STRANGER, vec![STAFF, ADMIN]),
            Who::Other => (STRANGER, vec![STAFF]),
        };
        Caller {
            uid,
            user: None,
            groups,
            code: CodeCheck::of(helper_signed, || {
                if signature_valid {
                    Ok(())
                } else {
                    Err("not signed by team ABCDE12345".into())
                }
            }),
        }
    }

    fn expected(op: Op, outcome: Outcome, group_exists: bool) -> Result<(), ErrorReply> {
        let refusal = |message: String| Err(ErrorReply::new(ErrorCode::Unauthorized, message));
        match outcome {
            Allowed => Ok(()),
            NotAdmin if group_exists => refusal(format!(
                "{op}: uid {STRANGER} is not root and not in group admin; ask an administrator to add you to group admin"
            )),
            NotAdmin => refusal(format!(
                "{op}: uid {STRANGER} is not root and not in group admin; group admin does not exist, so only root may"
            )),
            Untrusted => refusal(format!(
                "{op}: the program asking is not one the helper trusts (not signed by team ABCDE12345); use ztunctl or a menu-bar app signed by the helper's team"
            )),
        }
    }

    #[test]
    fn decisions_for_every_caller_helper_signature_and_op() {
        for (who, group_exists, helper_signed, signature_valid, read, write) in DECISIONS {
            let group = AdminGroup {
                name: "admin".into(),
                gid: group_exists.then_some(ADMIN),
                members: vec![],
            };
            let c = caller(who, helper_signed, signature_valid);
            for op in Op::ALL {
                let outcome = if op.is_mutating() { write } else { read };
                assert_eq!(
                    group.decide(op, &c),
                    expected(op, outcome, group_exists),
                    "{op} by {who:?}, group exists {group_exists}, \
                     helper signed {helper_signed}, signature valid {signature_valid}"
                );
            }
        }
    }

    #[test]
    fn the_decision_table_covers_every_combination_once() {
        let mut seen: Vec<(Who, bool, bool, bool)> = DECISIONS
            .iter()
            .map(|&(w, g, h, s, _, _)| (w, g, h, s))
            .collect();
        seen.sort_by_key(|&(w, g, h, s)| (w as u8, g, h, s));
        seen.dedup();
        assert_eq!(seen.len(), 3 * 2 * 2 * 2);
    }

    #[test]
    fn an_unsigned_helper_never_runs_the_signature_check() {
        let code = CodeCheck::of(false, || panic!("checked a peer's code in a dev build"));
        assert_eq!(code, CodeCheck::NotEnforced);
    }

    #[test]
    fn a_refusal_names_the_user_when_the_uid_has_a_name() {
        let group = admins(Some(ADMIN), &[]);
        let c = Caller {
            uid: 501,
            user: Some("alice".into()),
            groups: vec![STAFF],
            code: CodeCheck::NotEnforced,
        };
        assert_eq!(
            group.decide(Op::RouteAdd, &c),
            Err(ErrorReply::new(
                ErrorCode::Unauthorized,
                "route.add: user alice is not root and not in group ztun; ask an administrator to add you to group ztun"
            ))
        );
    }

    #[test]
    fn a_unix_peer_listed_by_name_gets_the_admin_group() {
        let nobody = nix::unistd::User::from_name("nobody")
            .unwrap()
            .expect("user nobody exists");
        let peer = Peer {
            uid: nobody.uid.as_raw(),
            gid: nobody.gid.as_raw(),
        };
        assert_eq!(
            admins(Some(5000), &["nobody"]).caller(&peer),
            Caller {
                uid: peer.uid,
                user: Some("nobody".into()),
                groups: vec![peer.gid, 5000],
                code: CodeCheck::NotEnforced,
            }
        );
    }
}
