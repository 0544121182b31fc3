"""Calls on asyncio without zmq: services, call context, dispatcher, outgoing calls."""
