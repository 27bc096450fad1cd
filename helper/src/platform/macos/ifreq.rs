//! `ifaliasreq` / `in6_aliasreq` request structs (issue 7): written next.
