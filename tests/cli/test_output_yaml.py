"""``-o yaml`` prints the API's JSON as YAML: whatever the data, a YAML parser reads back the
same value (PyYAML comes with schemathesis, a test dependency)."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.output import to_yaml

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(JSON)
def test_yaml_output_reads_back_as_the_same_data(data: Any) -> None:
    assert yaml.safe_load(to_yaml(data)) == data
