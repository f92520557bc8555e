"""lmforge.serve — talking to a model: the streaming terminal chat (``lmforge chat``) and an
OpenAI-compatible HTTP server (``lmforge serve``; FastAPI and uvicorn, the ``serve`` extra)."""

from lmforge.serve.chat import (
    ChatModel,
    ChatSession,
    Reply,
    ReplyStats,
    TextStream,
    load_chat_model,
    run_terminal,
    stream_reply,
    tokenizer_dir,
)
from lmforge.serve.engine import Engine, Job, RowResult, RowText
from lmforge.serve.server import create_app, error_body, run_server

__all__ = ["ChatModel", "ChatSession", "Reply", "ReplyStats", "TextStream", "load_chat_model", "run_terminal",
           "stream_reply", "tokenizer_dir", "Engine", "Job", "RowResult", "RowText", "create_app", "error_body",
           "run_server"]
