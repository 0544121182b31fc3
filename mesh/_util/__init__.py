"""Helpers with no mesh logic: asyncio waits, deadline timers, resources, key codecs."""
