"""The Transformers engine's sampler on fixed logits (unit tests, no model).

Each expectation is computed here independently of the sampler: the set of tokens a
parameter allows (top-k, top-p, min-p), the greedy token, and what a penalty does to the
ranking. Draws use seeded ``torch.Generator`` s, so the tests are deterministic.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from xinference.model.llm.params import GenerationParams  # noqa: E402
from xinference.model.llm.transformers.scheduler import (  # noqa: E402
    PENALTY_LAST_N,
    sample_token,
)

#: no filtering and no penalty: every knob a test does not set is neutral
NEUTRAL = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
               frequency_penalty=0.0, presence_penalty=0.0)


def params(**kw) -> GenerationParams:
    return GenerationParams(**dict(NEUTRAL, **kw))


def draws(row, p, n=400, recent=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [sample_token(row, p, list(recent), g) for _ in range(n)]


def logits_of(probs):
    return torch.log(torch.tensor(probs, dtype=torch.float32))


# a fixed, irregular vocabulary of 50 logits with one clear best token
ROW = torch.linspace(-3.0, 3.0, 50)[torch.randperm(50, generator=torch.Generator()
                                                     .manual_seed(7))]
BEST = int(torch.argmax(ROW))


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.0])
def test_top_k_1_is_greedy_at_any_temperature(temperature):
    assert set(draws(ROW, params(temperature=temperature, top_k=1), n=200)) == {BEST}
    # the control: without top_k the same temperature does draw other tokens
    assert len(set(draws(ROW, params(temperature=temperature), n=200))) > 1


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_tiny_top_p_is_greedy_at_any_temperature(temperature):
    assert set(draws(ROW, params(temperature=temperature, top_p=1e-6), n=200)) == {BEST}


def test_temperature_zero_is_argmax():
    assert sample_token(ROW, params(temperature=0.0), [], None) == BEST


def test_sampled_tokens_lie_in_the_top_k_set():
    k = 5
    allowed = set(torch.topk(ROW, k).indices.tolist())
    got = draws(ROW, params(temperature=2.0, top_k=k), n=600)
    assert set(got) <= allowed
    assert len(set(got)) == k  # at temperature 2 each of the five is drawn


def test_sampled_tokens_lie_in_the_top_p_set():
    # probabilities 0.5, 0.3, 0.1, 0.05, 0.05: the smallest set reaching 0.75 is {0, 1}
    row = logits_of([0.05, 0.3, 0.05, 0.5, 0.1])
    got = draws(row, params(top_p=0.75), n=600)
    assert set(got) == {1, 3}
    # reaching 0.85 takes the third most likely token too
    assert set(draws(row, params(top_p=0.85), n=600)) == {1, 3, 4}


def test_min_p_drops_tokens_below_its_share_of_the_best():
    # min_p=0.15 of the best 0.5 is 0.075: 0.1 stays, 0.06 and 0.04 go
    row = logits_of([0.06, 0.5, 0.1, 0.3, 0.04])
    assert set(draws(row, params(min_p=0.15), n=800)) == {1, 2, 3}


def test_unfiltered_draws_follow_the_softmax_of_logits_over_temperature():
    row = logits_of([0.6, 0.25, 0.1, 0.05])
    n = 4000
    for t in (1.0, 0.5):
        expected = torch.softmax(row / t, dim=-1).tolist()
        got = draws(row, params(temperature=t), n=n, seed=3)
        for tok, p in enumerate(expected):
            freq = got.count(tok) / n
            # 5 standard deviations of a binomial proportion
            assert abs(freq - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-3, (t, tok, freq, p)


def test_presence_penalty_turns_greedy_away_from_a_seen_token():
    row = torch.tensor([0.0, 2.0, 1.6, 0.0])
    greedy = params(temperature=0.0)
    assert sample_token(row, greedy, [1], None) == 1
    assert sample_token(row, params(temperature=0.0, presence_penalty=0.5), [1], None) == 2
    # only tokens in the window are penalised
    assert sample_token(row, params(temperature=0.0, presence_penalty=0.5), [3], None) == 1


def test_frequency_penalty_scales_with_the_count():
    row = torch.tensor([2.0, 1.75, 0.0])
    p = params(temperature=0.0, frequency_penalty=0.2)
    assert sample_token(row, p, [0], None) == 0  # 2.0 - 0.2 > 1.75
    assert sample_token(row, p, [0, 0, 0], None) == 1  # 2.0 - 0.6 < 1.75


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits():
    p = params(temperature=0.0, repeat_penalty=1.5)
    assert sample_token(torch.tensor([3.0, 2.5]), p, [0], None) == 1  # 3.0 / 1.5 = 2.0
    # a negative logit gets worse, not better: -1.0 * 1.5 < -1.2
    assert sample_token(torch.tensor([-1.0, -1.2]), p, [0], None) == 1


def test_penalties_look_at_the_last_window_only():
    from types import SimpleNamespace

    from xinference.model.llm.transformers.scheduler import BatchScheduler

    row = torch.tensor([0.0, 2.0, 1.6])
    p = params(temperature=0.0, presence_penalty=1.0)
    # token 1 was seen, but more than PENALTY_LAST_N tokens ago: not penalised
    old = SimpleNamespace(params=p, prompt_ids=[1] + [0] * PENALTY_LAST_N, output_ids=[])
    # prompt and output together: token 1 is the 65th last token, just outside
    old_mixed = SimpleNamespace(params=p, prompt_ids=[1, 0, 0, 0],
                                output_ids=[0] * (PENALTY_LAST_N - 3))
    edge = SimpleNamespace(params=p, prompt_ids=[1, 0, 0],  # the 64th last: inside
                           output_ids=[0] * (PENALTY_LAST_N - 3))
    recent = SimpleNamespace(params=p, prompt_ids=[0] * PENALTY_LAST_N, output_ids=[1])
    states = [old, old_mixed, edge, recent]
    seqs = [SimpleNamespace(state=st, generator=None, grammar=None) for st in states]
    assert BatchScheduler._sample(torch.stack([row] * len(seqs)), seqs) == [1, 1, 2, 2]


def test_each_row_uses_its_own_request_params():
    from types import SimpleNamespace

    from xinference.model.llm.transformers.scheduler import BatchScheduler

    rows = torch.stack([ROW, ROW])
    seqs = [SimpleNamespace(state=SimpleNamespace(params=params(temperature=0.0),
                                                  prompt_ids=[], output_ids=[]),
                            generator=None, grammar=None),
            SimpleNamespace(state=SimpleNamespace(params=params(temperature=2.0, top_k=3),
                                                  prompt_ids=[], output_ids=[]),
                            generator=torch.Generator().manual_seed(1), grammar=None)]
    top3 = set(torch.topk(ROW, 3).indices.tolist())
    seen = set()
    for _ in range(100):
        a, b = BatchScheduler._sample(rows, seqs)
        assert a == BEST and b in top3
        seen.add(b)
    assert len(seen) > 1
