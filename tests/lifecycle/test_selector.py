"""The selector language: parsing, positioned errors with the fix, and one meaning in SQL and in
memory (hypothesis over selectors against a varied population, on SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.inventory import DeviceRecord, InventoryRepository
from lifecycle.selector import Selector, SelectorError, parse_selector
from tests.lifecycle.api.conftest import database_url  # noqa: F401  (fixture)
from tests.lifecycle.inventory_support import (
    CARRIERS,
    FIRMWARE,
    LABEL_VALUES,
    LABELS,
    REGIONS,
    SKUS,
    STAGES,
    TENANTS,
    open_store,
    population,
)


def test_the_issue_example_parses_into_its_terms() -> None:
    selector = parse_selector(
        "region=eu-west,sku=T1,carrier in (tmo,vzw),label:pilot,firmware<2.3.0,stage=active"
    )
    assert [(t.key, t.op, t.values, t.label) for t in selector.terms] == [
        ("region", "=", ("eu-west",), False),
        ("sku", "=", ("T1",), False),
        ("carrier", "in", ("tmo", "vzw"), False),
        ("pilot", "has", (), True),
        ("firmware", "<", ("2.3.0",), False),
        ("stage", "=", ("active",), False),
    ]
    assert parse_selector(str(selector)) == selector


def test_syntax_variants() -> None:
    assert parse_selector("") == Selector()
    assert parse_selector("  group = g1 , !label:x ").terms[0].key == "policy_group"
    assert parse_selector("label:batch=7").terms[0].values == ("7",)
    assert parse_selector("label:batch!=7").terms[0].op == "!="
    assert parse_selector('model="Tracker X"').terms[0].values == ("Tracker X",)
    assert parse_selector("carrier notin (a, b)").terms[0].op == "notin"
    assert parse_selector("firmware>=v2.3").terms[0].values == ("v2.3",)
    assert parse_selector("region==eu").terms[0].op == "="


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("regon=eu", 0, ["unknown key 'regon'", "did you mean 'region'", "keys are"]),
        ("region=eu,,sku=T1", 10, ["empty term"]),
        ("region=eu,", 10, ["empty term"]),
        ("region<eu", 0, ["not a version", "region=VALUE"]),
        ("stage=live", 0, ["unknown stage 'live'", "manufactured"]),
        ("carrier in (tmo,vzw", 19, ["unterminated list"]),
        ("carrier in ()", 12, ["empty list"]),
        ("region eu", 7, ["expected an operator"]),
        ("region=", 7, ["missing value"]),
        ("!region=eu", 0, ["'!' goes only before label"]),
        ("label:", 6, ["missing label name"]),
        ('model="abc', 6, ["unterminated quoted value"]),
        ("registered=maybe", 0, ["true or false"]),
        ("region=eu sku=T1", 10, ["unexpected 's'", "separate terms with ','"]),
    ],
)
def test_errors_name_the_position_and_the_fix(text: str, position: int, words: list[str]) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_selector(text)
    assert caught.value.position == position
    message = str(caught.value)
    assert message.startswith(f"selector at character {position + 1}: ")
    for word in words:
        assert word in message
    assert caught.value.fix


@settings(max_examples=400)
@given(
    st.text(
        alphabet=st.sampled_from('ab=!<>,() "\\:label*in notin firmware region 2.3'), max_size=40
    )
    | st.text(max_size=30)
)
def test_fuzz_the_parser_raises_only_selector_errors(text: str) -> None:
    try:
        selector = parse_selector(text)
    except SelectorError:
        return
    assert parse_selector(str(selector)) == selector  # canonical text round-trips


def test_endpoint_glob_is_case_sensitive_and_literal_elsewhere() -> None:
    selector = parse_selector("endpoint=dev-*")
    assert selector.matches(DeviceRecord("dev-1"))
    assert not selector.matches(DeviceRecord("DEV-1"))
    assert not parse_selector("endpoint=dev_?").matches(DeviceRecord("dev_1"))


def test_missing_attributes_and_order_comparisons_in_memory() -> None:
    bare = DeviceRecord("d")
    assert parse_selector("region!=eu").matches(bare)
    assert parse_selector("region notin (eu)").matches(bare)
    assert not parse_selector("region=eu").matches(bare)
    assert not parse_selector("firmware<9.0.0").matches(bare)
    odd = DeviceRecord("d", firmware="R12a")
    assert not parse_selector("firmware<9.0.0").matches(odd)  # not a version: never ordered
    assert parse_selector("firmware<2.10.0").matches(DeviceRecord("d", firmware="2.9.1"))
    assert parse_selector("firmware=2.3").matches(DeviceRecord("d", firmware="v2.3.0"))


# -- SQL and memory agree -------------------------------------------------------------------------

_values = {
    "region": [r for r in REGIONS if r],
    "sku": [s for s in SKUS if s],
    "carrier": [c for c in CARRIERS if c],
    "tenant": [t for t in TENANTS if t],
    "stage": STAGES,
    "registered": ["true", "false"],
    "endpoint": ["dev-0001", "dev-00*", "Dev_*", "*1", "dev-*-x"],
}
_versions = [f for f in FIRMWARE if f] + ["2.3", "0.0.1"]


@st.composite
def terms(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["eq", "ne", "in", "notin", "order", "label"]))
    if kind == "order":
        op = draw(st.sampled_from(["<", "<=", ">", ">=", "=", "!="]))
        return f"firmware{op}{draw(st.sampled_from(_versions))}"
    if kind == "label":
        name = draw(st.sampled_from(LABELS))
        form = draw(st.sampled_from(["has", "lacks", "eq", "ne"]))
        value = draw(st.sampled_from([v for v in LABEL_VALUES if v]))
        return {
            "has": f"label:{name}",
            "lacks": f"!label:{name}",
            "eq": f"label:{name}={value}",
            "ne": f"label:{name}!={value}",
        }[form]
    key = draw(st.sampled_from(sorted(_values)))
    pool = _values[key]
    if kind in ("in", "notin") and key != "endpoint":
        chosen = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
        return f"{key} {kind} ({','.join(chosen)})"
    return f"{key}{'=' if kind in ('eq', 'in') else '!='}{draw(st.sampled_from(pool))}"


selectors = st.lists(terms(), min_size=0, max_size=4).map(",".join)


def test_sql_and_in_memory_give_the_same_devices(
    database_url: str | None,  # noqa: F811
    tmp_path: Path,
) -> None:
    records = population(240)
    repo = InventoryRepository()
    with open_store(database_url, tmp_path) as store:
        with store.transaction() as tx:
            repo.upsert_many(tx, records)

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(selectors, st.sampled_from([None, frozenset({"acme"}), frozenset()]))
        def agree(text: str, tenants: frozenset[str] | None) -> None:
            selector = parse_selector(text)
            in_sql = set(store.read_sync(lambda tx: repo.endpoints(tx, selector, tenants)))
            in_memory = {
                r.endpoint
                for r in records
                if selector.matches(r) and (tenants is None or r.tenant in tenants)
            }
            assert in_sql == in_memory, text

        agree()
        # the population is varied enough that selectors are not trivially empty or full
        some = store.read_sync(lambda tx: repo.count(tx, parse_selector("firmware<2.10.0")))
        assert 0 < some < len(records)
