"""The wire format: every malformed message becomes a ProtocolError naming the field."""

from __future__ import annotations

import pytest

from popin.core.wire.events import (
    Consent,
    ConsentModeSignal,
    Custom,
    Dwell,
    Hello,
    PageView,
    PopinStatus,
    TcfSignal,
)
from popin.core.wire.protocol import MAX_MESSAGE_BYTES, ProtocolError, decode, encode

HELLO = {"type": "hello", "visitor": "abcdefgh1234", "session": "session-1234",
         "url": "https://shop.test/a?b=1"}


def test_decodes_every_message_type() -> None:
    assert decode(encode(HELLO)) == Hello("abcdefgh1234", "session-1234", "https://shop.test/a?b=1")
    assert decode('{"type":"pageview","url":"https://x.test/p/q#h","title":"T"}') == PageView(
        "https://x.test/p/q#h", "/p/q", "T")
    assert decode('{"type":"pageview","url":"https://x.test"}') == PageView("https://x.test", "/")
    assert decode(b'{"type":"dwell","keyword":" Wax ","seconds":5}') == Dwell("wax", 5.0)
    assert decode('{"type":"event","name":"add_to_cart","props":{"sku":"s","n":2,"ok":true,'
                  '"none":null}}') == Custom("add_to_cart", {"sku": "s", "n": 2, "ok": True,
                                                             "none": None})
    assert decode('{"type":"event","name":"x","props":null}') == Custom("x", {})
    assert decode('{"type":"popin","id":"p.1","status":"dismissed"}') == PopinStatus(
        "p.1", "dismissed")
    assert decode(encode({**HELLO, "cmp": True})).cmp is True  # type: ignore[union-attr]


def test_decodes_every_consent() -> None:
    assert decode('{"type":"consent","granted":false}') == Consent(False)
    assert decode('{"type":"consent","source":"page","granted":true}') == Consent(True)
    assert decode('{"type":"consent","source":"tcf","applies":true,"purposes":[1,3,4,1],'
                  '"publisher":[]}') == TcfSignal(True, frozenset({1, 3, 4}), frozenset())
    assert decode('{"type":"consent","source":"tcf","applies":false}') == TcfSignal(False)
    assert decode('{"type":"consent","source":"gcm","states":{"ad_user_data":"granted",'
                  '"ad_storage":"denied"}}') == ConsentModeSignal(
        {"ad_user_data": True, "ad_storage": False})
    assert decode('{"type":"consent","source":"gcm","states":{}}') == ConsentModeSignal({})
    # The visitor's own act in the tool, stamped by the page's clock.
    assert decode('{"type":"consent","source":"tcf","applies":true,"action":1700000000000}'
                  ) == TcfSignal(True, action=1700000000000)
    assert decode('{"type":"consent","source":"gcm","states":{},"action":0}'
                  ) == ConsentModeSignal({})


