"""The emulator's performance model: formulas, acceptance shape, batching regimes, queueing."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest

from specops.api.v1alpha1 import Method
from specops_testkit.emulator import calibration
from specops_testkit.emulator.perf import (
    V0_CONSTANTS,
    Engine,
    EngineConfig,
    FinishReason,
    ModelFigures,
    Pairing,
    PromptKind,
    ProposerConfig,
    Request,
    acceptance,
    constants_for,
    expected_acceptance_rate,
    expected_tokens_per_step,
    pairing_factor,
    per_position_alpha,
    temperature_factor,
)
from specops_testkit.emulator.workload import CHAT, poisson_requests, run_virtual

TARGET_8B = ModelFigures(8_030_000_000, 16.06e9, 131_072, 1)
HEAD = ModelFigures(420_000_000, 0.84e9, 4_096, 1)


def small_engine(
    proposer: ProposerConfig | None = None, kv_tokens: int = 100_000, max_num_seqs: int = 64
) -> Engine:
    return Engine(
        EngineConfig(
            target=TARGET_8B,
            proposer=proposer,
            kv_capacity_tokens=kv_tokens,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=8192,
            max_model_len=8192,
        )
    )


EAGLE3 = ProposerConfig(Method.EAGLE3, 3, HEAD)


@pytest.mark.parametrize(
    ("alpha", "k", "expected"),
    [
        (0.0, 5, 1.0),
        (0.5, 1, 1.5),
        (0.8, 4, (1 - 0.8**5) / 0.2),
        (0.6, 5, (1 - 0.6**6) / 0.4),
        (1.0, 3, 4.0),
        (0.7, 0, 1.0),
    ],
)
def test_expected_tokens_per_step_is_leviathan(alpha: float, k: int, expected: float) -> None:
    assert expected_tokens_per_step(alpha, k) == pytest.approx(expected)


@pytest.mark.parametrize(("alpha", "k", "rate"), [(0.8, 1, 0.8), (0.8, 5, 0.53786), (0.5, 3, 0.29167)])
def test_counter_acceptance_is_the_accepted_prefix_over_k(alpha: float, k: int, rate: float) -> None:
    assert expected_acceptance_rate(alpha, k) == pytest.approx(rate, abs=1e-4)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("rate", [0.1, 0.38, 0.5, 0.65, 0.81, 0.9])
def test_per_position_alpha_makes_the_counters_read_the_acceptance(rate: float, k: int) -> None:
    alpha = per_position_alpha(rate, k)
    assert expected_acceptance_rate(alpha, k) == pytest.approx(rate, abs=1e-6)
    assert alpha >= rate  # the accepted prefix reads below alpha: alpha must be the higher
    assert 1 + k * rate == pytest.approx(expected_tokens_per_step(alpha, k), abs=1e-5)


def test_per_position_alpha_is_clamped() -> None:
    assert per_position_alpha(0.65, 1) == 0.65
    assert per_position_alpha(0.65, 5) == pytest.approx(0.86, abs=0.005)
    assert per_position_alpha(0.0, 5) == V0_CONSTANTS.alpha_floor
    assert per_position_alpha(0.95, 16) == V0_CONSTANTS.alpha_ceiling


TEMPERATURES = [i / 20 for i in range(41)]  # 0.0 to 2.0 in steps of 0.05


@pytest.mark.parametrize("kind", list(PromptKind))
@pytest.mark.parametrize("method", list(Method))
def test_acceptance_never_rises_with_temperature(method: Method, kind: PromptKind) -> None:
    # docs/domain.md#measurements: acceptance falls as temperature rises, for every proposer and
    # prompt; never a bump between the curve's points, never outside (0, 1).
    for pairing in (Pairing(), Pairing(size_ratio=10.0), Pairing(size_ratio=140.0, same_family=False)):
        rates = [acceptance(method, kind, t, pairing) for t in TEMPERATURES]
        assert all(b <= a for a, b in itertools.pairwise(rates)), (pairing, rates)
        assert all(0.0 < r < 1.0 for r in rates)
        assert rates[-1] < rates[0]
    factors = [temperature_factor(t) for t in TEMPERATURES]
    assert factors[0] == 1.0 and all(0.0 < f <= 1.0 for f in factors)


def test_a_good_pair_stays_within_the_published_temperature_shape() -> None:
    # docs/domain.md#measurements gives, for a well-matched pair, about 0.81 / 0.71 / 0.52 / 0.38 at
    # temperature 0 / 0.4 / 0.8 / 1.0 (the counters' accepted / drafted, whatever k): an
    # illustrative shape, so the model must stay near it, not on it to the digit.
    good = Pairing(size_ratio=10.0)
    for t, published in ((0.0, 0.81), (0.4, 0.71), (0.8, 0.52), (1.0, 0.38)):
        got = acceptance(Method.DRAFT_MODEL, PromptKind.CHAT, t, good)
        assert abs(got - published) <= 0.05, (t, got, published)
    # The mixed-workload figures of the same section: low temperature about 0.8, high about 0.35.
    assert acceptance(Method.DRAFT_MODEL, PromptKind.CHAT, 0.1, good) >= 0.75
    assert 0.3 <= acceptance(Method.DRAFT_MODEL, PromptKind.CHAT, 1.0, good) <= 0.45


@pytest.mark.parametrize("method", list(Method))
def test_acceptance_falls_with_temperature(method: Method) -> None:
    temps = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5]
    alphas = [acceptance(method, PromptKind.SUMMARIZATION, t) for t in temps]
    assert alphas == sorted(alphas, reverse=True)
    assert alphas[0] > alphas[-1]
    assert temperature_factor(0.0) == 1.0


def test_acceptance_orders_methods_pairings_and_prompts() -> None:
    draft = acceptance(Method.DRAFT_MODEL, PromptKind.CHAT, 0.0, Pairing(size_ratio=10.0))
    assert acceptance(Method.EAGLE, PromptKind.CHAT, 0.0) > draft
    assert acceptance(Method.EAGLE3, PromptKind.CHAT, 0.0) > acceptance(Method.EAGLE, PromptKind.CHAT, 0.0)
    # n-gram copies summaries, not chat.
    assert acceptance(Method.NGRAM, PromptKind.SUMMARIZATION, 0.0) > acceptance(
        Method.NGRAM, PromptKind.CHAT, 0.0
    )
    # Too small a draft, another family, a quantized target: all lower.
    assert acceptance(Method.DRAFT_MODEL, PromptKind.CHAT, 0.0, Pairing(size_ratio=140.0)) < draft
    assert acceptance(Method.DRAFT_MODEL, PromptKind.CHAT, 0.0, Pairing(10.0, same_family=False)) < draft
    int8 = acceptance(Method.DRAFT_MODEL, PromptKind.CHAT, 0.0, Pairing(10.0, target_bytes_per_param=1.0))
    int4 = acceptance(Method.DRAFT_MODEL, PromptKind.CHAT, 0.0, Pairing(10.0, target_bytes_per_param=0.5))
    assert int4 < int8 < draft
    assert draft - int4 > 0.05  # docs/domain.md#thresholds: a drop of more than 5 points means revisit it
    assert acceptance(Method.DRAFT_MODEL, PromptKind.CHAT, 0.0, Pairing(10.0, same_tokenizer=False)) < 0.1


def test_an_int8_checkpoint_read_back_from_its_weights_counts_as_8_bit() -> None:
    # Weight bytes over parameters is never exactly 1.0 (the demo's 70B INT8 reads 0.99998).
    assert pairing_factor(Pairing(target_bytes_per_param=0.99998)) == V0_CONSTANTS.target_8bit_factor
    assert pairing_factor(Pairing(target_bytes_per_param=0.52)) == V0_CONSTANTS.target_4bit_factor
    assert pairing_factor(Pairing(target_bytes_per_param=2.0)) == 1.0


def test_step_time_grows_with_batch_and_with_k() -> None:
    engine = small_engine(EAGLE3)
    times = [engine.decode_step_time(b, 1000, k=0) for b in (1, 8, 64, 256)]
    assert times == sorted(times)
    assert times[-1] > 2 * times[0]
    assert engine.decode_step_time(64, 1000, k=3) > engine.decode_step_time(64, 1000, k=0)


def test_bigger_models_step_slower() -> None:
    big = dataclasses.replace(TARGET_8B, parameters=70_600_000_000, weight_bytes=141.2e9)
    small = small_engine()
    large = Engine(dataclasses.replace(small.config, target=big))
    assert large.decode_step_time(1, 500) > 3 * small.decode_step_time(1, 500)


@pytest.mark.parametrize("method", [Method.DRAFT_MODEL, Method.NGRAM])
def test_speculation_wins_at_batch_one_and_loses_when_saturated(method: Method) -> None:
    spec = Engine(calibration.engine_config(method))
    base = Engine(calibration.engine_config(None))
    kind = PromptKind.SUMMARIZATION if method is Method.NGRAM else PromptKind.CHAT
    assert spec.config.proposer is not None
    k = spec.config.proposer.num_speculative_tokens
    rate = acceptance(method, kind, 0.0, spec.config.proposer.pairing)
    tokens = expected_tokens_per_step(per_position_alpha(rate, k), k)

    def per_token(batch: int) -> tuple[float, float]:
        return spec.decode_step_time(batch, 800) / tokens, base.decode_step_time(batch, 800)

    spec_1, base_1 = per_token(1)
    spec_256, base_256 = per_token(256)
    assert spec_1 < base_1
    assert spec_256 > base_256


def test_v1_prompt_lookup_and_verification_are_cheaper_than_v0() -> None:
    v0 = small_engine(ProposerConfig(Method.NGRAM, 4))
    v1 = Engine(dataclasses.replace(v0.config, constants=constants_for(v0_engine=False)))
    assert constants_for(v0_engine=True) is V0_CONSTANTS
    assert v1.decode_step_time(256, 2000) < 0.5 * v0.decode_step_time(256, 2000)
    assert v1.decode_step_time(1, 2000) == pytest.approx(v0.decode_step_time(1, 2000), rel=0.25)


def test_kv_cache_caps_concurrency_and_queues_the_rest() -> None:
    engine = small_engine(kv_tokens=1000)
    reqs = [Request(f"r{i}", prompt_tokens=300, max_tokens=50, arrival=0.0) for i in range(6)]
    for r in reqs:
        engine.add(r)
    rng = random.Random(0)
    result = engine.step(rng, 0.0)
    assert result.num_running == 3  # 3 x 300 prompt tokens fit 1000 (with vLLM's 1% watermark)
    assert result.num_waiting == 3
    now = result.end
    peak = 0
    while engine.has_work:
        result = engine.step(rng, now)
        now = result.end
        peak = max(peak, engine.kv_used)
    assert peak <= 1000
    assert all(r.finished and r.output_tokens == 50 for r in reqs)
    # Queued requests waited: their first token came after the first batch's.
    assert min(r.ttft or 0 for r in reqs[3:]) > max(r.ttft or 0 for r in reqs[:3])


def test_max_num_seqs_caps_the_batch() -> None:
    engine = small_engine(max_num_seqs=4)
    for i in range(10):
        engine.add(Request(f"r{i}", prompt_tokens=10, max_tokens=5))
    assert engine.step(random.Random(0), 0.0).num_running == 4


def test_preemption_recomputes_and_everything_still_finishes() -> None:
    # Prompts fit, their growth does not: the newest requests are preempted and re-prefilled.
    engine = small_engine(EAGLE3, kv_tokens=700)
    reqs = [Request(f"r{i}", prompt_tokens=100, max_tokens=300, temperature=0.0) for i in range(3)]
    end = run_virtual(engine, reqs, random.Random(3))
    assert end > 0
    assert engine.preemptions > 0
    assert all(r.finished and r.output_tokens == 300 for r in reqs)
    assert engine.kv_used == 0


def test_speculative_steps_report_per_position_verdicts() -> None:
    engine = small_engine(EAGLE3)
    engine.add(Request("r", prompt_tokens=50, max_tokens=400, temperature=0.0))
    rng = random.Random(5)
    now = 0.0
    drafted = accepted = first_pos = drafts = emitted = 0
    while engine.has_work:
        result = engine.step(rng, now)
        now = result.end
        for p in result.progress:
            emitted += p.new_tokens
            if p.drafted:
                assert len(p.positions) == 3
                assert p.new_tokens <= p.accepted + 1
                drafts += 1
                drafted += p.drafted
                accepted += p.accepted
                first_pos += p.positions[0]
    rate = acceptance(Method.EAGLE3, PromptKind.CHAT, 0.0, EAGLE3.pairing)
    assert emitted == 400
    # The counters read the acceptance; per-position counter 0 over drafts reads alpha.
    assert accepted / drafted == pytest.approx(rate, abs=0.06)
    assert first_pos / drafts == pytest.approx(per_position_alpha(rate, 3), abs=0.06)


def _counter_acceptance(engine: Engine, requests: list[Request], seed: int) -> float:
    drafted = accepted = 0
    rng = random.Random(seed)
    now = 0.0
    for r in requests:
        engine.add(r)
    while engine.has_work:
        result = engine.step(rng, now)
        now = result.end
        for p in result.progress:
            drafted += p.drafted
            accepted += p.accepted
    return accepted / drafted


def test_a_smaller_k_from_the_table_keeps_the_per_position_alpha() -> None:
    # k=5 alone, k=2 from two sequences: a shorter draft is the longer one's first positions, so the
    # per-position alpha stays the pair's and the counters read more (a shorter accepted prefix).
    proposer = dataclasses.replace(EAGLE3, num_speculative_tokens=5, k_by_batch_size=((1, 1, 5), (2, 64, 2)))
    rate = acceptance(Method.EAGLE3, PromptKind.CHAT, 0.8)
    alpha = per_position_alpha(rate, 5)
    alone = Request("alone", prompt_tokens=50, max_tokens=600, temperature=0.8)
    assert _counter_acceptance(small_engine(proposer), [alone], 2) == pytest.approx(rate, abs=0.05)
    pair = [Request(f"r{i}", prompt_tokens=50, max_tokens=600, temperature=0.8) for i in range(2)]
    at_two = _counter_acceptance(small_engine(proposer), pair, 2)
    assert at_two == pytest.approx(expected_acceptance_rate(alpha, 2), abs=0.05)
    assert at_two > rate + 0.1
    assert pair[0].alpha == alone.alpha == pytest.approx(alpha)


@pytest.mark.parametrize(
    ("table", "k_by_batch"),
    [
        (((1, 4, 3), (5, 1024, 0)), {1: 3, 4: 3, 5: 0, 5000: 0}),
        # A gap takes the row before; past the last row, the last row's k.
        (((1, 2, 3), (8, 16, 1)), {2: 3, 5: 3, 8: 1, 17: 1, 900: 1}),
        # Never more than num_speculative_tokens (3 here), as vLLM clips it.
        (((1, 8, 7), (9, 99, 2)), {1: 3, 9: 2}),
    ],
)
def test_table_lookup_reads_rows_as_vllm_does(
    table: tuple[tuple[int, int, int], ...], k_by_batch: dict[int, int]
) -> None:
    proposer = dataclasses.replace(EAGLE3, k_by_batch_size=table)
    assert {b: proposer.k_for_batch(b) for b in k_by_batch} == k_by_batch


@pytest.mark.parametrize(("batch", "overhead"), [(1, 0.066), (2, 0.066), (189, 0.216), (400, 0.216)])
def test_a_table_that_never_drafts_still_costs_time(batch: int, overhead: float) -> None:
    # vLLM issue 49548: k = 0 throughout, +6.6% TPOT at concurrency 2 and +21.6% at 189 against a
    # plain engine (the table costs vLLM its full CUDA graphs).
    never = dataclasses.replace(EAGLE3, k_by_batch_size=((1, 1 << 20, 0),))
    plain = small_engine().decode_step_time(batch, 500)
    assert small_engine(never).decode_step_time(batch, 500) / plain == pytest.approx(1 + overhead)
    # Without a table, a step that drafts nothing costs what a plain step does.
    assert small_engine(EAGLE3).decode_step_time(batch, 500, k=0) == pytest.approx(plain)


def test_ngram_without_a_match_drafts_nothing() -> None:
    engine = small_engine(ProposerConfig(Method.NGRAM, 4))
    engine.add(Request("r", prompt_tokens=50, max_tokens=300, prompt_kind=PromptKind.CHAT))
    rng = random.Random(1)
    now = 0.0
    steps = misses = 0
    while engine.has_work:
        result = engine.step(rng, now)
        now = result.end
        for p in result.progress:
            if not p.first_token:
                steps += 1
                misses += p.drafted == 0
    assert 0.4 < misses / steps < 0.9  # chat prompts match about a third of the time


def test_k_by_batch_size_switches_drafting_off_under_load() -> None:
    proposer = dataclasses.replace(EAGLE3, k_by_batch_size=((1, 4, 3), (5, 1024, 0)))
    engine = small_engine(proposer)
    for i in range(8):
        engine.add(Request(f"r{i}", prompt_tokens=20, max_tokens=20))
    rng = random.Random(0)
    engine.step(rng, 0.0)  # prefill
    result = engine.step(rng, 1.0)
    assert all(p.drafted == 0 for p in result.progress)


def test_finish_reasons_and_context_limit() -> None:
    engine = small_engine()
    stop = Request("stop", prompt_tokens=10, max_tokens=100, eos_after=7)
    length = Request("length", prompt_tokens=10, max_tokens=5)
    engine.add(stop)
    engine.add(length)
    run_virtual(engine, [], random.Random(0))
    assert (stop.finish_reason, stop.output_tokens) == (FinishReason.STOP, 7)
    assert (length.finish_reason, length.output_tokens) == (FinishReason.LENGTH, 5)
    with pytest.raises(ValueError, match="maximum context length is 8192"):
        engine.add(Request("long", prompt_tokens=8000, max_tokens=500))


def test_abort_releases_the_kv_cache() -> None:
    engine = small_engine()
    r = Request("r", prompt_tokens=100, max_tokens=100)
    engine.add(r)
    engine.step(random.Random(0), 0.0)
    assert engine.kv_used > 0
    assert engine.abort(r, 1.0)
    assert engine.kv_used == 0
    assert r.finish_reason is FinishReason.ABORT
    assert not engine.abort(r, 2.0)


def test_latency_figures_follow_vllm_definitions() -> None:
    engine = small_engine()
    r = Request("r", prompt_tokens=100, max_tokens=10, arrival=0.0)
    engine.add(r)
    run_virtual(engine, [], random.Random(0))
    assert r.first_token_time is not None
    assert r.last_token_time is not None
    assert r.ttft == pytest.approx(r.first_token_time)
    assert r.tpot == pytest.approx((r.last_token_time - r.first_token_time) / 9)
    assert r.e2e == pytest.approx(r.last_token_time)


def _finish_times(seed: int) -> list[float]:
    reqs = poisson_requests(random.Random(seed), 5.0, 40, CHAT)
    run_virtual(small_engine(EAGLE3), reqs, random.Random(seed))
    return [r.finish_time or 0.0 for r in reqs]


def test_runs_are_deterministic_for_a_seed() -> None:
    assert _finish_times(7) == _finish_times(7)
    assert _finish_times(7) != _finish_times(8)


@pytest.mark.parametrize("point", calibration.POINTS, ids=lambda p: p.name)
def test_calibration_directions_hold_in_virtual_time(point: calibration.CalibrationPoint) -> None:
    # Fewer requests than the benchmark: directions only; the figures are the benchmark's job.
    m = calibration.measure(point, requests=300 if point.qps > 1 else 80)
    assert (m.measured > 1.0) == (point.published > 1.0)


def test_demo_pair_reads_domain_acceptance_at_its_temperatures() -> None:
    # Llama-3.1-70B INT8 + Llama-3.1-8B, k=5: the counters clear break-even at T 0.2, not at T 1.0.
    good, good_alpha = calibration.demo_acceptance(0.2)
    bad, _ = calibration.demo_acceptance(1.0)
    assert good >= 0.65
    assert bad < 0.5
    assert good_alpha > good  # what the per-position counters show


def test_demo_pair_wins_at_low_load_and_queues_and_loses_under_load() -> None:
    low = calibration.demo_load(1.0, seconds=120.0)
    assert low.tpot_ratio < 0.7
    assert low.speculative.acceptance == pytest.approx(calibration.demo_acceptance(0.2)[0], abs=0.03)
    assert low.baseline.acceptance is None
    # Past the speculative pod's capacity, short of the baseline's (docs/emulator.md, demo figures).
    high = calibration.demo_load(15.0)
    assert high.speculative.mean_waiting > 1.0
    assert high.baseline.mean_waiting < 1.0
    assert high.tpot_ratio > 1.1
