//! Which programs a helper answers over XPC (S8, macOS): the code-signing
//! requirement, chosen at start from the helper's own signature and its
//! configuration. Pure, so the choice is tested everywhere; the checks that
//! apply it are in `ztun_xpc::macos`.

use ztun_proto::service::{MACOS_CTL_SIGNING_ID, MACOS_MENU_BAR_SIGNING_ID};

/// The requirement a signed helper sets by default: code signed by a
/// certificate Apple issued to the helper's own team, with one of ztun's
/// client identifiers. The identifier alone would be forgeable: anyone can
/// sign anything with any identifier.
pub fn default_requirement(team_id: &str) -> String {
    format!(
        "anchor apple generic and (identifier \"{MACOS_CTL_SIGNING_ID}\" or identifier \
         \"{MACOS_MENU_BAR_SIGNING_ID}\") and certificate leaf[subject.OU] = \"{team_id}\""
    )
}

/// A team identifier as Apple issues them: ten capital letters and digits.
/// Checked before it is written into a requirement.
pub fn is_team_id(s: &str) -> bool {
    s.len() == 10
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// The requirement peers must satisfy, or `None` for an unsigned
/// development helper, which checks no code (and says so at start).
///
/// - A requirement given on the command line (or `ZTUN_CODE_REQUIREMENT`)
///   always applies, signed helper or not: that is how a menu-bar app with
///   another identifier, or a development setup, is admitted.
/// - Otherwise a helper signed with an Apple-issued certificate requires
///   [`default_requirement`] for its own team.
/// - Otherwise (ad hoc, linker-signed or unsigned) nothing is required: such
///   a helper has no team to require, and is a development build.
pub fn choose_requirement(
    configured: Option<&str>,
    apple_issued: bool,
    team_id: Option<&str>,
) -> Result<Option<String>, String> {
    if let Some(text) = configured {
        let text = text.trim();
        if text.is_empty() {
            return Err("--code-requirement is empty; leave it out to use the default".into());
        }
        return Ok(Some(text.to_owned()));
    }
    if !apple_issued {
        return Ok(None);
    }
    match team_id {
        Some(team) if is_team_id(team) => Ok(Some(default_requirement(team))),
        Some(team) => Err(format!(
            "this helper's signature names team \"{}\", which is not a team identifier; \
             pass --code-requirement",
            team.escape_debug()
        )),
        None => Err(
            "this helper is signed but its signature names no team; pass --code-requirement".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEAM: &str = "ABCDE12345";

    #[test]
    fn the_default_names_both_clients_and_pins_the_team() {
        assert_eq!(
            default_requirement(TEAM),
            "anchor apple generic and (identifier \"com.ztun.ztunctl\" or identifier \
             \"com.ztun.menubar\") and certificate leaf[subject.OU] = \"ABCDE12345\""
        );
    }

    #[test]
    fn a_signed_helper_requires_its_own_team_by_default() {
        assert_eq!(
            choose_requirement(None, true, Some(TEAM)),
            Ok(Some(default_requirement(TEAM)))
        );
    }

    #[test]
    fn an_unsigned_or_ad_hoc_helper_requires_nothing() {
        assert_eq!(choose_requirement(None, false, None), Ok(None));
        // Ad hoc signatures carry no Apple-issued certificate, whatever
        // team they claim.
        assert_eq!(choose_requirement(None, false, Some(TEAM)), Ok(None));
    }

    #[test]
    fn a_configured_requirement_wins_signed_or_not() {
        let custom = "anchor apple generic and identifier \"com.example.bar\"";
        for (signed, team) in [(true, Some(TEAM)), (false, None)] {
            assert_eq!(
                choose_requirement(Some(custom), signed, team),
                Ok(Some(custom.to_owned()))
            );
        }
    }

    #[test]
    fn an_empty_configured_requirement_is_a_mistake() {
        assert!(choose_requirement(Some("  "), true, Some(TEAM)).is_err());
    }

    #[test]
    fn a_signed_helper_without_a_usable_team_refuses_to_guess() {
        assert_eq!(
            choose_requirement(None, true, None),
            Err(
                "this helper is signed but its signature names no team; pass --code-requirement"
                    .into()
            )
        );
        assert_eq!(
            choose_requirement(None, true, Some("x\" or anchor apple")),
            Err("this helper's signature names team \"x\\\" or anchor apple\", which is not a team identifier; pass --code-requirement".into())
        );
    }

    #[test]
    fn team_identifiers_are_ten_capitals_or_digits() {
        assert!(is_team_id("ABCDE12345"));
        for bad in ["ABCDE1234", "ABCDE123456", "abcde12345", "ABCDE 1234", ""] {
            assert!(!is_team_id(bad), "{bad}");
        }
    }
}
