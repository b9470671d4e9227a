"""Kairos stream worker: topology, state, policy, push emission."""

import zoneinfo as _zoneinfo

# Time zones come from the pinned tzdata package, never the host's zone files: the host's set and rules
# change from one machine (and OS update) to the next, and names like "localtime" or "right/UTC" mean
# the host's own zone or a leap-second clock, so two workers could judge one event's quiet hours
# differently. Set here, before any zone is loaded: every process imports this package first.
_zoneinfo.reset_tzpath(to=[])

# The compiled build of the hot modules, when it is current (stream.native): before any is imported.
from stream import native as _native  # noqa: E402

_native.install()
