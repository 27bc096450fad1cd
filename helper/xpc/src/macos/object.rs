//! Owned XPC objects ([`Object`]) and borrowed views into them ([`Node`]),
//! and libxpc's side of the bridge's two traits.

use std::cell::RefCell;
use std::ffi::CStr;
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_void};
use std::ptr::{self, NonNull};

use block::{Block, ConcreteBlock};
use xpc_connection_sys as sys;
use xpc_connection_sys::xpc_object_t;

use crate::value::{View, XpcBuild, XpcRead, XpcType};

/// An XPC object holding one reference (+1), released on drop.
pub struct Object(NonNull<c_void>);

// SAFETY: libxpc reference counts atomically, so an object may be retained
// and released on any thread. `Object` is Send but not Sync: mutation
// (`XpcBuild::insert`/`push`) needs `&mut`, and a shared `&Object` is only
// read on the thread that holds it.
unsafe impl Send for Object {}

impl Object {
    /// Takes over a reference the caller owns: the result of an
    /// `xpc_*_create*` call. `None` for NULL.
    ///
    /// # Safety
    /// `raw` is NULL or an XPC object whose +1 reference the caller gives up.
    pub(crate) unsafe fn from_owned(raw: xpc_object_t) -> Option<Self> {
        NonNull::new(raw).map(Self)
    }

    /// Retains an object libxpc lends (a handler's argument), so it outlives
    /// the handler.
    ///
    /// # Safety
    /// `raw` is NULL or a live XPC object.
    pub(crate) unsafe fn retain(raw: xpc_object_t) -> Option<Self> {
        let raw = NonNull::new(raw)?;
        // SAFETY: `raw` is a live object (the caller's promise); xpc_retain
        // returns the same object with one more reference, which we own.
        unsafe { sys::xpc_retain(raw.as_ptr()) };
        Some(Self(raw))
    }

    pub(crate) fn as_raw(&self) -> xpc_object_t {
        self.0.as_ptr()
    }

    /// A view of the object for reading, valid while `self` lives.
    pub fn node(&self) -> Node<'_> {
        Node {
            raw: self.as_raw(),
            _root: PhantomData,
        }
    }

    pub fn xpc_type(&self) -> XpcType {
        type_of(self.as_raw())
    }

    /// The reply dictionary for a received request, `None` when the sender
    /// expects no reply (`xpc_connection_send_message`, as the
    /// `xpc-connection` crate sends). Works once per request.
    pub fn create_reply(&self) -> Option<Object> {
        if self.xpc_type() != XpcType::Dictionary {
            return None;
        }
        // SAFETY: `self` is a live dictionary; the result is NULL or a new
        // dictionary we own (XPC_RETURNS_RETAINED).
        unsafe { Object::from_owned(sys::xpc_dictionary_create_reply(self.as_raw())) }
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        // SAFETY: we own exactly one reference (type invariant).
        unsafe { sys::xpc_release(self.as_raw()) }
    }
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Object({})", self.xpc_type().name())
    }
}

/// A borrowed XPC object: a received message or one of its children. It
/// stays valid as long as the [`Object`] it was reached from, which nothing
/// mutates while it is borrowed.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    raw: xpc_object_t,
    _root: PhantomData<&'a Object>,
}

impl fmt::Debug for Node<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Node({})", type_of(self.raw).name())
    }
}

