//! Declarations no crate provides, each with the header (or source) it was
//! checked against. xpc-connection-sys supplies the rest of libxpc.

#[cfg(feature = "server")]
use std::os::raw::{c_char, c_int, c_void};

use xpc_connection_sys::dispatch_queue_t;
#[cfg(feature = "server")]
use xpc_connection_sys::xpc_connection_t;

/// `audit_token_t`, <mach/message.h>: `struct { unsigned int val[8]; }`.
/// Read it through libbsm's accessors, never by index: the layout of the
/// eight words is xnu's business.
#[cfg(feature = "server")]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditToken {
    pub(crate) val: [u32; 8],
}

extern "C" {
    /// <dispatch/object.h>: `void dispatch_release(dispatch_object_t)`; the
    /// transparent union is passed as the pointer it holds.
    pub(crate) fn dispatch_release(object: dispatch_queue_t);
}

#[cfg(feature = "server")]
extern "C" {
    /// libxpc SPI in no public header; present on every macOS with XPC, and
    /// declared with this signature by Apple's own open-source code. It
    /// fills `token` with the audit token of the peer's last message.
    pub(crate) fn xpc_connection_get_audit_token(
        connection: xpc_connection_t,
        token: *mut AuditToken,
    );

    /// <membership.h> (libSystem): map ids to the UUIDs Open Directory
    /// uses, and ask whether a user is in a group, nested groups included.
    /// `uuid_t` is `unsigned char[16]`, passed as a pointer. Each returns 0
    /// or an errno value.
    pub(crate) fn mbr_uid_to_uuid(uid: libc::uid_t, uu: *mut u8) -> c_int;
    pub(crate) fn mbr_gid_to_uuid(gid: libc::gid_t, uu: *mut u8) -> c_int;
    pub(crate) fn mbr_check_membership(
        user: *const u8,
        group: *const u8,
        ismember: *mut c_int,
    ) -> c_int;
}

// <bsm/libbsm.h>: the token is passed by value.
#[cfg(feature = "server")]
#[link(name = "bsm", kind = "dylib")]
extern "C" {
    pub(crate) fn audit_token_to_euid(token: AuditToken) -> libc::uid_t;
    pub(crate) fn audit_token_to_egid(token: AuditToken) -> libc::gid_t;
    pub(crate) fn audit_token_to_pid(token: AuditToken) -> libc::pid_t;
}

// <Security/SecCode.h>: not bound by security-framework 3. `code` may be a
// `SecCodeRef` ("a code or static code object"); on success `information`
// is a dictionary the caller owns (CF create rule).
#[cfg(feature = "server")]
#[link(name = "Security", kind = "framework")]
extern "C" {
    pub(crate) fn SecCodeCopySigningInformation(
        code: *const c_void,
        flags: u32,
        information: *mut core_foundation::dictionary::CFDictionaryRef,
    ) -> i32;
    pub(crate) static kSecCodeInfoTeamIdentifier: core_foundation::string::CFStringRef;
}

/// <Security/SecCode.h>: `kSecCSSigningInformation = 1 << 1`.
#[cfg(feature = "server")]
pub(crate) const K_SEC_CS_SIGNING_INFORMATION: u32 = 1 << 1;

/// <xpc/connection.h>, macOS 12+:
/// `int xpc_connection_set_peer_code_signing_requirement(xpc_connection_t, const char *)`.
#[cfg(feature = "server")]
pub(crate) type SetPeerCodeSigningRequirement =
    unsafe extern "C" fn(connection: xpc_connection_t, requirement: *const c_char) -> c_int;

/// The running libxpc's `xpc_connection_set_peer_code_signing_requirement`,
/// or `None` before macOS 12.
#[cfg(feature = "server")]
pub(crate) fn set_peer_code_signing_requirement() -> Option<SetPeerCodeSigningRequirement> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads
    // the loaded images' symbol tables.
    let symbol = unsafe {
        libc::dlsym(
            libc::RTLD_DEFAULT,
            c"xpc_connection_set_peer_code_signing_requirement".as_ptr(),
        )
    };
    if symbol.is_null() {
        return None;
    }
    // SAFETY: the symbol is libxpc's function of exactly this C signature
    // (<xpc/connection.h>); a function pointer and a data pointer have the
    // same size and representation on Apple's targets.
    Some(unsafe { std::mem::transmute::<*mut c_void, SetPeerCodeSigningRequirement>(symbol) })
}
