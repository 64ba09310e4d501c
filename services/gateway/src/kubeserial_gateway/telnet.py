"""Telnet framing (RFC 854, 855) as a sans-I/O codec: bytes in, events out, no sockets.

Both ends of RFC 2217 use it: the gateway's server and the bridge's client. The data path does no
per-byte Python work: a chunk without IAC passes through as is, a chunk whose IACs are all doubled
is undone with one bytes.replace, and otherwise each run of IACs is handled at once (a regex finds
it), so even long 0xFF runs cost one step per run.

Malformed input never raises: it becomes a ProtocolError event and parsing carries on. Memory is
bounded: a subnegotiation longer than MAX_SUBNEGOTIATION is dropped (and reported) rather than
buffered, and nothing else is kept between calls.
"""

import re
from dataclasses import dataclass
from enum import Enum
from typing import Final

IAC: Final = 255
DONT: Final = 254
DO: Final = 253
WONT: Final = 252
WILL: Final = 251
SB: Final = 250
SE: Final = 240
BRK: Final = 243
NOP: Final = 241

# Options KubeSerial negotiates.
BINARY: Final = 0
ECHO: Final = 1
SGA: Final = 3
COM_PORT_OPTION: Final = 44

IAC_BYTE: Final = b"\xff"
IAC_IAC: Final = b"\xff\xff"
MAX_SUBNEGOTIATION: Final = 256  # the longest RFC 2217 subnegotiation is a short signature text
VERBS: Final = frozenset({WILL, WONT, DO, DONT})

_IAC_RUN = re.compile(b"\xff+")


def escape(data: bytes) -> bytes:
    """Double every IAC so the peer reads `data` as data."""
    return data.replace(IAC_BYTE, IAC_IAC) if IAC_BYTE in data else data


def negotiation(verb: int, option: int) -> bytes:
    return bytes((IAC, verb, option))


def subnegotiation(option: int, payload: bytes) -> bytes:
    return bytes((IAC, SB, option)) + escape(payload) + bytes((IAC, SE))


@dataclass(frozen=True, slots=True)
class Data:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Command:
    """A two-byte command such as NOP, BRK or AYT."""

    code: int


@dataclass(frozen=True, slots=True)
class Negotiation:
    verb: int  # WILL, WONT, DO or DONT
    option: int


@dataclass(frozen=True, slots=True)
class Subnegotiation:
    option: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class ProtocolError:
    reason: str


TelnetEvent = Data | Command | Negotiation | Subnegotiation | ProtocolError


class _State(Enum):
    DATA = 0
    IAC = 1  # after IAC
    VERB = 2  # after IAC WILL/WONT/DO/DONT, waiting for the option byte
    SB = 3  # inside a subnegotiation
    SB_IAC = 4  # after IAC inside a subnegotiation


