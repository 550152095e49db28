"""
A seeded, bounded mutation fuzzer for the SSH services' parsers of peer data.

A case is one real session, scripted with our own client transport: log in,
then play one scenario (a session with env, pty-req and exec; SFTP; scp in
both directions; global requests; a direct-tcpip channel) message by message,
waiting for each answer as a real client would. Exactly one message of the
case is mutated: truncated, a byte flipped, a length field set to 0, 2**32-1
or one more than it says, a huge length inserted, its message number swapped,
junk appended. For channel data carrying an SFTP packet or an scp record the
mutation may also hit the inner message (with the channel's own length kept
right), so it reaches the SFTP and scp parsers rather than the channel layer.
Pre-login messages (KEXINIT, the key exchange, the service request, the
userauth requests) are mutated on their way out of the client transport.

After the mutated message the case checks, each within L{BOUND} seconds:
  - the connection still works (a new channel open is answered) or it ended
    with a disconnect carrying a reason other than "internal error"; before
    login, the server may also answer the mutated message (UNIMPLEMENTED, a
    refusal) and then wait for what our client will not send;
  - the scenario's channel, if any, ends when told (EOF, then CLOSE);
  - the services logged no traceback, nothing at level error or critical
    (bar the peer's own disconnect, which Conch logs as an error), nothing
    with the mutated payload in it, and no "couldn't handle" line;
  - the next case logs in afresh (the last case is followed by one more login).
"""

from __future__ import annotations

import random
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.conch.ssh import common, service, userauth
from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from tests.support.fuzz_scenarios import (
    BOUND,
    MAX_PACKET,
    MSG_CHANNEL_CLOSE,
    MSG_CHANNEL_EOF,
    MSG_CHANNEL_OPEN,
    MSG_CHANNEL_OPEN_CONFIRMATION,
    MSG_CHANNEL_OPEN_FAILURE,
    MSG_DISCONNECT,
    MSG_KEXINIT,
    MSG_NEWKEYS,
    NS,
    PROBE,
    SCENARIOS,
    SWAP_TYPES,
    WINDOW,
    Context,
    FuzzConnection,
    either,
    forOurs,
    reactor,
    u32,
    withTimeout,
)
from tests.support.sshclient import LoginClient, PublicKeyAuth, inject

# a login nobody tampered with may take this long on a loaded machine
LOGIN_BOUND = 15.0
OPEN_ANSWERS = (MSG_CHANNEL_OPEN_CONFIRMATION, MSG_CHANNEL_OPEN_FAILURE)

# -- mutations


@dataclass(frozen=True)
class Mutation:
    """
    One change to one message. Offsets past the end of the actual payload
    are clamped, so a mutation planned on a sample payload applies to the
    live one (whose random parts may differ) all the same.
    """

    kind: str
    offset: int = 0
    value: int = 0
    inner: bool = False

    def apply(self, messageType: int, payload: bytes) -> tuple[int, bytes]:
        p = bytearray(payload)
        at = min(self.offset, len(p))
        if self.kind == "truncate":
            del p[at:]
        elif self.kind == "flip":
            if p:
                p[min(at, len(p) - 1)] ^= self.value or 0xFF
        elif self.kind == "setu32":
            at = min(at, max(len(p) - 4, 0))
            old = struct.unpack(">L", bytes(p[at : at + 4]).ljust(4, b"\0"))[0]
            value = (old + 1) & 0xFFFFFFFF if self.value == -1 else self.value
            p[at : at + 4] = u32(value)
        elif self.kind == "insertu32":
            p[at:at] = u32(self.value)
        elif self.kind == "append":
            p += random.Random(self.value).randbytes(1 + self.value % 64)
        elif self.kind == "swap":
            return self.value, bytes(p)
        else:
            raise ValueError(self.kind)
        return messageType, bytes(p)

    def describe(self) -> str:
        where = "inner " if self.inner else ""
        if self.kind == "truncate":
            return f"{where}truncate at {self.offset}"
        if self.kind == "flip":
            return f"{where}xor 0x{self.value:02x} at {self.offset}"
        if self.kind == "setu32":
            value = "old+1" if self.value == -1 else f"0x{self.value:x}"
            return f"{where}uint32 at {self.offset} := {value}"
        if self.kind == "insertu32":
            return f"{where}insert uint32 0x{self.value:x} at {self.offset}"
        if self.kind == "append":
            return f"{where}append {1 + self.value % 64} junk bytes (seed {self.value})"
        return f"message number -> {self.value}"


