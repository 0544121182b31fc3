"""Pure state machines, (input, now) -> actions: no sockets, no loop, no clock."""
