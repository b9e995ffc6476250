"""``langchain-xinference`` (LangChain's Xinference integration, a client nobody here
wrote) against the real server: ChatXinference invoke and stream, sync and async (the async
path runs on ``xinference.client.AsyncRESTfulClient``), ``bind_tools`` with the call read
from the stream's last chunk, XinferenceEmbeddings and XinferenceRerank.

The integration reads ``delta["content"]`` in every chunk and the tool calls in the chunk
with ``finish_reason: "tool_calls"``, as upstream Xinference sends them."""

from __future__ import annotations

import asyncio

import pytest
import requests
from langchain_core.documents import Document
from langchain_core.tools import tool
from langchain_xinference import ChatXinference, XinferenceEmbeddings, XinferenceRerank

from .conftest import SMOLLM
from .test_embedding import emb  # noqa: F401
from .test_rerank import QUERY, TEXTS, model_dir, rerank_uid  # noqa: F401

pytestmark = pytest.mark.e2e

ASK = "What is the weather like in Paris today?"


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"Sunny in {city}"


def test_uses_this_projects_clients(endpoint):
    from xinference.client import AsyncRESTfulClient, RESTfulClient

    llm = ChatXinference(server_url=endpoint, model_uid=SMOLLM)
    assert type(llm.client) is RESTfulClient
    assert type(llm.async_client) is AsyncRESTfulClient


def test_chat_invoke_and_stream_agree(endpoint):
    llm = ChatXinference(server_url=endpoint, model_uid=SMOLLM, max_tokens=16, temperature=0)
    whole = llm.invoke("Name a color.")
    assert isinstance(whole.content, str) and whole.content.strip()
    pieces = [c.content for c in llm.stream("Name a color.")]
    assert len(pieces) > 2 and "".join(pieces) == whole.content


def test_chat_async_invoke_and_stream(endpoint):
    llm = ChatXinference(server_url=endpoint, model_uid=SMOLLM, max_tokens=16, temperature=0)

    async def run():
        whole = await llm.ainvoke("Name a color.")
        pieces = [c.content async for c in llm.astream("Name a color.")]
        return whole, pieces

    whole, pieces = asyncio.run(run())
    assert whole.content.strip() and "".join(pieces) == whole.content
    assert whole.content == llm.invoke("Name a color.").content


def test_bind_tools_stream_and_not(endpoint):
    # tool_choice "required" goes to the server (constrained decoding: a valid call from
    # any model); bind_tools supplies the tools.
    llm = ChatXinference(server_url=endpoint, model_uid=SMOLLM, max_tokens=80,
                         tool_choice="required").bind_tools([get_weather])
    msg = llm.invoke(ASK)
    (call,) = msg.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    assert call["id"].startswith("call_")
    agg = None
    for chunk in llm.stream(ASK):
        agg = chunk if agg is None else agg + chunk
    (call,) = agg.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    assert agg.response_metadata.get("finish_reason") == "tool_calls"


def test_embeddings(endpoint, emb):  # noqa: F811
    e = XinferenceEmbeddings(server_url=endpoint, model_uid=emb)
    q = e.embed_query("hello world")
    docs = e.embed_documents(["hello world", "goodbye"])
    assert len(q) == 384 and len(docs) == 2
    ref = requests.post(endpoint + "/v1/embeddings", json={"model": emb,
                                                           "input": "hello world"},
                        timeout=60).json()["data"][0]["embedding"]
    assert max(abs(a - b) for a, b in zip(q, ref)) < 1e-6
    assert max(abs(a - b) for a, b in zip(docs[0], q)) < 1e-6
    aq = asyncio.run(e.aembed_query("hello world"))
    assert max(abs(a - b) for a, b in zip(aq, q)) < 1e-6


def test_rerank(endpoint, rerank_uid):  # noqa: F811
    r = XinferenceRerank(server_url=endpoint, model_uid=rerank_uid)
    r.top_n = 2  # a field its __init__ does not take
    out = r.compress_documents([Document(page_content=d) for d in TEXTS], QUERY)
    ref = requests.post(endpoint + "/v1/rerank", json={
        "model": rerank_uid, "query": QUERY, "documents": TEXTS, "top_n": 2},
        timeout=60).json()["results"]
    assert [d.page_content for d in out] == [TEXTS[x["index"]] for x in ref]
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx(
        [x["relevance_score"] for x in ref])
    aout = asyncio.run(r.acompress_documents([Document(page_content=d) for d in TEXTS], QUERY))
    assert [d.page_content for d in aout] == [d.page_content for d in out]
