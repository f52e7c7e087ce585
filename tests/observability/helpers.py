"""Read a Prometheus exposition into {(name, labels): value} for exact assertions."""

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_samples(exposition: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value, 0 when the series does not exist yet (a counter that was never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)
