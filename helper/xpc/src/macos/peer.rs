//! Who is on the other end of a peer connection (the helper's side): the
//! audit token the kernel attached to its messages, the user and groups it
//! names, and whether its code satisfies a code-signing requirement. Never
//! the pid: a pid can be reused by another program between the check and
//! its use, while an audit token also carries the pid's generation.

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::raw::c_int;

use core_foundation::base::TCFType;
use core_foundation::data::CFData;
use core_foundation::dictionary::{CFDictionary, CFDictionaryRef};
use core_foundation::string::CFString;
use security_framework::os::macos::code_signing::{
    Flags, GuestAttributes, SecCode, SecRequirement,
};

use super::connection::Connection;
use super::ffi;
pub use super::ffi::AuditToken;

impl AuditToken {
    /// The effective uid of the process that sent the message.
    pub fn euid(&self) -> u32 {
        // SAFETY: a pure accessor over the token's bytes.
        unsafe { ffi::audit_token_to_euid(*self) }
    }

    /// Its effective primary gid.
    pub fn egid(&self) -> u32 {
        // SAFETY: a pure accessor over the token's bytes.
        unsafe { ffi::audit_token_to_egid(*self) }
    }

    /// Its pid, for log lines only: never identify a peer by it.
    pub fn pid(&self) -> i32 {
        // SAFETY: a pure accessor over the token's bytes.
        unsafe { ffi::audit_token_to_pid(*self) }
    }

    /// The token's 32 bytes in memory order, as `kSecGuestAttributeAudit`
    /// takes them.
    fn to_bytes(self) -> [u8; 32] {
        let mut out = [0; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.val) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        out
    }
}

/// What `set_peer_code_signing_requirement` achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRequirement {
    /// libxpc now drops every message from a peer that fails it.
    Enforced,
    /// This macOS is older than 12 and has no such call; only the helper's
    /// own per-message check stands.
    Unavailable,
}

impl Connection {
    /// The audit token of the peer's latest message. Read it in the event
    /// handler, while that message is the latest.
    pub fn audit_token(&self) -> AuditToken {
        let mut token = AuditToken::default();
        // SAFETY: a live connection and a writable token of the size the
        // SPI fills (`audit_token_t`, 32 bytes).
        unsafe { ffi::xpc_connection_get_audit_token(self.as_raw(), &raw mut token) };
        token
    }

