"""The chaos campaign's node program: ``python -m tests.chaos.node``.

tests/lan_node.py (its JSON lines and commands) with the services of services.py.
"""

from __future__ import annotations

import asyncio

from tests.chaos.services import SERVICES
from tests.lan_node import main

if __name__ == "__main__":
    asyncio.run(main(SERVICES))