/// libxpc's type objects (<xpc/xpc.h>, all macOS 10.7+) and the table row
/// each one is.
fn type_of(raw: xpc_object_t) -> XpcType {
    // SAFETY: `raw` is a live XPC object (every caller holds or borrows one).
    let t = unsafe { sys::xpc_get_type(raw) };
    let types: [(*const sys::_xpc_type_s, XpcType); 16] = [
        (&raw const sys::_xpc_type_dictionary, XpcType::Dictionary),
        (&raw const sys::_xpc_type_array, XpcType::Array),
        (&raw const sys::_xpc_type_string, XpcType::String),
        (&raw const sys::_xpc_type_int64, XpcType::Int64),
        (&raw const sys::_xpc_type_uint64, XpcType::Uint64),
        (&raw const sys::_xpc_type_bool, XpcType::Bool),
        (&raw const sys::_xpc_type_data, XpcType::Data),
        (&raw const sys::_xpc_type_double, XpcType::Double),
        (&raw const sys::_xpc_type_date, XpcType::Date),
        (&raw const sys::_xpc_type_uuid, XpcType::Uuid),
        (&raw const sys::_xpc_type_fd, XpcType::Fd),
        (&raw const sys::_xpc_type_shmem, XpcType::Shmem),
        (&raw const sys::_xpc_type_null, XpcType::Null),
        (&raw const sys::_xpc_type_endpoint, XpcType::Endpoint),
        (&raw const sys::_xpc_type_connection, XpcType::Connection),
        (&raw const sys::_xpc_type_error, XpcType::Error),
    ];
    types
        .into_iter()
        .find(|(known, _)| *known == t)
        .map_or(XpcType::Other, |(_, kind)| kind)
}

/// `len` bytes at `ptr`, or none for a NULL pointer.
///
/// # Safety
/// A non-NULL `ptr` points to `len` readable bytes that live for `'a`.
unsafe fn bytes<'a>(ptr: *const c_void, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller's promise.
        unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) }
    }
}

/// A libxpc count or length as a `usize`; `size_t` is `usize` on every
/// Apple target, so this never saturates in practice.
fn size(n: sys::size_t) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl<'a> XpcRead<'a> for Node<'a> {
    fn view(self) -> View<'a> {
        let raw = self.raw;
        // Each getter below is called on a live object of the type just
        // checked, borrowed for 'a; it only reads, and bytes it points to
        // belong to the object, unchanged while it is borrowed.
        match type_of(raw) {
            XpcType::Dictionary => {
                // SAFETY: a live dictionary (see above).
                let len = unsafe { sys::xpc_dictionary_get_count(raw) };
                View::Dictionary { len: size(len) }
            }
            XpcType::Array => {
                // SAFETY: a live array (see above).
                let len = unsafe { sys::xpc_array_get_count(raw) };
                View::Array { len: size(len) }
            }
            XpcType::String => {
                // SAFETY: a live string; the pointer is to its bytes (length
                // without the NUL), owned by it for 'a.
                View::String(unsafe {
                    bytes(
                        sys::xpc_string_get_string_ptr(raw).cast(),
                        size(sys::xpc_string_get_length(raw)),
                    )
                })
            }
            // SAFETY: a live int64 (see above).
            XpcType::Int64 => View::Int64(unsafe { sys::xpc_int64_get_value(raw) }),
            // SAFETY: a live uint64 (see above).
            XpcType::Uint64 => View::Uint64(unsafe { sys::xpc_uint64_get_value(raw) }),
            // SAFETY: a live bool (see above).
            XpcType::Bool => View::Bool(unsafe { sys::xpc_bool_get_value(raw) }),
            // SAFETY: a live double (see above).
            XpcType::Double => View::Double(unsafe { sys::xpc_double_get_value(raw) }),
            XpcType::Data => {
                // SAFETY: a live data object; the pointer (NULL when empty)
                // is to its bytes, owned by it for 'a.
                View::Data(unsafe {
                    bytes(
                        sys::xpc_data_get_bytes_ptr(raw),
                        size(sys::xpc_data_get_length(raw)),
                    )
                })
            }
            other => View::Refused(other),
        }
    }

    fn entries(self) -> Vec<(&'a [u8], Self)> {
        let found = RefCell::new(Vec::new());
        let applier = ConcreteBlock::new(|key: *const c_char, value: xpc_object_t| -> bool {
            if !key.is_null() && !value.is_null() {
                // SAFETY: libxpc passes each key as a NUL-terminated string
                // owned by the dictionary, which outlives 'a.
                let key = unsafe { CStr::from_ptr(key) }.to_bytes();
                found.borrow_mut().push((
                    key,
                    Node {
                        raw: value,
                        _root: PhantomData,
                    },
                ));
            }
            true
        });
        let applier: &Block<(*const c_char, xpc_object_t), bool> = &applier;
        // SAFETY: `self.raw` is a live dictionary (the caller checked the
        // view). xpc_dictionary_apply calls the block synchronously, once
        // per entry, and keeps no reference to it, so a stack block that
        // borrows `found` is enough.
        unsafe {
            sys::xpc_dictionary_apply(self.raw, ptr::from_ref(applier).cast_mut().cast());
        }
        found.into_inner()
    }

    fn items(self) -> Vec<Self> {
        // SAFETY: `self.raw` is a live array (the caller checked the view);
        // each item is borrowed from it, so lives for 'a.
        let count = unsafe { sys::xpc_array_get_count(self.raw) };
        (0..count)
            .filter_map(|i| {
                // SAFETY: as above, and `i` is within the count.
                let item = unsafe { sys::xpc_array_get_value(self.raw, i) };
                (!item.is_null()).then_some(Node {
                    raw: item,
                    _root: PhantomData,
                })
            })
            .collect()
    }
}