def lengthOffsets(payload: bytes) -> list[int]:
    """
    Offsets of uint32s that could be string lengths (they fit what follows).
    """
    out = []
    for i in range(len(payload) - 3):
        (value,) = struct.unpack(">L", payload[i : i + 4])
        if value <= len(payload) - i - 4:
            out.append(i)
    return out


def planMutations(
    rng: random.Random, messageType: int, payload: bytes, count: int, inner: bool = False
) -> list[Mutation]:
    """
    Up to C{count} distinct mutations of one message: truncations (at every
    offset when the message is short), flips, length fields set to 0,
    2**32-1, one more and 2**31, huge inserted lengths, swapped message
    numbers, appended junk.
    """
    n = len(payload)
    candidates: list[Mutation] = []
    cuts = list(range(n)) if n <= 48 else sorted({0, 1, 4, 5, n - 1, *rng.sample(range(n), 24)})
    truncations = [Mutation("truncate", i, inner=inner) for i in cuts]
    rng.shuffle(truncations)
    lengths = lengthOffsets(payload)
    setters = [
        Mutation("setu32", i, v, inner=inner)
        for i in lengths
        for v in (0, 0xFFFFFFFF, -1, 0x80000000)
    ]
    rng.shuffle(setters)
    masks = [0x01, 0x80, 0xFF, rng.randrange(1, 256)]
    flips = [
        Mutation("flip", rng.randrange(max(n, 1)), rng.choice(masks), inner=inner)
        for _ in range(count)
    ]
    inserts = [
        Mutation("insertu32", rng.randrange(n + 1), rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 1 << 24]),
                 inner=inner)
        for _ in range(2)
    ]  # fmt: skip
    appends = [Mutation("append", 0, rng.randrange(1 << 16), inner=inner)]
    swaps = [] if inner else [Mutation("swap", 0, rng.choice(SWAP_TYPES)) for _ in range(2)]
    # interleave so a small count still sees every kind
    pools = [truncations, setters, flips, inserts, appends, swaps]
    while len(candidates) < count and any(pools):
        for pool in pools:
            if pool and len(candidates) < count:
                m = pool.pop(0)
                if m not in candidates:
                    candidates.append(m)
    return candidates


# -- the client side


class PasswordAuth(userauth.SSHUserAuthClient):
    """
    Log in with one password (the proxy's realm logins).
    """

    def __init__(self, user: bytes, instance: service.SSHService, password: bytes) -> None:
        super().__init__(user, instance)
        self._password = password
        self._tried = False

    def getPassword(self, prompt: bytes | None = None) -> defer.Deferred[bytes] | None:
        if self._tried:
            return None
        self._tried = True
        return defer.succeed(self._password)


class FuzzClient(LoginClient):
    """
    Our client transport; C{hook} may replace any outgoing message before it
    is sealed, which is how pre-login messages are mutated.
    """

    hook: Callable[[int, bytes], tuple[int, bytes] | None] | None = None
    password: bytes | None = None
    # how many messages had arrived when the mutated one went out
    receivedAtMutation: int | None = None

    def sendMessage(self, messageType: int, head: bytes, body: bytes | memoryview) -> None:
        if self.hook is not None and not self._closing:
            replaced = self.hook(messageType, bytes(head) + bytes(body))
            if replaced is not None:
                # On the wire at once, whatever the key exchange state: the
                # mutated message must not wait in our own queue.
                self._recordingSetUp()
                self.receivedAtMutation = len(self.received)
                inject(self, replaced[0], replaced[1])
                if messageType == MSG_NEWKEYS:
                    self._sendNewKeysDone()
                return
        super().sendMessage(messageType, head, body)

    def connectionSecure(self) -> None:
        self.secureCount += 1
        assert self.connection is not None
        if self.password is not None:
            self.requestService(PasswordAuth(self.user, self.connection, self.password))
        elif self.key is not None:
            self.requestService(PublicKeyAuth(self.user, self.connection, self.key))


