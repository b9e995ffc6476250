"""Xinference: serve open models behind an OpenAI-compatible API, on xoscar actors.

Importing this package is cheap on purpose: heavy engine libraries (torch, transformers,
llama_cpp, sentence_transformers) are only imported inside model processes.
"""

__version__ = "0.1.0"
