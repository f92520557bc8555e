"""lmforge.serve — talking to a model: the streaming terminal chat (``lmforge chat``)."""

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

__all__ = ["ChatModel", "ChatSession", "Reply", "ReplyStats", "TextStream", "load_chat_model", "run_terminal",
           "stream_reply", "tokenizer_dir"]
