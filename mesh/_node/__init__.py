"""Composition: the Node and the runtime parts it starts."""
