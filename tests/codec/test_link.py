"""CoRE link format (40), LwM2M attributes, Write-Attributes queries and Register payloads."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwm2m.codec.errors import CodecError, EncodeError
from lwm2m.codec.link import (
    DEFAULT_QUOTED,
    Attributes,
    AttributeUpdate,
    Link,
    LinkFormatError,
    format_links,
    format_write_attributes,
    parse_links,
    parse_registration,
    parse_write_attributes,
)
from lwm2m.model import Path

WAKAAMA_REGISTER = (
    '</>;rt="oma.lwm2m";ct=110,</1>;ver=1.1,</1/0>,</2/0>,</3/0>,</31024>;ver=1.0,</31024/10>'
)


# -- parsing ------------------------------------------------------------------------------------
def test_a_register_payload_parses_into_targets_and_params() -> None:
    assert parse_links(WAKAAMA_REGISTER) == [
        Link("/", (("rt", "oma.lwm2m"), ("ct", "110"))),
        Link("/1", (("ver", "1.1"),)),
        Link("/1/0"),
        Link("/2/0"),
        Link("/3/0"),
        Link("/31024", (("ver", "1.0"),)),
        Link("/31024/10"),
    ]


def test_quoted_values_may_hold_commas_semicolons_and_escapes() -> None:
    text = r'</0/1>;uri="coap://h:5683/a,b;c";ssid=101,</x>;title="say \"hi\" \\ bye"'
    assert parse_links(text) == [
        Link("/0/1", (("uri", "coap://h:5683/a,b;c"), ("ssid", "101"))),
        Link("/x", (("title", 'say "hi" \\ bye'),)),
    ]


def test_valueless_params_whitespace_and_bytes_are_accepted() -> None:
    text = b" </3/0/7> ;obs ; dim=2 ,\r\n\t</1> "
    assert parse_links(text) == [Link("/3/0/7", (("obs", None), ("dim", "2"))), Link("/1")]


def test_a_leading_bare_parameter_item_becomes_a_targetless_link() -> None:
    links = parse_links('lwm2m="1.0",</0>,</0/1>')  # Anjay 1.0 Bootstrap-Discover
    assert links == [Link("", (("lwm2m", "1.0"),)), Link("/0"), Link("/0/1")]
    assert format_links(links, quoted={"lwm2m"}) == 'lwm2m="1.0",</0>,</0/1>'


@pytest.mark.parametrize("text", ["", "   ", b"", "\r\n"])
def test_an_empty_payload_has_no_links(text: str | bytes) -> None:
    assert parse_links(text) == []


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("</1", 0),
        ("<>", 0),
        ("</a<b>", 3),
        ("</1>;", 5),
        ("</1>;a=", 7),
        ("</1>x", 4),
        ("</1>,", 5),
        ("</1>,,</2>", 5),
        ('</1>;a="abc', 7),
        ("</1>;=3", 5),
        (b"</\xff>", 2),
    ],
)
def test_malformed_link_format_names_its_offset(text: str | bytes, offset: int) -> None:
    with pytest.raises(LinkFormatError) as caught:
        parse_links(text)
    assert caught.value.offset == offset
    assert caught.value.content_format == 40


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/", Path(())),
        ("/3", Path.of(3)),
        ("/3/0/1/2", Path.of(3, 0, 1, 2)),
        ("/lwm2m/3", None),
        ("/03", None),
        ("/3/", None),
        ("/65535", None),
        ("/3/0/1/2/5", None),
        ("", None),
        ("coap://h/3", None),
    ],
)
def test_link_path_names_only_plain_lwm2m_paths(target: str, expected: Path | None) -> None:
    assert Link(target).path == expected


def test_param_and_has_param() -> None:
    link = Link("/3/0/7", (("dim", "2"), ("obs", None), ("dim", "3")))
    assert link.param("dim") == "2"
    assert link.param("obs") is None and link.has_param("obs")
    assert link.param("pmin") is None and not link.has_param("pmin")


# -- formatting ---------------------------------------------------------------------------------
def test_formatting_quotes_what_needs_it_and_what_is_customary() -> None:
    links = [
        Link("/", (("rt", "oma.lwm2m"), ("ct", "110 112"))),
        Link("/0/1", (("uri", "coap://h"), ("ssid", "101"), ("obs", None), ("e", ""))),
    ]
    assert format_links(links) == (
        '</>;rt="oma.lwm2m";ct="110 112",</0/1>;uri="coap://h";ssid=101;obs;e=""'
    )
    assert format_links([Link("/10", (("ver", "1.1"),))], quoted={"ver"}) == '</10>;ver="1.1"'


@pytest.mark.parametrize(
    "link", [Link(""), Link("/a>b"), Link("/1", (("bad name", "1"),)), Link("/1", (("", "1"),))]
)
def test_links_that_cannot_be_written_are_encode_errors(link: Link) -> None:
    with pytest.raises(EncodeError):
        format_links([link])


_TOKEN = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~",
    min_size=1,
    max_size=8,
)
_TARGET = st.text(
    st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), min_size=1, max_size=20
)
_VALUE = st.none() | st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_LINKS = st.lists(
    st.builds(Link, _TARGET, st.lists(st.tuples(_TOKEN, _VALUE), max_size=4).map(tuple)),
    max_size=5,
)


@given(_LINKS, st.sets(_TOKEN, max_size=3))
@settings(max_examples=150, deadline=None)
def test_formatted_links_parse_back_unchanged(links: list[Link], quoted: set[str]) -> None:
    assert parse_links(format_links(links, quoted=quoted | DEFAULT_QUOTED)) == links


@given(st.text(max_size=80) | st.binary(max_size=80))
@settings(max_examples=200, deadline=None)
def test_any_input_parses_or_raises_a_link_format_error(text: str | bytes) -> None:
    try:
        links = parse_links(text)
    except LinkFormatError:
        return
    assert parse_links(format_links(links)) == links


_LINKISH = st.text('</>;,="\\ 0123abc.:', max_size=60)


@given(_LINKISH)
@settings(max_examples=200, deadline=None)
def test_link_shaped_noise_parses_or_raises_a_link_format_error(text: str) -> None:
    try:
        links = parse_links(text)
        parse_registration(text)
    except LinkFormatError:
        return
    assert parse_links(format_links(links)) == links


# -- attributes ---------------------------------------------------------------------------------
def test_attributes_are_typed() -> None:
    link = parse_links(
        "</3/0/9>;pmin=5;pmax=10;gt=5.5;lt=-1;st=0.25;epmin=1;epmax=60;dim=2;ssid=101;"
        'uri="coap://h";ver=1.1;rt="x.y";ct="110 112";obs;foo=bar'
    )[0]
    attrs = Attributes.from_link(link)
    assert attrs == Attributes(
        pmin=5, pmax=10, gt=5.5, lt=-1.0, st=0.25, epmin=1, epmax=60, dim=2, ssid=101,
        uri="coap://h", ver="1.1", rt="x.y", ct=(110, 112), other=(("obs", None), ("foo", "bar")),
    )  # fmt: skip
    assert Attributes.from_params(attrs.to_params()) == attrs


def test_ct_may_be_one_format_or_a_quoted_list() -> None:
    assert Attributes.from_link(parse_links("</>;ct=110")[0]).ct == (110,)
    assert Attributes.from_link(parse_links('</>;ct="110 112"')[0]).ct == (110, 112)


def test_to_params_writes_integral_floats_without_a_fraction() -> None:
    assert Attributes(gt=5.0, lt=0.1, pmin=0).to_params() == (
        ("pmin", "0"),
        ("gt", "5"),
        ("lt", "0.1"),
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ([("pmin", "-1")], "pmin"),
        ([("pmin", "1.5")], "pmin"),
        ([("pmin", None)], "pmin"),
        ([("pmax", "1"), ("pmax", "2")], "pmax"),
        ([("gt", "abc")], "gt"),
        ([("gt", "1e999")], "gt"),
        ([("gt", "nan")], "gt"),
        ([("dim", "256")], "dim"),
        ([("ssid", "65536")], "ssid"),
        ([("ct", "")], "ct"),
        ([("ct", "110,112")], "ct"),
        ([("ver", "one")], "ver"),
    ],
)
def test_bad_attribute_values_name_the_attribute(
    params: list[tuple[str, str | None]], field: str
) -> None:
    with pytest.raises(LinkFormatError) as caught:
        Attributes.from_params(params)
    assert caught.value.field == field


_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
_ATTRIBUTES = st.builds(
    Attributes,
    pmin=st.none() | st.integers(0, 2**31 - 1),
    pmax=st.none() | st.integers(0, 2**31 - 1),
    gt=st.none() | _FLOATS,
    lt=st.none() | _FLOATS,
    st=st.none() | _FLOATS,
    epmin=st.none() | st.integers(0, 1000),
    dim=st.none() | st.integers(0, 255),
    ct=st.none() | st.lists(st.integers(0, 65535), min_size=1, max_size=3).map(tuple),
    ssid=st.none() | st.integers(0, 65535),
    uri=st.none() | st.text(st.characters(blacklist_categories=("Cs",)), max_size=10),
    ver=st.none() | st.sampled_from(["1.0", "1.1", "2"]),
)


@given(_ATTRIBUTES)
@settings(max_examples=150, deadline=None)
def test_attributes_survive_a_trip_through_link_format(attrs: Attributes) -> None:
    link = Link("/3/0/9", attrs.to_params())
    assert Attributes.from_link(parse_links(format_links([link]))[0]) == attrs


# -- Write-Attributes ---------------------------------------------------------------------------
def test_write_attributes_query_sets_and_unsets() -> None:
    update = parse_write_attributes("pmin=10&pmax=60&gt=5.5&st")
    assert update == AttributeUpdate(Attributes(pmin=10, pmax=60, gt=5.5), frozenset({"st"}))
    assert format_write_attributes(update) == ["pmin=10", "pmax=60", "gt=5.5", "st"]


def test_write_attributes_accepts_uri_query_options() -> None:
    assert parse_write_attributes(["pmin=5", "pmax=10"]) == AttributeUpdate(
        Attributes(pmin=5, pmax=10)
    )
    assert parse_write_attributes("") == AttributeUpdate()


@pytest.mark.parametrize(
    "query", ["dim=3", "ver=1.1", "pmin=", "pmin=1&pmin=2", "pmin&pmin=1", "pmin=x", "=1", "a b=1"]
)
def test_bad_write_attributes_queries_are_refused(query: str) -> None:
    with pytest.raises(LinkFormatError):
        parse_write_attributes(query)


def test_setting_and_unsetting_one_attribute_cannot_be_written() -> None:
    with pytest.raises(EncodeError):
        format_write_attributes(AttributeUpdate(Attributes(pmin=1), frozenset({"pmin"})))


@given(
    _ATTRIBUTES.map(
        lambda a: Attributes(pmin=a.pmin, pmax=a.pmax, gt=a.gt, lt=a.lt, st=a.st, epmin=a.epmin)
    ),
    st.sets(st.sampled_from(["epmax", "pmin", "lt"])),
)
@settings(max_examples=150, deadline=None)
def test_write_attributes_round_trip(attrs: Attributes, unset: set[str]) -> None:
    unset -= {name for name, _ in attrs.to_params()}
    update = AttributeUpdate(attrs, frozenset(unset))
    assert parse_write_attributes(format_write_attributes(update)) == update
    assert parse_write_attributes("&".join(format_write_attributes(update))) == update


@given(st.text("pminaxgtls=&.0123456789-e", max_size=40))
@settings(max_examples=200, deadline=None)
def test_any_query_parses_or_raises_a_codec_error(query: str) -> None:
    try:
        parse_write_attributes(query)
    except CodecError as exc:
        assert isinstance(exc, LinkFormatError)


# -- Register payloads --------------------------------------------------------------------------
def test_wakaama_register_payload_is_structured() -> None:
    reg = parse_registration(WAKAAMA_REGISTER)
    assert reg.root == "/"
    assert reg.content_formats == (110,)
    assert reg.objects == (1, 2, 3, 31024)
    assert reg.instances == (Path.of(1, 0), Path.of(2, 0), Path.of(3, 0), Path.of(31024, 10))
    assert dict(reg.object_versions) == {1: "1.1", 31024: "1.0"}
    assert reg.version_of(1) == "1.1" and reg.version_of(3) == "1.0"
    assert reg.instances_of(31024) == (10,)
    assert reg.supports(2) and not reg.supports(5)


def test_objects_without_instances_and_no_root_link() -> None:
    reg = parse_registration('</1/1>,</2>,</10>;ver="1.1",</10/0>,</33605>')  # Anjay 1.0
    assert reg.root == "/" and reg.content_formats == ()
    assert reg.objects == (1, 2, 10, 33605)
    assert reg.instances == (Path.of(1, 1), Path.of(10, 0))
    assert reg.version_of(10) == "1.1"


def test_an_alternate_root_prefixes_object_links() -> None:
    reg = parse_registration(
        '</lwm2m>;rt="oma.lwm2m";ct="110 112",</lwm2m/1/0>,</lwm2m/3>,</other/5>,</4/0>'
    )
    assert reg.root == "/lwm2m"
    assert reg.content_formats == (110, 112)
    assert reg.objects == (1, 3)
    assert reg.instances == (Path.of(1, 0),)
    assert [link.target for link in reg.others] == ["/other/5", "/4/0"]


def test_bootstrap_discover_gives_version_and_instance_attributes() -> None:
    reg = parse_registration('</>;lwm2m=1.1,</0/0>,</0/1>;ssid=101;uri="coap://h:1",</1>;ver=1.1')
    assert reg.lwm2m_version == "1.1"
    assert reg.attributes[Path.of(0, 1)] == Attributes(ssid=101, uri="coap://h:1")
    assert Path.of(0, 0) not in reg.attributes
    assert parse_registration('lwm2m="1.0",</0>,</0/1>').lwm2m_version == "1.0"


def test_resource_links_and_duplicates_in_a_register_payload() -> None:
    reg = parse_registration("</3/0>,</3/0>,</3/0/1>")
    assert reg.instances == (Path.of(3, 0),)
    assert reg.others == (Link("/3/0/1"),)