@pytest.mark.parametrize(("raw", "field"), [
    ('{"type":"consent"}', "granted"),
    ('{"type":"consent","granted":"yes"}', "granted"),
    ('{"type":"consent","granted":true,"purposes":[1]}', "purposes"),
    ('{"type":"consent","source":"iab","granted":true}', "source"),
    ('{"type":"consent","source":["tcf"]}', "source"),
    ('{"type":"consent","source":"tcf","purposes":[1]}', "applies"),
    ('{"type":"consent","source":"tcf","applies":1}', "applies"),
    ('{"type":"consent","source":"tcf","applies":true,"purposes":[0]}', "purposes"),
    ('{"type":"consent","source":"tcf","applies":true,"purposes":[25]}', "purposes"),
    ('{"type":"consent","source":"tcf","applies":true,"purposes":[true]}', "purposes"),
    ('{"type":"consent","source":"tcf","applies":true,"purposes":"1,2"}', "purposes"),
    ('{"type":"consent","source":"tcf","applies":true,"purposes":[1.5]}', "purposes"),
    ('{"type":"consent","source":"tcf","applies":true,"publisher":' + str(list(range(1, 26)))
     + '}', "publisher"),
    ('{"type":"consent","source":"tcf","applies":true,"tcString":"CQ..."}', "tcString"),
    ('{"type":"consent","source":"gcm","states":{"ad_storage":true}}', "states"),
    ('{"type":"consent","source":"gcm","states":{"cookies":"granted"}}', "states"),
    ('{"type":"consent","source":"gcm","states":[]}', "states"),
    ('{"type":"consent","source":"gcm"}', "states"),
    ('{"type":"consent","source":"gcm","states":{},"granted":true}', "granted"),
    ('{"type":"consent","source":"gcm","states":{},"action":true}', "action"),
    ('{"type":"consent","source":"tcf","applies":true,"action":-1}', "action"),
    ('{"type":"consent","source":"tcf","applies":true,"action":1.5}', "action"),
    ('{"type":"consent","source":"tcf","applies":true,"action":' + str(2**53) + '}', "action"),
    ('{"type":"consent","granted":true,"action":1}', "action"),
    ('{"type":"hello","visitor":"abcdefgh1234","session":"session-1234",'
     '"url":"https://a.test","cmp":"yes"}', "cmp"),
])
def test_a_bad_consent_names_the_field(raw: str, field: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(raw)
    assert (caught.value.code, caught.value.field) == ("bad_field", field)


@pytest.mark.parametrize(("raw", "code", "field"), [
    ("not json", "bad_json", None),
    ("[1, 2]", "bad_message", None),
    ('{"type": "teleport"}', "unknown_type", "type"),
    ('{"no": "type"}', "unknown_type", "type"),
    ('{"type": 7}', "unknown_type", "type"),
    ('{"type":"hello","visitor":"short","session":"session-1234","url":"https://a.test"}',
     "bad_field", "visitor"),
    ('{"type":"hello","visitor":"abcdefgh1234","session":"../../etc","url":"https://a.test"}',
     "bad_field", "session"),
    ('{"type":"hello","visitor":"abcdefgh1234","session":"session-1234","url":"javascript:x"}',
     "bad_field", "url"),
    ('{"type":"pageview"}', "bad_field", "url"),
    ('{"type":"pageview","url":"https://a.test","title":5}', "bad_field", "title"),
    ('{"type":"dwell","keyword":"wax","seconds":-1}', "bad_field", "seconds"),
    ('{"type":"dwell","keyword":"wax","seconds":true}', "bad_field", "seconds"),
    ('{"type":"dwell","keyword":"wax","seconds":1e6}', "bad_field", "seconds"),
    ('{"type":"dwell","keyword":"wax","seconds":1e999}', "bad_json", None),
    ('{"type":"dwell","keyword":"","seconds":3}', "bad_field", "keyword"),
    ('{"type":"event","name":"has space"}', "bad_field", "name"),
    ('{"type":"event","name":"x","props":[1]}', "bad_field", "props"),
    ('{"type":"event","name":"x","props":{"deep":{"a":1}}}', "bad_field", "props.deep"),
    ('{"type":"popin","id":"p.1","status":"exploded"}', "bad_field", "status"),
    # Ids end where they end: `$` would let a trailing newline through (CSV exports).
    ('{"type":"hello","visitor":"visitor-0001\\n","session":"session-0001",'
     '"url":"https://a.test/"}', "bad_field", "visitor"),
    ('{"type":"event","name":"signup\\n"}', "bad_field", "name"),
    ('{"type":"identify","user_id":"user-42\\n"}', "bad_field", "user_id"),
    ('{"type":"identify","user_id":"user\\u000042"}', "bad_field", "user_id"),
    ('{"type":"identify","user_id":"user-42","user_hash":"not hex"}', "bad_field", "user_hash"),
    ('{"type":"pageview","url":"http://[::1"}', "bad_field", "url"),
    ('{"type":"hello","visitor":"visitor-0001","session":"session-0001",'
     '"url":"http://[::1/"}', "bad_field", "url"),
    ('{"type":"identify","user_id":"user-42","user_hash":"' + "a" * 63 + '"}',
     "bad_field", "user_hash"),
])
def test_bad_messages_name_the_problem(raw: str, code: str, field: str | None) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(raw)
    assert caught.value.code == code
    assert caught.value.field == field
    frame = caught.value.frame()
    assert frame["type"] == "error" and frame["code"] == code and frame["message"]


def test_oversized_message_is_refused_before_parsing() -> None:
    big = encode({"type": "event", "name": "x", "props": {"a": "b" * MAX_MESSAGE_BYTES}})
    with pytest.raises(ProtocolError) as caught:
        decode(big)
    assert caught.value.code == "too_big"


def test_too_many_props_are_refused() -> None:
    props = {f"k{i}": i for i in range(33)}
    with pytest.raises(ProtocolError, match="at most 32 keys"):
        decode(encode({"type": "event", "name": "x", "props": props}))


def test_a_referrer_that_cannot_be_parsed_makes_a_direct_visit() -> None:
    hello = decode('{"type":"hello","visitor":"visitor-0001","session":"session-0001",'
                   '"url":"https://a.test/","referrer":"http://[::1"}')
    assert isinstance(hello, Hello) and hello.referrer == ""
    app = decode('{"type":"hello","visitor":"visitor-0001","session":"session-0001",'
                 '"url":"https://a.test/","referrer":"android-app://com.example.app/"}')
    assert isinstance(app, Hello) and app.referrer == "android-app://com.example.app/"
