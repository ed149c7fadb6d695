"""The rate window against the scrape interval (issue 13, defect 7): rate() needs two samples in
its window, so a window of fewer than 4 scrape intervals is warned about at admission (under 2,
refused: it is always empty), and an empty rate() it causes is its own NoData reason in status."""

from __future__ import annotations

import pytest

from specops.api.v1alpha1 import ConditionStatus, PolicySpec
from specops.checks.validation import check_resource, check_scrape_window
from specops.policy.decide import decide
from specops.policy.state import Observation, Reason, Verdict
from specops.render.manifests import render_pod_monitor
from tests.support.policy_states import NOW, SPECULATING, spec_pool
from tests.support.resources import make_si

# The pods are scraped (the series exist) but the window holds too few scrapes for rate().
NO_RATE = Observation(speculative=spec_pool(request_rate=None, acceptance=None))


@pytest.mark.parametrize(
    ("window", "scrape", "scrapes"),
    [
        ("5m", None, 20.0),  # the PodMonitor SpecOps renders: min(15 s, window/4)
        ("1m", None, 4.0),
        ("10s", None, 5.0),  # 10 s / 4 = 2.5 s, whole seconds: 2 s
        ("3s", None, 3.0),  # never under 1 s
        ("5m", "1m", 5.0),
        ("1m", "30s", 2.0),
    ],
)
def test_scrapes_per_window(window: str, scrape: str | None, scrapes: float) -> None:
    policy = PolicySpec(window=window, scrape_interval=scrape)
    assert policy.scrapes_per_window == scrapes


@pytest.mark.parametrize(
    ("policy", "severity"),
    [
        ({}, None),
        ({"window": "1m", "scrapeInterval": "15s"}, None),  # exactly 4
        ({"window": "1m", "scrapeInterval": "20s"}, "warning"),  # 3: rate() is empty now and then
        ({"window": "3s"}, "warning"),  # 1 s scrapes, the fastest the PodMonitor goes
        ({"window": "1m", "scrapeInterval": "30s"}, "warning"),  # 2: empty whenever a scrape is late
        ({"window": "1m", "scrapeInterval": "45s"}, "error"),  # under 2: always empty
        ({"window": "1s"}, "error"),
    ],
)
def test_admission_warns_or_refuses_a_window_too_short_for_the_scrape_interval(
    policy: dict[str, str], severity: str | None
) -> None:
    si = make_si(policy=policy)
    findings = check_scrape_window(si)
    assert [f.severity for f in findings] == ([severity] if severity else [])
    for f in findings:
        assert f.code == "WindowTooShortForScrapeInterval" and f.field == "spec.policy.window"
        assert "scrapeInterval" in f.message  # says the fix
    report = check_resource(si)
    assert any(f.code == "WindowTooShortForScrapeInterval" for f in report.findings) == bool(severity)


def test_an_empty_rate_from_a_short_window_is_its_own_no_data_reason() -> None:
    short = PolicySpec(window="1m", scrape_interval="30s")
    d = decide(short, SPECULATING, NO_RATE, NOW)
    assert (d.assessment.verdict, d.assessment.reason) == (
        Verdict.NO_DATA,
        Reason.WINDOW_TOO_SHORT_FOR_SCRAPE_INTERVAL,
    )
    assert "scrape" in d.assessment.message
    # Not silently "too little traffic" with MetricsAvailable=True: the policy is off, and says so.
    condition = d.metrics_available
    assert (condition.status, condition.reason) == (
        ConditionStatus.FALSE,
        Reason.WINDOW_TOO_SHORT_FOR_SCRAPE_INTERVAL,
    )
    assert (d.state.breaches, d.state.errors, d.transition) == (0, 0, None)


def test_with_a_long_enough_window_an_empty_rate_is_too_little_traffic() -> None:
    d = decide(PolicySpec(), SPECULATING, NO_RATE, NOW)
    assert d.assessment.reason == Reason.INSUFFICIENT_TRAFFIC
    assert d.metrics_available.status == ConditionStatus.TRUE
    # A short window with a rate (traffic measured) judges as usual.
    short = PolicySpec(window="1m", scrape_interval="30s")
    assert (
        decide(short, SPECULATING, Observation(speculative=spec_pool()), NOW).assessment.verdict
        is Verdict.HEALTHY
    )


@pytest.mark.parametrize(
    ("policy", "interval"),
    [({}, "15s"), ({"window": "10s"}, "2s"), ({"window": "1m", "scrapeInterval": "20s"}, "20s"),
     ({"window": "1m", "scrapeInterval": "1.5s"}, "1500ms")],
)  # fmt: skip
def test_the_rendered_pod_monitor_scrapes_at_the_interval_the_window_is_checked_against(
    policy: dict[str, str], interval: str
) -> None:
    si = make_si(policy=policy)
    endpoint = render_pod_monitor(si)["spec"]["podMetricsEndpoints"][0]
    assert endpoint["interval"] == interval