class TelnetParser:
    """Incremental parser: `feed` any chunking of the stream, get the same events."""

    def __init__(self) -> None:
        self._state = _State.DATA
        self._verb = 0
        self._sb = bytearray()
        self._sb_overflow = False

    def feed(self, data: bytes) -> list[TelnetEvent]:
        if self._state is _State.DATA:
            if IAC_BYTE not in data:
                return [Data(data)] if data else []
            if data.count(IAC_BYTE) == 2 * data.count(IAC_IAC):
                # Every IAC is an escaped data byte (pairs are matched left to right, as telnet does).
                return [Data(data.replace(IAC_IAC, IAC_BYTE))]
        return self._feed_slowly(data)

    def _feed_slowly(self, data: bytes) -> list[TelnetEvent]:
        events: list[TelnetEvent] = []
        pending: list[bytes] = []

        def emit(event: TelnetEvent) -> None:
            if pending:
                events.append(Data(b"".join(pending)))
                pending.clear()
            events.append(event)

        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state is _State.DATA or state is _State.SB:
                run = _IAC_RUN.search(data, pos)
                stop = end if run is None else run.start()
                if state is _State.DATA:
                    if stop > pos:
                        pending.append(data[pos:stop])
                else:
                    self._collect(data[pos:stop])
                if run is None:
                    break
                length = run.end() - run.start()
                if length > 1:
                    literal = IAC_BYTE * (length // 2)
                    if state is _State.DATA:
                        pending.append(literal)
                    else:
                        self._collect(literal)
                if length % 2:
                    self._state = _State.IAC if state is _State.DATA else _State.SB_IAC
                pos = run.end()
            elif state is _State.IAC:
                byte = data[pos]
                pos += 1
                self._state = _State.DATA
                if byte == IAC:  # the pair was split across two chunks
                    pending.append(IAC_BYTE)
                elif byte in VERBS:
                    self._verb = byte
                    self._state = _State.VERB
                elif byte == SB:
                    self._sb.clear()
                    self._sb_overflow = False
                    self._state = _State.SB
                elif byte == SE:
                    emit(ProtocolError("SE outside a subnegotiation"))
                else:
                    emit(Command(byte))
            elif state is _State.VERB:
                emit(Negotiation(self._verb, data[pos]))
                pos += 1
                self._state = _State.DATA
            else:  # SB_IAC: the byte after a lone IAC inside a subnegotiation
                byte = data[pos]
                if byte == IAC:  # an escaped 0xFF split across two chunks
                    pos += 1
                    self._collect(IAC_BYTE)
                    self._state = _State.SB
                elif byte == SE:
                    pos += 1
                    self._state = _State.DATA
                    emit(self._finish_subnegotiation())
                else:
                    # IAC <command> inside SB: the SE never came. Drop the subnegotiation and treat
                    # the byte as the command it is.
                    emit(ProtocolError("subnegotiation not terminated by IAC SE"))
                    self._state = _State.IAC
        if pending:
            events.append(Data(b"".join(pending)))
        return events

    def _collect(self, chunk: bytes) -> None:
        if len(self._sb) + len(chunk) > MAX_SUBNEGOTIATION:
            self._sb_overflow = True
        elif chunk:
            self._sb += chunk

    def _finish_subnegotiation(self) -> TelnetEvent:
        if self._sb_overflow:
            return ProtocolError(f"subnegotiation longer than {MAX_SUBNEGOTIATION} bytes dropped")
        if not self._sb:
            return ProtocolError("empty subnegotiation")
        return Subnegotiation(self._sb[0], bytes(self._sb[1:]))

    @property
    def buffered(self) -> int:
        """Bytes held between calls (bounded by MAX_SUBNEGOTIATION)."""
        return len(self._sb)


class _Side(Enum):
    NO = 0
    YES = 1
    WANT_YES = 2  # we asked, no answer yet


class OptionNegotiator:
    """Which options are on, for each side, without negotiation loops (RFC 1143, simplified).

    `local` are options we perform (we say WILL), `remote` the ones we let the peer perform (we say
    DO). Anything else is refused. Replies are only sent for a change of state, so a peer that
    repeats itself gets at most one reply per request.
    """

    def __init__(self, *, local: frozenset[int], remote: frozenset[int]) -> None:
        self._supported = {True: local, False: remote}
        self._state: dict[tuple[bool, int], _Side] = {}

    def request_all(self) -> bytes:
        """Ask to enable every supported option (sent once, at connect)."""
        out = bytearray()
        for is_local, verb in ((True, WILL), (False, DO)):
            for option in sorted(self._supported[is_local]):
                if self._state.get((is_local, option), _Side.NO) is _Side.NO:
                    self._state[is_local, option] = _Side.WANT_YES
                    out += negotiation(verb, option)
        return bytes(out)

    def enabled(self, option: int, *, local: bool) -> bool:
        return self._state.get((local, option)) is _Side.YES

    def receive(self, verb: int, option: int) -> bytes:
        """Update state for an incoming WILL/WONT/DO/DONT and return the reply, if any."""
        is_local = verb in (DO, DONT)  # DO/DONT are about what *we* perform
        positive = verb in (DO, WILL)
        yes_verb, no_verb = (WILL, WONT) if is_local else (DO, DONT)
        key = (is_local, option)
        current = self._state.get(key, _Side.NO)
        if positive:
            if option not in self._supported[is_local]:
                return negotiation(no_verb, option)
            self._state[key] = _Side.YES
            return negotiation(yes_verb, option) if current is _Side.NO else b""
        self._state[key] = _Side.NO
        return negotiation(no_verb, option) if current is _Side.YES else b""
