"""The telnet codec: framing, escaping, negotiation; fuzzed with hypothesis."""

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from kubeserial_gateway.telnet import (
    BINARY,
    BRK,
    COM_PORT_OPTION,
    DO,
    DONT,
    IAC,
    MAX_SUBNEGOTIATION,
    NOP,
    SB,
    SE,
    SGA,
    WILL,
    WONT,
    Command,
    Data,
    Negotiation,
    OptionNegotiator,
    ProtocolError,
    Subnegotiation,
    TelnetEvent,
    TelnetParser,
    escape,
    subnegotiation,
)


def feed_chunks(chunks: list[bytes]) -> list[TelnetEvent]:
    parser = TelnetParser()
    events: list[TelnetEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


def normalized(events: list[TelnetEvent]) -> list[TelnetEvent]:
    """Adjacent Data events merged: how the stream is chunked must not matter beyond that."""
    out: list[TelnetEvent] = []
    for event in events:
        if isinstance(event, Data) and out and isinstance(out[-1], Data):
            out[-1] = Data(out[-1].payload + event.payload)
        elif not (isinstance(event, Data) and not event.payload):
            out.append(event)
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def test_data_without_iac_passes_through_unchanged() -> None:
    assert TelnetParser().feed(b"hello") == [Data(b"hello")]
    assert TelnetParser().feed(b"") == []


def test_escape_doubles_every_iac() -> None:
    assert escape(b"a\xffb\xff\xff") == b"a\xff\xffb\xff\xff\xff\xff"
    assert escape(b"plain") == b"plain"


def test_escaped_iac_runs_decode_to_data() -> None:
    assert TelnetParser().feed(b"\xff\xff" * 500) == [Data(b"\xff" * 500)]
    assert normalized(TelnetParser().feed(b"x\xff\xff\xff\xff\xff\xf1y")) == [
        Data(b"x\xff\xff"),
        Command(NOP),
        Data(b"y"),
    ]


def test_iac_pair_split_across_chunks() -> None:
    assert normalized(feed_chunks([b"a\xff", b"\xffb"])) == [Data(b"a\xffb")]
    assert normalized(feed_chunks([b"\xff", b"\xff", b"\xff", b"\xff"])) == [Data(b"\xff\xff")]


def test_commands_and_negotiations() -> None:
    stream = bytes([IAC, BRK, IAC, WILL, BINARY, ord("z"), IAC, DONT, SGA])
    assert TelnetParser().feed(stream) == [
        Command(BRK),
        Negotiation(WILL, BINARY),
        Data(b"z"),
        Negotiation(DONT, SGA),
    ]


def test_subnegotiation_with_escaped_iac_in_its_value() -> None:
    message = subnegotiation(COM_PORT_OPTION, bytes([1, 0, 0, 0xFF, 0xFF]))
    assert message.count(b"\xff\xff") == 2
    assert TelnetParser().feed(message) == [Subnegotiation(COM_PORT_OPTION, bytes([1, 0, 0, 0xFF, 0xFF]))]
    assert normalized(feed_chunks([bytes([b]) for b in message])) == [
        Subnegotiation(COM_PORT_OPTION, bytes([1, 0, 0, 0xFF, 0xFF]))
    ]


def test_malformed_sequences_become_errors_and_parsing_goes_on() -> None:
    events = TelnetParser().feed(bytes([IAC, SE]) + b"ok")
    assert isinstance(events[0], ProtocolError) and events[1] == Data(b"ok")
    # SB interrupted by another command: the SB is dropped, the command is still seen.
    events = TelnetParser().feed(bytes([IAC, SB, COM_PORT_OPTION, 1, IAC, WILL, BINARY]) + b"ok")
    assert isinstance(events[0], ProtocolError)
    assert events[1:] == [Negotiation(WILL, BINARY), Data(b"ok")]
    assert isinstance(TelnetParser().feed(bytes([IAC, SB, IAC, SE]))[0], ProtocolError)


def test_oversized_subnegotiation_is_dropped_not_buffered() -> None:
    parser = TelnetParser()
    events = parser.feed(bytes([IAC, SB, COM_PORT_OPTION]) + b"x" * 10_000)
    assert events == []
    assert parser.buffered <= MAX_SUBNEGOTIATION
    events = parser.feed(bytes([IAC, SE]) + b"after")
    assert isinstance(events[0], ProtocolError) and events[1] == Data(b"after")


@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0, max_value=3000), max_size=20))
def test_escaped_data_survives_any_chunking(data: bytes, cuts: list[int]) -> None:
    events = feed_chunks(split(escape(data), cuts))
    assert all(isinstance(event, Data) for event in events)
    assert b"".join(event.payload for event in events if isinstance(event, Data)) == data


