"""The MCP server: personavlm's memory as tools (and a profile resource) for MCP clients,
on the official SDK's `MCPServer` (mcp 2.x; FastMCP of 1.x, renamed).

    server = build_mcp_server(access)      # one UserAccess: who may reach which user
    server.run("stdio")                     # `personavlm mcp`; /mcp mounts it (mcp_http.py)

MCPServer rather than the low-level `Server`: tools are typed Python functions, so each
input schema (types, bounds, descriptions) is generated from one signature and validated
before the tool runs, and sync tools run in a worker thread (the store blocks). The tools
mirror the REST API (routes_memory.py, through mcp_tools.py): same verbs, same JSON, and a
failure is an MCP tool error (`isError`) whose JSON is REST's error body, same code and same
message (`{"error": {"code": "not_found", "message": ..., "type": ...}}`).

Every tool takes an optional `user_id`: a user's key (and stdio, scoped to one user) reaches
only its own user and may leave it out; the admin key must name one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import quote

import pydantic
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    CallToolResult,
    InputRequiredResult,
    TextContent,
    ToolAnnotations,
)
from pydantic import Field

from personavlm import __version__
from personavlm.errors import PersonaVLMError
from personavlm.memory import MemoryStore
from personavlm.server import mcp_tools
from personavlm.server.errors import ApiError, error_body, library_error, library_message
from personavlm.server.mcp_tools import ConversationTurn

__all__ = [
    "INSTRUCTIONS",
    "PROFILE_URI",
    "OneUserAccess",
    "PersonaVLMServer",
    "UserAccess",
    "build_mcp_server",
    "error_result",
    "tool_error",
]

INSTRUCTIONS = (
    "Long-term memory of one person (the user) across conversations: facts about them "
    "(semantic), what happened when (episodic), their standing profile slots (core: name, "
    "job, ...) and how they like to be helped (procedural), plus their Big Five personality. "
    "Search before answering anything personal; add or update a memory when they tell you "
    "something lasting about themselves; every change has a history and can be undone."
)
PROFILE_URI = "personavlm://users/{user_id}/profile"

# The parameters several tools share, each described once for the model reading the schema.
UserArg = Annotated[
    str | None,
    Field(
        description="Whose memory. Leave it out to use the key's own user; only the admin "
        "key may (and must) name a user."
    ),
]
MemoryId = Annotated[int, Field(description="The memory's id (from search or list).")]
TypesArg = Annotated[
    list[Literal["core", "semantic", "episodic", "procedural"]] | None,
    Field(description="Memory types to look in; leave out for the default."),
]
TimeArg = Annotated[str | None, Field(description="'YYYY-MM-DD HH:MM' (local time), or leave out.")]
Keywords = Annotated[
    list[str] | None, Field(description="Words to find the memory by, besides its content.")
]
MemoryType = Literal["core", "semantic", "episodic", "procedural"]
Status = Literal["active", "superseded", "invalidated", "deleted", "any"]

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)

Operation = Callable[[MemoryStore, str], dict[str, Any]]


class UserAccess(Protocol):
    """Where a call's memory is and whose it may be (stdio: one user; HTTP: the call's key)."""

    def store(self) -> MemoryStore: ...

    def own_user(self, ctx: Context) -> str | None:
        """The calling key's user; None for the admin key. Raises what REST would answer."""
        ...


