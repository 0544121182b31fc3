"""The membership simulator: real cores, a virtual clock, a modelled TCP network."""
