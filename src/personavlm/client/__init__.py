"""A Python client of the personavlm service: `Client` (blocking) and `AsyncClient`.

    from personavlm.client import Client
    with Client("http://127.0.0.1:8000", api_key) as api:
        api.add_memory("ann", "semantic", "Ann's dog is called Bobby")
        hits = api.search("ann", "what is my dog called?")

Results are the library's records (Memory, Hit, Turn, MemoryEvent, ApiKey, JobRecord);
error answers raise the exceptions of personavlm.errors, by the server's error code.
"""

from __future__ import annotations

from personavlm.client.aio import AsyncClient
from personavlm.client.calls import Page
from personavlm.client.sync import Client

__all__ = ["AsyncClient", "Client", "Page"]
