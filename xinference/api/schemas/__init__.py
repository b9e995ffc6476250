"""Request bodies of the REST API, in one place.

Field names follow the OpenAI API (Completions, Chat Completions) and Xinference's model
management API. Sampling fields are optional and passed to the engine as
``generate_config``; unknown fields are kept (``extra="allow"``) so engine-specific options
(``top_k``, ``repeat_penalty``, ``chat_template_kwargs`` ...) reach the engine.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

# Request fields that are not generation parameters.
NON_GENERATE_FIELDS = {"model", "prompt", "messages", "user"}


class _Extra(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class LaunchModelRequest(_Extra):
    """``POST /v1/models``. Extra fields are engine kwargs (``n_ctx``, ``enable_thinking``...)."""

    model_uid: Optional[str] = None
    model_name: str
    model_type: str = "LLM"
    model_engine: Optional[str] = None
    model_format: Optional[str] = None
    model_size_in_billions: Optional[Union[int, float, str]] = None
    quantization: Optional[str] = None
    replica: int = 1
    n_gpu: Optional[Union[int, str]] = "auto"
    request_limits: Optional[int] = None
    worker_ip: Optional[str] = None
    gpu_idx: Optional[Union[int, List[int]]] = None
    model_path: Optional[str] = None
    #: record the launch so the model comes back after a restart (default: the server's
    #: --persist-models)
    persist: Optional[bool] = None


class _GenerateFields(_Extra):
    model: str
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    stop: Optional[Union[str, List[str]]] = None
    seed: Optional[int] = None
    stream: bool = False
    stream_options: Optional[Dict[str, Any]] = None
    frequency_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    repeat_penalty: Optional[float] = None
    # Checked by the engine (model/llm/params.py: 400 with the reason): n in [1, 16];
    # response_format text / json_object / json_schema; chat logprobs bool + top_logprobs
    # 0-20, completions logprobs 0-20.
    n: Optional[Any] = None
    response_format: Optional[Any] = None
    logprobs: Optional[Any] = None
    #: makes the request abortable: POST /v1/models/{uid}/requests/{request_id}/abort
    request_id: Optional[str] = Field(None, min_length=1, max_length=256)

    def generate_config(self) -> Dict[str, Any]:
        """Everything but the model, the input and unset fields."""
        return {k: v for k, v in self.model_dump(exclude_none=True).items()
                if k not in NON_GENERATE_FIELDS}


class CreateCompletionRequest(_GenerateFields):
    """``POST /v1/completions`` (OpenAI Completions API)."""

    prompt: str


class CreateChatCompletionRequest(_GenerateFields):
    """``POST /v1/chat/completions`` (OpenAI Chat Completions API). ``enable_thinking`` and
    ``chat_template_kwargs`` are Xinference's extensions, passed to the chat template."""

    messages: List[Dict[str, Any]]
    enable_thinking: Optional[bool] = None
    chat_template_kwargs: Optional[Dict[str, Any]] = None
    # Checked by the engine (model/llm/params.py): a list of function tools with valid
    # JSON-schema parameters; tool_choice none/auto/required/{"type": "function", ...}.
    tools: Optional[Any] = None
    tool_choice: Optional[Any] = None
    parallel_tool_calls: Optional[Any] = None
    top_logprobs: Optional[Any] = None


class RegisterModelRequest(BaseModel):
    """``POST /v1/model_registrations/{model_type}``: ``model`` is the JSON as a string."""

    model: Union[str, Dict[str, Any]]
    persist: bool = False


# ---- embeddings and rerank ---------------------------------------------------------------
class CreateEmbeddingRequest(_Extra):
    """``POST /v1/embeddings`` (OpenAI Embeddings API). ``input`` is a string, a list of
    strings, a token array or a list of token arrays; for multimodal models (CLIP) also
    ``{"text": ...}`` / ``{"image": "data:image/...;base64,..."}`` items (upstream
    Xinference's shape). An empty string or list is answered with 400 by the engine.
    Extra fields (``prompt_name``, ``prompt``, ``instruction``) reach the engine."""

    model: str
    input: Union[str, List[str], List[int], List[List[int]], Dict[str, Any],
                 List[Union[str, Dict[str, Any]]]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = Field(None, ge=1)
    user: Optional[str] = None


class RerankRequest(_Extra):
    """``POST /v1/rerank`` (Xinference's rerank API, read by Cohere and Jina clients too).
    ``documents`` are strings or ``{"text": ...}`` objects."""

    model: str
    query: str
    documents: List[Union[str, Dict[str, Any]]]
    top_n: Optional[int] = Field(None, ge=1)
    return_documents: Optional[bool] = None
    return_len: Optional[bool] = None
    max_chunks_per_doc: Optional[int] = Field(None, ge=1)
