"""The gateway's cache of model actor refs (:class:`xinference.api.gateway.ModelRefCache`):
one hop per request, round-robin over replicas, and a model terminated and launched again
under the same uid (in another process) found anew after one more supervisor lookup.

Real xoscar actor pools in this process: a supervisor stand-in that answers
``describe_model`` / ``get_model`` as the real one does and counts its calls, and echo
actors standing for the replicas' ModelActors, each pool standing for a model process.
"""

import asyncio

import pytest
import xoscar as xo

from xinference.api.gateway import RESTfulAPI
from xinference.errors import ModelNotFoundError, ModelUnavailableError


class EchoModel(xo.StatelessActor):
    """Answers ``chat`` with the replica that served it."""

    def __init__(self, replica_uid: str):
        super().__init__()
        self.replica_uid = replica_uid

    async def chat(self, payload, config):
        return {"replica": self.replica_uid, "payload": payload}


class CountingSupervisor(xo.StatelessActor):
    """The supervisor's lookups over a table ``model_uid -> [(replica_uid, address)]``,
    counting every call."""

    def __init__(self):
        super().__init__()
        self.table = {}
        self.calls = 0

    def set_replicas(self, model_uid, rows):
        if rows is None:
            self.table.pop(model_uid, None)
        else:
            self.table[model_uid] = rows

    def n_calls(self):
        return self.calls

    def _rows(self, model_uid):
        self.calls += 1
        if model_uid not in self.table:
            raise ModelNotFoundError(f"Model not found in the model list, uid: {model_uid}")
        return self.table[model_uid]

    def describe_model(self, model_uid):
        return {"model_uid": model_uid, "replicas": [
            {"replica_uid": r, "model_address": a, "status": "ready"}
            for r, a in self._rows(model_uid)]}

    async def get_model(self, model_uid):
        rows = self._rows(model_uid)
        if not rows:
            raise ModelUnavailableError(f"No replica of model {model_uid!r} can serve")
        r, a = rows[0]
        return await xo.actor_ref(address=a, uid=r)


async def _pool():
    return await xo.create_actor_pool("127.0.0.1", n_process=0)


def test_one_hop_round_robin_and_relaunch_under_the_same_uid():
    async def main():
        sup_pool, pool_a, pool_b = await _pool(), await _pool(), await _pool()
        try:
            sup = await xo.create_actor(CountingSupervisor, address=sup_pool.external_address,
                                        uid="supervisor")
            a0 = await xo.create_actor(EchoModel, "m-0", address=pool_a.external_address,
                                       uid="m-0")
            await xo.create_actor(EchoModel, "m-1", address=pool_b.external_address,
                                  uid="m-1")
            await sup.set_replicas("m", [("m-0", pool_a.external_address),
                                         ("m-1", pool_b.external_address)])
            api = RESTfulAPI(sup_pool.external_address)

            async def chat(i):
                _, out = await api._call_uid("m", "chat", (i, {}))
                assert out["payload"] == i
                return out["replica"]

            assert await chat(0) == "m-0"
            assert await sup.n_calls() == 1
            # later requests go straight to the model, taking the replicas in turn
            assert [await chat(i) for i in range(1, 5)] == ["m-1", "m-0", "m-1", "m-0"]
            assert await sup.n_calls() == 1
            assert api.models.hits == 4

            # terminate (behind the gateway's back) and launch again under the same uid,
            # one replica now, in another process
            await xo.destroy_actor(a0)
            await xo.destroy_actor(await xo.actor_ref(address=pool_b.external_address,
                                                      uid="m-1"))
            await sup.set_replicas("m", None)
            pool_c = await _pool()
            try:
                await xo.create_actor(EchoModel, "m-0", address=pool_c.external_address,
                                      uid="m-0")
                await sup.set_replicas("m", [("m-0", pool_c.external_address)])
                # the cached ref finds no actor: dropped, the supervisor asked once more
                assert await chat(5) == "m-0"
                assert await sup.n_calls() == 2
                assert await chat(6) == "m-0"  # reads the replica list again
                assert await sup.n_calls() == 3
                assert [await chat(i) for i in (7, 8)] == ["m-0", "m-0"]
                assert await sup.n_calls() == 3  # one hop again

                # terminated for good: the supervisor's answer (404) comes through
                await xo.destroy_actor(await xo.actor_ref(
                    address=pool_c.external_address, uid="m-0"))
                await sup.set_replicas("m", None)
                with pytest.raises(ModelNotFoundError):
                    await chat(9)
            finally:
                await pool_c.stop()
        finally:
            for p in (pool_b, pool_a, sup_pool):
                await p.stop()

    asyncio.run(main())


def test_dead_model_process_is_dropped_then_relaunch_is_found():
    """The model's process is killed: the cached ref is dropped and the request fails as
    unavailable (never a hang, never a 500); once launched again in another process under
    the same uid, it serves again."""
    import os
    import signal

    async def main():
        sup_pool = await _pool()
        procs = await xo.create_actor_pool("127.0.0.1", n_process=2, auto_recover=False)
        try:
            sup = await xo.create_actor(CountingSupervisor, address=sup_pool.external_address,
                                        uid="supervisor")
            first, second = list(procs.sub_processes)[:2]
            await xo.create_actor(EchoModel, "m-0", address=first, uid="m-0")
            await sup.set_replicas("m", [("m-0", first)])
            api = RESTfulAPI(sup_pool.external_address)
            assert (await api._call_uid("m", "chat", (1, {})))[1]["replica"] == "m-0"
            proc = procs.sub_processes[first]
            os.kill(proc.pid, signal.SIGKILL)
            for _ in range(100):  # reaped within a second or so
                if proc.returncode is not None:
                    break
                await asyncio.sleep(0.1)
            await sup.set_replicas("m", [])  # its worker reported the death
            with pytest.raises(ModelUnavailableError):
                await api._call_uid("m", "chat", (2, {}))
            assert "m" not in api.models._refs
            await xo.create_actor(EchoModel, "m-0", address=second, uid="m-0")
            await sup.set_replicas("m", [("m-0", second)])
            assert (await api._call_uid("m", "chat", (3, {})))[1]["payload"] == 3
        finally:
            await procs.stop()
            await sup_pool.stop()

    asyncio.run(main())
