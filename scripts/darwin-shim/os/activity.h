/* Check-only stand-in for <os/activity.h>: nothing ztun or its crates use from it. */