class PersonaVLMServer(MCPServer):
    """MCPServer whose own refusals read like REST's too: arguments that do not fit a tool's
    schema are `validation_error` (REST's 422 body) and an unknown tool is `not_found`, rather
    than the SDK's pydantic dump."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc, UnexpectedToolError):
                raise  # a bug: the SDK logs it and answers without its text
            if isinstance(exc.__cause__, pydantic.ValidationError):
                return error_result("validation_error", _arguments_message(exc.__cause__))
            if name not in {tool.name for tool in await self.list_tools()}:
                return error_result("not_found", f"no tool {name!r}; list the tools to see them")
            raise


def build_mcp_server(access: UserAccess) -> MCPServer:
    server = PersonaVLMServer(
        "personavlm", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING"
    )

    def call(ctx: Context, user_id: str | None, operation: Operation) -> CallToolResult:
        try:
            user = mcp_tools.scoped_user(access.own_user(ctx), user_id)
            return _tool_result(operation(access.store(), user))
        except (PersonaVLMError, ApiError) as exc:
            return tool_error(exc)

    _register_memory_tools(server, call)
    _register_change_tools(server, call)
    _register_history_tools(server, call)
    _register_user_tools(server, call)
    _register_profile(server, access)
    return server


Call = Callable[[Context, str | None, Operation], CallToolResult]


def _register_memory_tools(server: MCPServer, call: Call) -> None:
    @server.tool(annotations=READ_ONLY)
    def search_memories(
        ctx: Context,
        query: Annotated[str, Field(description="What to look for, in plain words.")],
        types: TypesArg = None,
        k: Annotated[
            int | None, Field(description="Hits per type (default 4 semantic, 2 others).")
        ] = None,
        start: TimeArg = None,
        end: TimeArg = None,
        user_id: UserArg = None,
    ) -> CallToolResult:
        """Search the user's memories (hybrid: words and meaning), optionally only those
        about a time window (start/end) or of some types. Use it before answering anything
        that depends on who the user is or what they told you before."""
        return call(
            ctx,
            user_id,
            lambda store, user: mcp_tools.search_memories(
                store, user, query, types=types, k=k, start=start, end=end
            ),
        )

    @server.tool(annotations=READ_ONLY)
    def get_memory(ctx: Context, memory_id: MemoryId, user_id: UserArg = None) -> CallToolResult:
        """One memory by id, whatever its status."""
        return call(ctx, user_id, lambda store, user: mcp_tools.get_memory(store, user, memory_id))

    @server.tool(annotations=READ_ONLY)
    def list_memories(
        ctx: Context,
        types: TypesArg = None,
        status: Annotated[Status, Field(description="Which versions; 'any' for all.")] = "active",
        start: TimeArg = None,
        end: TimeArg = None,
        limit: Annotated[int, Field(description="Page size, 1..500.")] = 50,
        cursor: Annotated[
            str | None, Field(description="next_cursor of the previous page.")
        ] = None,
        order: Annotated[
            Literal["asc", "desc"], Field(description="asc: oldest event first; desc: newest.")
        ] = "asc",
        user_id: UserArg = None,
    ) -> CallToolResult:
        """Page through the user's memories by event time (not by relevance: use
        search_memories to find something). Pass the same order with a cursor."""
        return call(
            ctx,
            user_id,
            lambda store, user: mcp_tools.list_memories(
                store,
                user,
                types=types,
                status=status,
                start=start,
                end=end,
                limit=limit,
                cursor=cursor,
                order=order,
            ),
        )


def _register_change_tools(server: MCPServer, call: Call) -> None:
    @server.tool(annotations=WRITES)
    def add_memory(
        ctx: Context,
        type: Annotated[
            MemoryType,
            Field(
                description="semantic: a lasting fact or preference; episodic: something "
                "that happened (give time); core: a profile slot (give key); procedural: "
                "how the user wants to be helped (give key)."
            ),
        ],
        content: Annotated[str, Field(description="The memory, one self-contained sentence.")],
        key: Annotated[
            str | None, Field(description="The slot, for core and procedural memory only.")
        ] = None,
        keywords: Keywords = None,
        time: Annotated[
            str | None, Field(description="When it happened or became true, 'YYYY-MM-DD HH:MM'.")
        ] = None,
        user_id: UserArg = None,
    ) -> CallToolResult:
        """Remember something new about the user. To change what is already remembered, use
        update_memory instead (a second core or procedural memory with the same key is a
        conflict)."""
        return call(
            ctx,
            user_id,
            lambda store, user: mcp_tools.add_memory(
                store, user, type, content, key=key, keywords=keywords or [], time=time
            ),
        )

    @server.tool(annotations=WRITES)
    def update_memory(
        ctx: Context,
        memory_id: MemoryId,
        content: Annotated[
            str | None, Field(description="The new text; leave out to keep.")
        ] = None,
        keywords: Keywords = None,
        time: Annotated[str | None, Field(description="When the new version became true.")] = None,
        user_id: UserArg = None,
    ) -> CallToolResult:
        """Correct or refresh a memory. Writes a new version; the old one stays in its
        history (memory_history) and undo_change brings it back."""
        return call(
            ctx,
            user_id,
            lambda store, user: mcp_tools.update_memory(
                store, user, memory_id, content=content, keywords=keywords, time=time
            ),
        )

    @server.tool(annotations=DESTRUCTIVE)
    def delete_memory(ctx: Context, memory_id: MemoryId, user_id: UserArg = None) -> CallToolResult:
        """Forget a memory that is wrong or that the user asks to be forgotten. The change
        is recorded and undo_change can reverse it."""
        return call(
            ctx, user_id, lambda store, user: mcp_tools.delete_memory(store, user, memory_id)
        )


def _register_history_tools(server: MCPServer, call: Call) -> None:
    @server.tool(annotations=READ_ONLY)
    def memory_history(
        ctx: Context, memory_id: MemoryId, user_id: UserArg = None
    ) -> CallToolResult:
        """Every change to a memory, oldest first, each with its event id (for undo_change),
        who made it and the memory before and after."""
        return call(
            ctx, user_id, lambda store, user: mcp_tools.memory_history(store, user, memory_id)
        )

    @server.tool(annotations=READ_ONLY)
    def memory_timeline(
        ctx: Context, memory_id: MemoryId, user_id: UserArg = None
    ) -> CallToolResult:
        """The versions of a memory, each with when it was valid: how a fact changed."""
        return call(
            ctx, user_id, lambda store, user: mcp_tools.memory_timeline(store, user, memory_id)
        )

    @server.tool(annotations=WRITES)
    def undo_change(
        ctx: Context,
        event_id: Annotated[int, Field(description="The change's event id (from memory_history).")],
        user_id: UserArg = None,
    ) -> CallToolResult:
        """Reverse one change to memory (an add, update or delete); the undo is itself a
        change in the history."""
        return call(ctx, user_id, lambda store, user: mcp_tools.undo_change(store, user, event_id))


def _register_user_tools(server: MCPServer, call: Call) -> None:
    @server.tool(annotations=READ_ONLY)
    def get_personality(ctx: Context, user_id: UserArg = None) -> CallToolResult:
        """The user's Big Five personality now (each trait 0..1) and every reading that shaped
        it: use it to match their tone and style."""
        return call(ctx, user_id, mcp_tools.personality)

    @server.tool(annotations=WRITES)
    def ingest_conversation(
        ctx: Context,
        turns: Annotated[
            list[ConversationTurn],
            Field(description="The turns, oldest first.", min_length=1),
        ],
        user_id: UserArg = None,
    ) -> CallToolResult:
        """Store a conversation that happened elsewhere in the user's log; each turn becomes
        searchable at once. Idempotent by turn id: sending a turn again adds nothing."""
        return call(
            ctx, user_id, lambda store, user: mcp_tools.ingest_conversation(store, user, turns)
        )


def _register_profile(server: MCPServer, access: UserAccess) -> None:
    @server.resource(
        PROFILE_URI,
        name="profile",
        title="The user's profile",
        description="Core memory (the user's profile slots) and Big Five personality now.",
        mime_type="application/json",
    )
    def profile(user_id: str, ctx: Context) -> str:
        return _profile_json(access, lambda: mcp_tools.scoped_user(access.own_user(ctx), user_id))

    if isinstance(access, OneUserAccess):
        # stdio serves one user: its profile is also listed as a plain resource, for clients
        # that list resources but not templates.
        @server.resource(
            PROFILE_URI.format(user_id=quote(access.user_id, safe="")),
            name="my-profile",
            title=f"{access.user_id}'s profile",
            description="Core memory (the user's profile slots) and Big Five personality now.",
            mime_type="application/json",
        )
        def own_profile() -> str:
            return _profile_json(access, lambda: access.user_id)


def _profile_json(access: UserAccess, user: Callable[[], str]) -> str:
    try:
        return json.dumps(mcp_tools.profile(access.store(), user()), ensure_ascii=False)
    except (PersonaVLMError, ApiError) as exc:
        # A resource has no error result: a protocol error carrying REST's error body.
        code, message = _code_and_message(exc)
        raise MCPError(INVALID_PARAMS, message, error_body(code, message)) from exc


def tool_error(exc: PersonaVLMError | ApiError) -> CallToolResult:
    """An MCP tool error holding the REST API's error body (code and message)."""
    return error_result(*_code_and_message(exc))


def error_result(code: str, message: str) -> CallToolResult:
    body = error_body(code, message)
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(body, ensure_ascii=False))],
        structured_content=body,
        is_error=True,
    )


def _arguments_message(exc: pydantic.ValidationError) -> str:
    """One line per problem, each naming its argument (REST's validation_message)."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ())) or "arguments"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return "the arguments do not have the documented shape: " + "; ".join(problems)


def _code_and_message(exc: PersonaVLMError | ApiError) -> tuple[str, str]:
    if isinstance(exc, ApiError):
        return exc.code, exc.message
    return library_error(exc)[1], library_message(exc)


def _tool_result(data: dict[str, Any]) -> CallToolResult:
    # Text for clients that show only content; the same JSON structured for those that parse.
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(data, ensure_ascii=False))],
        structured_content=data,
    )


class OneUserAccess:
    """stdio (`personavlm mcp`): one store and one user, fixed when the process starts; a
    call naming another user gets REST's 403."""

    def __init__(self, store: MemoryStore, user_id: str) -> None:
        self._store = store
        self.user_id = mcp_tools.scoped_user(user_id, user_id)  # checks the id's shape

    def store(self) -> MemoryStore:
        return self._store

    def own_user(self, ctx: Context) -> str | None:
        return self.user_id
