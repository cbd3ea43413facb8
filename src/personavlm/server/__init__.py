"""The HTTP service of `personavlm serve`: the personalised OpenAI-compatible endpoint, the
memory REST API, API keys and the web page. docs/service.md is its contract.

    from personavlm.server import ServiceConfig, create_app
    app = create_app(ServiceConfig(location="memory.db"))

Needs the `server` extra (fastapi, uvicorn).
"""

from personavlm.server.app import create_app
from personavlm.server.config import ServiceConfig

__all__ = ["ServiceConfig", "create_app"]