@settings(max_examples=300)
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0, max_value=2000), max_size=20))
def test_arbitrary_bytes_never_raise_and_chunking_does_not_matter(data: bytes, cuts: list[int]) -> None:
    parser = TelnetParser()
    chunked: list[TelnetEvent] = []
    for chunk in split(data, cuts):
        chunked += parser.feed(chunk)
        assert parser.buffered <= MAX_SUBNEGOTIATION
    assert normalized(chunked) == normalized(TelnetParser().feed(data))
    # Output never exceeds input: no event invents bytes.
    assert sum(len(e.payload) for e in chunked if isinstance(e, Data | Subnegotiation)) <= len(data)


@given(st.binary(min_size=1, max_size=400).map(lambda b: b.replace(b"\xff", b"")))
def test_iac_heavy_garbage_is_bounded(body: bytes) -> None:
    parser = TelnetParser()
    for _ in range(50):
        parser.feed(bytes([IAC, SB]) + body * 3)
        assert parser.buffered <= MAX_SUBNEGOTIATION


def test_negotiator_accepts_supported_and_refuses_others() -> None:
    options = OptionNegotiator(local=frozenset({BINARY}), remote=frozenset({BINARY, COM_PORT_OPTION}))
    assert options.receive(DO, BINARY) == bytes([IAC, WILL, BINARY])
    assert options.enabled(BINARY, local=True)
    assert options.receive(DO, BINARY) == b""  # already on: no reply, so no loop
    assert options.receive(WILL, COM_PORT_OPTION) == bytes([IAC, DO, COM_PORT_OPTION])
    assert options.receive(DO, 1) == bytes([IAC, WONT, 1])  # ECHO: refused
    assert options.receive(WILL, 24) == bytes([IAC, DONT, 24])
    assert options.receive(DONT, BINARY) == bytes([IAC, WONT, BINARY])
    assert not options.enabled(BINARY, local=True)
    assert options.receive(DONT, BINARY) == b""


def test_negotiator_answer_to_our_request_needs_no_reply() -> None:
    options = OptionNegotiator(local=frozenset({SGA}), remote=frozenset({COM_PORT_OPTION}))
    assert options.request_all() == bytes([IAC, WILL, SGA, IAC, DO, COM_PORT_OPTION])
    assert options.receive(DO, SGA) == b""
    assert options.receive(WILL, COM_PORT_OPTION) == b""
    assert options.enabled(SGA, local=True) and options.enabled(COM_PORT_OPTION, local=False)
    assert options.request_all() == b""  # nothing left to ask


@given(st.lists(st.tuples(st.sampled_from([WILL, WONT, DO, DONT]), st.integers(0, 255)), max_size=200))
def test_negotiator_replies_at_most_once_per_message(messages: list[tuple[int, int]]) -> None:
    options = OptionNegotiator(local=frozenset({BINARY, SGA}), remote=frozenset({BINARY, COM_PORT_OPTION}))
    for verb, option in messages:
        assert len(options.receive(verb, option)) in (0, 3)
