//! S8: reading status is open to every local user; changing tunnels or
//! routes needs root or membership of the admin group. The decision is a
//! pure function of the peer's identity, which the transport supplies from
//! the kernel (`SO_PEERCRED`, or the XPC audit token), never from the peer's
//! own claims.

use ztun_proto::{ErrorCode, ErrorReply, Op};

/// Who is on the other end of a control connection, as the kernel says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    /// The peer process's effective primary group.
    pub gid: u32,
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

    /// Whether `peer` may send `op`; the refusal says who is refused and
    /// what would fix it.
    pub fn authorize(&self, op: Op, peer: &Peer) -> Result<(), ErrorReply> {
        if !op.is_mutating() || peer.uid == 0 || self.gid == Some(peer.gid) {
            return Ok(());
        }
        let user = user_name(peer.uid);
        if user
            .as_ref()
            .is_some_and(|u| self.members.iter().any(|m| m == u))
        {
            return Ok(());
        }
        let who = user.map_or_else(|| format!("uid {}", peer.uid), |u| format!("user {u}"));
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
}

fn user_name(uid: u32) -> Option<String> {
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
        for op in [Op::Version, Op::Status, Op::Watch] {
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
}