/// The result of an `xpc_*_create*` call, which returns a new object or
/// aborts the process: libxpc never returns NULL from these.
fn created(raw: xpc_object_t) -> Object {
    // SAFETY: `raw` came from a create call (XPC_RETURNS_RETAINED), whose
    // reference we take over.
    match unsafe { Object::from_owned(raw) } {
        Some(object) => object,
        None => std::process::abort(),
    }
}

impl XpcBuild for Object {
    fn dictionary() -> Self {
        // SAFETY: an empty dictionary from NULL key and value arrays and a
        // count of 0, as <xpc/xpc.h> allows. (`xpc_dictionary_create_empty`
        // is macOS 11+.)
        created(unsafe { sys::xpc_dictionary_create(ptr::null(), ptr::null_mut(), 0) })
    }

    fn array() -> Self {
        // SAFETY: an empty array from a NULL object array and a count of 0.
        created(unsafe { sys::xpc_array_create(ptr::null_mut(), 0) })
    }

    fn string(s: &CStr) -> Self {
        // SAFETY: `s` is NUL-terminated; libxpc copies it.
        created(unsafe { sys::xpc_string_create(s.as_ptr()) })
    }

    fn int64(n: i64) -> Self {
        // SAFETY: no preconditions.
        created(unsafe { sys::xpc_int64_create(n) })
    }

    fn uint64(n: u64) -> Self {
        // SAFETY: no preconditions.
        created(unsafe { sys::xpc_uint64_create(n) })
    }

    fn bool(b: bool) -> Self {
        // SAFETY: no preconditions; the result is one of libxpc's two
        // immortal bool objects, for which retain and release are no-ops.
        created(unsafe { sys::xpc_bool_create(b) })
    }

    fn double(d: f64) -> Self {
        // SAFETY: no preconditions.
        created(unsafe { sys::xpc_double_create(d) })
    }

    fn data(bytes: &[u8]) -> Self {
        // SAFETY: `bytes` is readable for its length; libxpc copies it.
        created(unsafe { sys::xpc_data_create(bytes.as_ptr().cast(), bytes.len() as _) })
    }

    fn insert(&mut self, key: &CStr, value: Self) {
        if self.xpc_type() != XpcType::Dictionary {
            return;
        }
        // SAFETY: `self` is a dictionary we hold exclusively; libxpc copies
        // the key and retains the value, and `value`'s own reference is
        // released when it drops at the end of this call.
        unsafe { sys::xpc_dictionary_set_value(self.as_raw(), key.as_ptr(), value.as_raw()) }
    }

    fn push(&mut self, item: Self) {
        if self.xpc_type() != XpcType::Array {
            return;
        }
        // SAFETY: `self` is an array we hold exclusively; libxpc retains the
        // item, and `item`'s own reference is released when it drops.
        unsafe { sys::xpc_array_append_value(self.as_raw(), item.as_raw()) }
    }
}