class OutgoingRecorder:
    """
    A hook that records the client's outgoing messages, mutating the
    C{index}-th one when a mutation is given.
    """

    def __init__(self, index: int | None = None, mutation: Mutation | None = None) -> None:
        self.index = index
        self.mutation = mutation
        self.sent: list[tuple[int, bytes]] = []
        self.mutated: tuple[int, bytes] | None = None

    def __call__(self, messageType: int, payload: bytes) -> tuple[int, bytes] | None:
        position = len(self.sent)
        self.sent.append((messageType, payload))
        if position == self.index and self.mutation is not None:
            self.mutated = self.mutation.apply(messageType, payload)
            return self.mutated
        return None


# -- cases


@dataclass(frozen=True)
class Case:
    """
    One mutated message: of scenario C{scenario} (or C{"login"}: the client's
    own pre-login messages), the C{step}-th.
    """

    number: int
    scenario: str
    step: int
    stepName: str
    mutation: Mutation

    def describe(self) -> str:
        return f"#{self.number} {self.scenario}/{self.stepName}: {self.mutation.describe()}"


def sampleContext() -> Context:
    ctx = Context(FuzzConnection(), echoPort=40001, theirs=3, forwardPort=40002)
    ctx.handles = {"file": b"\0\0\0\1", "dir": b"\0\0\0\2"}
    return ctx


