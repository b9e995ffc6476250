"""Keep xoscar from importing torch in processes that do not need it.

xoscar registers a lazy serializer for ``torch.Tensor`` and resolves every lazy serializer
when an actor pool starts, which imports torch (about 2 s on these machines) in the server
and in every model process. No actor message of ours carries a tensor (engines return
JSON-like dicts and lists), so the handler is dropped. Importing this module does it; the
worker passes it to each model sub-pool through xoscar's ``modules`` option, which runs
before the lazy handlers are resolved.
"""


def drop_lazy_torch_serializer() -> None:
    try:
        from xoscar.serialization.torch import TorchTensorSerializer
    except Exception:  # pragma: no cover - layout of another xoscar version
        return
    TorchTensorSerializer.unregister("torch.Tensor")


drop_lazy_torch_serializer()