    /// Has libxpc check every incoming message against `requirement`
    /// (macOS 12+). Call on a listener before resuming it, at most once.
    pub fn set_peer_code_signing_requirement(
        &self,
        requirement: &CStr,
    ) -> io::Result<PeerRequirement> {
        let Some(set) = ffi::set_peer_code_signing_requirement() else {
            return Ok(PeerRequirement::Unavailable);
        };
        // SAFETY: a live connection not yet resumed, and a NUL-terminated
        // requirement, which libxpc parses and does not keep.
        match unsafe { set(self.as_raw(), requirement.as_ptr()) } {
            0 => Ok(PeerRequirement::Enforced),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// Whether user `uid` is a member of group `gid` as Open Directory resolves
/// it: directly, through a nested group, or as the user's primary group.
/// This is what the system's own authorisation uses for group `admin`.
pub fn is_member(uid: u32, gid: u32) -> io::Result<bool> {
    let (mut user, mut group) = ([0_u8; 16], [0_u8; 16]);
    // SAFETY: each call writes one 16-byte uuid_t into the buffer given.
    let status = unsafe { ffi::mbr_uid_to_uuid(uid, user.as_mut_ptr()) };
    if status != 0 {
        return Err(io::Error::from_raw_os_error(status));
    }
    // SAFETY: as above.
    let status = unsafe { ffi::mbr_gid_to_uuid(gid, group.as_mut_ptr()) };
    if status != 0 {
        return Err(io::Error::from_raw_os_error(status));
    }
    let mut member: c_int = 0;
    // SAFETY: two 16-byte uuids and a writable int.
    let status =
        unsafe { ffi::mbr_check_membership(user.as_ptr(), group.as_ptr(), &raw mut member) };
    if status != 0 {
        return Err(io::Error::from_raw_os_error(status));
    }
    Ok(member != 0)
}

/// A compiled code-signing requirement, with the text it came from.
#[derive(Clone)]
pub struct Requirement {
    text: String,
    compiled: SecRequirement,
}

// SAFETY: SecRequirement is an immutable CF object once created; CF objects
// are reference counted atomically and immutable ones may be shared across
// threads (Security framework thread-safety notes).
unsafe impl Send for Requirement {}
// SAFETY: as above.
unsafe impl Sync for Requirement {}

impl Requirement {
    /// Compiles requirement-language text (`anchor apple generic and …`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let compiled = text
            .parse::<SecRequirement>()
            .map_err(|e| format!("not a code requirement ({e}): {text}"))?;
        Ok(Self {
            text: text.to_owned(),
            compiled,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Requirement({})", self.text)
    }
}

/// Checks the code that sent the message carrying `token` against
/// `requirement`: the kernel names the process by its audit token, and
/// Security validates its signature dynamically. May touch the disk: run it
/// off the XPC queue.
pub fn check_peer(token: &AuditToken, requirement: &Requirement) -> Result<(), String> {
    let bytes = CFData::from_buffer(&token.to_bytes());
    let mut attributes = GuestAttributes::new();
    attributes.set_audit_token(bytes.as_concrete_TypeRef());
    let code = SecCode::copy_guest_with_attribues(None, &attributes, Flags::NONE)
        .map_err(|e| format!("cannot identify the peer's code: {e}"))?;
    code.check_validity(Flags::NONE, &requirement.compiled)
        .map_err(|e| format!("its code does not satisfy {}: {e}", requirement.text))
}

/// The helper's own signature: enough to decide whether it is a signed
/// release (then peers are checked) or a development build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnSignature {
    /// Signed with a certificate Apple issued (`anchor apple generic`), not
    /// ad hoc or by the linker alone.
    pub apple_issued: bool,
    /// The team identifier of that certificate.
    pub team_id: Option<String>,
}

/// Inspects the running program's code signature. Any failure reads as
/// unsigned: the caller then warns and runs as a development build.
pub fn own_signature() -> OwnSignature {
    let unsigned = OwnSignature {
        apple_issued: false,
        team_id: None,
    };
    let Ok(me) = SecCode::for_self(Flags::NONE) else {
        return unsigned;
    };
    let apple_issued = "anchor apple generic"
        .parse::<SecRequirement>()
        .is_ok_and(|r| me.check_validity(Flags::NONE, &r).is_ok());
    OwnSignature {
        apple_issued,
        team_id: team_id(&me),
    }
}

fn team_id(code: &SecCode) -> Option<String> {
    let mut info: CFDictionaryRef = std::ptr::null();
    // SAFETY: a live code object and an out pointer; on success `info` is a
    // dictionary we own (create rule), wrapped below so it is released.
    let status = unsafe {
        ffi::SecCodeCopySigningInformation(
            code.as_CFTypeRef(),
            ffi::K_SEC_CS_SIGNING_INFORMATION,
            &raw mut info,
        )
    };
    if status != 0 || info.is_null() {
        return None;
    }
    // SAFETY: a dictionary we own (create rule), released when it drops.
    let info: CFDictionary = unsafe { CFDictionary::wrap_under_create_rule(info) };
    // SAFETY: Security's constant key, a CFString that lives forever.
    let key = unsafe { CFString::wrap_under_get_rule(ffi::kSecCodeInfoTeamIdentifier) };
    let value = info.find(key.as_CFTypeRef())?;
    // SAFETY: a value borrowed from `info`; wrapping under the get rule
    // retains it, and the type is checked before use.
    let value = unsafe { core_foundation::base::CFType::wrap_under_get_rule(*value) };
    value.downcast::<CFString>().map(|s| s.to_string())
}
