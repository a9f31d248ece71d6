"""The tracing cost targets, measured against the bare forward pass in the same run."""

import pytest

from benchmarks import trace_speed

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_tracing_costs_less_than_the_bare_forward_pass():
    result = trace_speed.run(tokens=2000, repeats=3)
    assert result["tokens"] >= 2000
    assert result["ratio_default_layer"] <= 0.8, result
    assert result["ratio_all_layers"] <= 1.1, result
    # read-outs are tokens x emotions x layers floats, far below the hidden states they replace
    assert result["readout_bytes_all_layers"] * 10 < result["hidden_bytes_all_layers_if_kept"]
