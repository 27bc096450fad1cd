//! `PF_ROUTE` message codec (issue 7): written next.
