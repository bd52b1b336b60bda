"""The workers' instruments keep their labels bounded, whatever a message or a caller says."""

from __future__ import annotations

from prometheus_client import REGISTRY

from workers import metrics


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_kind_not_from_the_classifier_is_unclassified() -> None:
    before = sample(
        "tavus_callbacks_events_processed_total", kind="unclassified", outcome="quarantined"
    )
    metrics.event_processed({"kind": "c123-an-id"}, "quarantined", 0.0)
    metrics.event_processed("not even a dict", "quarantined", 0.0)
    after = sample(
        "tavus_callbacks_events_processed_total", kind="unclassified", outcome="quarantined"
    )
    assert after == before + 2
    assert not sample(
        "tavus_callbacks_events_processed_total", kind="c123-an-id", outcome="quarantined"
    )


def test_only_configured_destinations_become_label_values() -> None:
    configured = {"crm", "warehouse"}
    metrics.delivery("crm", "delivered", configured)
    metrics.delivery("https://hooks.example.com/secret-path", "failed", configured)
    assert sample("tavus_callbacks_deliveries_total", destination="crm", outcome="delivered") >= 1
    assert sample("tavus_callbacks_deliveries_total", destination="other", outcome="failed") >= 1
    exposed = {s.labels.get("destination") for m in REGISTRY.collect() for s in m.samples}
    assert "https://hooks.example.com/secret-path" not in exposed


def test_unknown_channels_and_severities_are_other() -> None:
    metrics.alert_delivery("pager-9000", "failed", {"log", "slack"})
    metrics.alert_raised("apocalyptic")
    assert sample("tavus_callbacks_alert_deliveries_total", channel="other", outcome="failed") >= 1
    assert sample("tavus_callbacks_alerts_raised_total", severity="other") >= 1