def planCases(seed: int, total: int, loginMessages: Sequence[tuple[str, int, bytes]]) -> list[Case]:
    """
    C{total} cases spread evenly over every message of every scenario and the
    C{loginMessages} (name, message number, sample payload), from C{seed}.
    """
    rng = random.Random(seed)
    entries: list[tuple[str, int, str, int, bytes, bytes | None]] = []
    for i, (name, messageType, payload) in enumerate(loginMessages):
        entries.append(("login", i, name, messageType, payload, None))
    ctx = sampleContext()
    for scenario, (steps, _) in SCENARIOS.items():
        for i, step in enumerate(steps()):
            inner = step.content(ctx) if step.content is not None else None
            entries.append((scenario, i, step.name, step.messageType, step.build(ctx), inner))
    perEntry = max(1, -(-total // len(entries)))
    planned: list[tuple[str, int, str, Mutation]] = []
    for scenario, i, name, messageType, payload, inner in entries:
        if inner is None:
            mutations = planMutations(rng, messageType, payload, perEntry)
        else:
            half = perEntry // 2
            mutations = planMutations(rng, messageType, payload, perEntry - half)
            mutations += planMutations(rng, messageType, inner, half, inner=True)
        planned += [(scenario, i, name, m) for m in mutations]
    rng.shuffle(planned)
    planned = planned[:total]
    return [Case(n, s, i, name, m) for n, (s, i, name, m) in enumerate(planned)]


# -- log checks


_BAD_LINE = re.compile(r"#(error|critical)\]|Traceback|Unhandled|couldn't handle")
# A peer's own disconnect is logged with the description the peer gave (its
# message to us, whatever bytes it chose, bounded and escaped): the peer's
# news, not a failure of ours, nor a payload we chose to log.
_PEER_DISCONNECT = re.compile(r"\] \S+ disconnected: .* \(code \d+\)$", re.S)


class LogWatcher:
    """
    Reads what a service logged since the last look, across twistd's log
    rotation (at 1 MB the file becomes C{NAME.1} and a new one starts).
    """

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self._inode, self._offset = self._where()

    def _where(self) -> tuple[int, int]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return 0, 0
        return st.st_ino, st.st_size

    def _readFrom(self, path: Path, offset: int) -> bytes:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return b""

    def read(self) -> str:
        inode, _ = self._where()
        data = b""
        if inode != self._inode:
            # rotated: the rest of the old file, then the new one from its start
            data = self._readFrom(self.path.with_name(self.path.name + ".1"), self._offset)
            self._inode, self._offset = inode, 0
        new = self._readFrom(self.path, self._offset)
        self._offset += len(new)
        return (data + new).decode("utf-8", "replace")

    def problems(self, payloads: Sequence[bytes]) -> list[str]:
        """
        Lines (with their continuation lines) that carry a traceback, an
        error, or a mutated payload.
        """
        text = self.read()
        out = []
        reprs = [repr(p)[2:-1] for p in payloads if len(p) >= 12]
        entries = re.split(r"\n(?=\d{4}-\d\d-\d\dT)", text)
        for entry in entries:
            if not entry.strip():
                continue
            if _PEER_DISCONNECT.search(entry.rstrip()):
                continue
            bad = bool(_BAD_LINE.search(entry)) or any(r in entry for r in reprs)
            if bad:
                out.append(f"[{self.name}] {entry[:4000]}")
        return out


# -- running a case


class EchoServer(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


@dataclass
class Target:
    """
    Where and how to log in: the daemon with a key, or the proxy with a
    password; the logs to watch.
    """

    port: int
    user: bytes
    key: Any = None
    password: bytes | None = None
    logs: list[LogWatcher] = field(default_factory=list)
    echoPort: int = 0


@dataclass
class Outcome:
    case: Case
    problems: list[str]
    seconds: float
    ended: str = ""
    payloads: list[bytes] = field(default_factory=list)
    # the mutated message as it went out: number and payload
    sent: tuple[int, bytes] | None = None

    def describeSent(self) -> str:
        if self.sent is None:
            return "(not sent)"
        messageType, payload = self.sent
        return f"message {messageType}, payload {payload[:160].hex()}" + (
            f"... ({len(payload)} bytes)" if len(payload) > 160 else ""
        )


async def connect(target: Target, hook: Any = None) -> tuple[FuzzClient, FuzzConnection]:
    client = FuzzClient()
    client.user = target.user
    client.key = target.key
    client.password = target.password
    client.connection = conn = FuzzConnection()
    client.clock = reactor()
    client.hook = hook
    endpoint = TCP4ClientEndpoint(reactor(), "127.0.0.1", target.port, timeout=int(BOUND))
    await withTimeout(connectProtocol(endpoint, client))
    return client, conn


async def recordLogin(target: Target) -> list[tuple[str, int, bytes]]:
    """
    The client's own messages up to login, as they went out in a clean session.
    """
    recorder = OutgoingRecorder()
    client, conn = await connect(target, recorder)
    await withTimeout(conn.started)
    client.transport.loseConnection()
    await withTimeout(client.lost)
    names = {20: "KEXINIT", 21: "NEWKEYS", 30: "KEX_INIT", 5: "SERVICE_REQUEST", 50: "USERAUTH"}
    out = []
    for messageType, payload in recorder.sent:
        name = names.get(messageType, str(messageType))
        if messageType == 50:
            _, _, method, rest = common.getNS(payload, 3)
            signed = method == b"publickey" and rest[:1] == b"\1"
            name = f"USERAUTH {method.decode()}" + (" signed" if signed else "")
        out.append((name, messageType, payload))
    return out


async def ended(client: FuzzClient) -> bool:
    """
    Whether the connection ends within the bound (it is dropped if not).
    """
    try:
        await withTimeout(client.lost)
        return True
    except defer.TimeoutError:
        return False


def _endedCleanly(client: FuzzClient, sent: int) -> str | None:
    """
    A problem with how the connection ended, or None; C{sent} is the number
    of the mutated message.
    """
    received = client.disconnectReceived
    if received is None:
        if client.disconnectSent is not None:
            return None  # our own client gave up (a mutated key exchange)
        if sent == MSG_DISCONNECT:
            return None  # we said goodbye ourselves
        return "connection dropped without a disconnect reason"
    if not received[1]:
        return f"disconnect {received[0]} without a reason"
    if received[1] == b"internal error":
        return "disconnect: internal error"
    return None


async def runCase(target: Target, case: Case, checkLogs: bool = True) -> Outcome:
    started = reactor().seconds()
    problems: list[str] = []
    payloads: list[bytes] = []
    sent: list[tuple[int, bytes]] = []
    endedHow = ""
    recorder = OutgoingRecorder(case.step, case.mutation) if case.scenario == "login" else None
    client, conn = await connect(target, recorder)
    try:
        endedHow = await _play(target, case, client, conn, recorder, problems, payloads, sent)
    finally:
        if not client.lost.called:
            client.transport.abortConnection()
            await withTimeout(client.lost)
    if recorder is not None and recorder.mutated is not None:
        payloads.append(recorder.mutated[1])
        sent.append(recorder.mutated)
    if checkLogs:
        for watcher in target.logs:
            problems += watcher.problems(payloads)
    elapsed = reactor().seconds() - started
    return Outcome(case, problems, elapsed, endedHow, payloads, sent[0] if sent else None)


async def runCases(target: Target, cases: Sequence[Case], concurrency: int) -> list[Outcome]:
    """
    Run C{cases} C{concurrency} at a time. The logs are read after each
    batch; when they show a problem, the batch's cases are run again one by
    one so each problem is pinned on its case.
    """
    outcomes: list[Outcome] = []
    for start in range(0, len(cases), concurrency):
        batch = cases[start : start + concurrency]
        results: list[Outcome] = await defer.gatherResults(
            [defer.ensureDeferred(runCase(target, case, checkLogs=False)) for case in batch]
        )
        payloads = [p for outcome in results for p in outcome.payloads]
        logged = [p for watcher in target.logs for p in watcher.problems(payloads)]
        if logged:
            again = [await runCase(target, case) for case in batch]
            if not any(outcome.problems for outcome in again):
                again[0].problems += ["(seen only with the batch running concurrently)", *logged]
            for first, second in zip(results, again, strict=True):
                first.problems = sorted(set(first.problems) | set(second.problems))
        outcomes += results
    return outcomes


async def _loginSettles(client: FuzzClient, loggedIn: defer.Deferred[None]) -> bool:
    """
    After a mutated pre-login message: whether, within the bound, the login
    ends either way, or the server answers something after the mutated
    message (other than its KEXINIT) and then nothing more comes for a second.
    """
    deadline = reactor().seconds() + BOUND
    lastCount, lastChange = -1, reactor().seconds()
    while not loggedIn.called and reactor().seconds() < deadline:
        at = client.receivedAtMutation
        count = len(client.received)
        if count != lastCount:
            lastCount, lastChange = count, reactor().seconds()
        answered = at is not None and any(num != MSG_KEXINIT for _, num in client.received[at:])
        if answered and reactor().seconds() - lastChange >= 1.0:
            return True
        await task.deferLater(reactor(), 0.1, lambda: None)
    return loggedIn.called


async def _play(
    target: Target,
    case: Case,
    client: FuzzClient,
    conn: FuzzConnection,
    recorder: OutgoingRecorder | None,
    problems: list[str],
    payloads: list[bytes],
    sent: list[tuple[int, bytes]],
) -> str:
    loggedIn = either(conn.started, client.lost)
    if recorder is None:
        try:
            await withTimeout(loggedIn, LOGIN_BOUND)
        except defer.TimeoutError:
            problems.append("an unmutated login did not finish")
            return "login failed"
    elif not await _loginSettles(client, loggedIn):
        problems.append("neither logged in nor disconnected within the bound")
        return "hang"
    elif not loggedIn.called:
        # The server answered (UNIMPLEMENTED, a refusal, its part of the key
        # exchange) and now waits for what our client will not send.
        return "answered before login"
    if client.lost.called:
        if recorder is None or recorder.mutated is None:
            problems.append(f"login failed: {client.disconnectReceived}")
            return "login failed"
        problem = _endedCleanly(client, recorder.mutated[0])
        if problem:
            problems.append(problem)
        return "disconnected before login"
    ctx = Context(conn, target.echoPort)
    stepsOf, ending = SCENARIOS.get(case.scenario, (lambda: [], "close"))
    ctx.ending = ending
    steps = stepsOf() if case.scenario != "login" else []
    for i, step in enumerate(steps):
        messageType, payload = step.messageType, step.build(ctx)
        if i == case.step:
            if case.mutation.inner:
                assert step.content is not None
                _, inner = case.mutation.apply(messageType, step.content(ctx))
                payloads.append(inner)
                payload = step.wrap(ctx, inner)
            else:
                messageType, payload = case.mutation.apply(messageType, payload)
            ctx.sentType = messageType
            conn.send(messageType, payload)
            payloads.append(payload)
            if step.content is not None:
                payloads.append(step.content(ctx))
            sent.append((messageType, payload))
            if step.messageType == MSG_CHANNEL_OPEN:
                ctx.channelOpen = True  # perhaps: the check below finds out
            break
        mark = len(conn.messages)
        conn.send(messageType, payload)
        if step.content is not None:
            payloads.append(step.content(ctx))  # no log may show it either
        if step.settle is not None:
            try:
                await step.settle(ctx, mark)
            except defer.TimeoutError:
                problems.append(f"unmutated step {step.name!r} not answered within the bound")
                return "hang"
        if client.lost.called:
            why = client.disconnectReceived
            problems.append(f"disconnected at unmutated step {step.name!r}: {why}")
            return "disconnected"
    return await _checkAlive(client, conn, ctx, problems)


async def _answeredOrLost(answer: defer.Deferred[Any], client: FuzzClient) -> bool:
    """
    Whether C{answer} fired or the connection ended within the case timeout.
    """
    try:
        await withTimeout(either(answer, client.lost))
    except defer.TimeoutError:
        return False
    return True


async def _checkAlive(
    client: FuzzClient, conn: FuzzConnection, ctx: Context, problems: list[str]
) -> str:
    # 1. the connection: a new channel open is answered (or it ended cleanly)
    mark = len(conn.messages)

    def probeAnswered(num: int, packet: bytes) -> bool:
        return num in OPEN_ANSWERS and packet[:4] == u32(PROBE)

    conn.send(MSG_CHANNEL_OPEN, NS("session") + struct.pack(">3L", PROBE, WINDOW, MAX_PACKET))
    answer = conn.after(mark, probeAnswered)
    if not await _answeredOrLost(answer, client):
        problems.append("the connection neither answered a channel open nor ended")
        return "hang"
    if client.lost.called:
        problem = _endedCleanly(client, ctx.sentType)
        if problem:
            problems.append(problem)
        return "disconnected"
    # 2. the scenario's channel ends when told to
    if ctx.channelOpen:
        confirmed = conn.seen(forOurs(MSG_CHANNEL_OPEN_CONFIRMATION))
        if confirmed is not None:
            theirs = struct.unpack(">L", confirmed[4:8])[0]
            mark = len(conn.messages)
            closedByThem = conn.seen(forOurs(MSG_CHANNEL_CLOSE)) is not None
            if ctx.ending == "eof" and ctx.started and not closedByThem:
                conn.send(MSG_CHANNEL_EOF, u32(theirs))
                closing = conn.until(forOurs(MSG_CHANNEL_CLOSE))
                if not await _answeredOrLost(closing, client):
                    problems.append("the channel did not close after EOF")
                    return "hang"
            if not client.lost.called:
                mark = len(conn.messages)
                conn.send(MSG_CHANNEL_CLOSE, u32(theirs))
                closing = conn.until(forOurs(MSG_CHANNEL_CLOSE))
                if not await _answeredOrLost(closing, client):
                    problems.append("the channel did not answer CLOSE")
                    return "hang"
    if client.lost.called:
        problem = _endedCleanly(client, ctx.sentType)
        if problem:
            problems.append(problem)
        return "disconnected"
    # the probe answered after everything sent before it: the logs are complete
    mark = len(conn.messages)
    conn.send(MSG_CHANNEL_OPEN, NS("session") + struct.pack(">3L", PROBE + 1, WINDOW, MAX_PACKET))
    last = conn.after(mark, lambda n, p: n in OPEN_ANSWERS and p[:4] == u32(PROBE + 1))
    if not await _answeredOrLost(last, client):
        problems.append("the connection stopped answering after the channel closed")
        return "hang"
    client.transport.loseConnection()
    await ended(client)
    return "alive"


def signatureOf(problem: str) -> str:
    """
    A short name for a problem: a traceback's innermost frame and exception,
    or the problem's own first line.
    """
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\w+)', problem)
    if frames:
        path, line, function = frames[-1]
        last = [x for x in problem.strip().splitlines() if x.strip()][-1].strip()
        return f"{Path(path).name}:{line} {function}: {last[:100]}"
    first = problem.splitlines()[0]
    if first.startswith("["):
        # a log line: its time, numbers and the peer's bytes differ from case
        # to case; the problem is the same
        first = re.sub(r"^\[([^]]+)\] \S+ ", r"[\1] ", first)
        first = re.sub(r"""b(['"]).*""", r"b\1...\1", first)
        first = re.sub(r"(?<=[ :])\d+\b", "N", first)
    return first[:160]


def distinctProblems(failed: Sequence[Outcome]) -> dict[str, tuple[Outcome, int]]:
    out: dict[str, tuple[Outcome, int]] = {}
    for outcome in failed:
        for problem in outcome.problems:
            if "Traceback" not in problem and re.search(r"#critical\] *$", problem.strip()):
                continue  # the continuation of a traceback reported on its own line
            key = signatureOf(problem)
            first, count = out.get(key, (outcome, 0))
            out[key] = (first, count + 1)
    return out
