"""meshctl: the command line of mesh."""
