# -*- test-case-name: tests.test_bbs_client,tests.test_bastion_docker -*-
"""
The seams of diegossh: every piece an operator or a test may swap is named here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.interfaces import ITransport
from zope.interface import Attribute, Interface


class ISessionTransport(ITransport):
    """
    What a program served in Python inside a session channel (scp, sftp) writes to.

    It is an ordinary transport (C{write}, C{writeSequence}, C{loseConnection},
    C{registerProducer}, C{pauseProducing}, ...) plus the one thing a process has
    that a socket has not: an exit status. Flow control is real: a producer
    registered here is paused while the client's window is closed, and
    C{pauseProducing} on the transport stops delivery of client data.
    The protocol learns of the client's EOF through
    L{twisted.internet.interfaces.IHalfCloseableProtocol.readConnectionLost}.
    """

    def exit(status: int) -> None:
        """
        End the program with C{status}: everything written so far is delivered,
        then the exit status, then EOF and close.
        """


class ILRPDirectory(Interface):
    """
    Finds where a long-running process's SSH endpoint lives (BBS, or a local table).
    """

    def lookup(processGuid: str, index: int) -> object:
        """
        Return a L{Deferred} firing with a L{diegossh.proxy.target.LRPTarget}, or
        failing with L{diegossh.proxy.errors.LoginDenied} (with a reason a user may
        see) when there is no such instance, no C{diego-ssh} route, or no port
        mapping for the route's container port.
        """


class IAuthRealm(Interface):
    """
    An auth realm: a username prefix (C{diego}, C{cf}, ...) and how a login in it
    becomes a target. Realms are the seam operators extend with plugins.
    """

    name = Attribute("The realm's name, the part of the username before the colon.")

    def resolve(subject: str, password: bytes) -> object:
        """
        Check the login C{name:subject} with C{password} and find its target.

        Return a L{Deferred} firing with a L{diegossh.proxy.login.LoginResult},
        or failing with L{diegossh.proxy.errors.LoginDenied}. A realm must reject
        a malformed C{subject} before any network call, and compare secrets in
        constant time.
        """


class IRealmPlugin(Interface):
    """
    An auth realm as a Twisted plugin: found with C{twisted.plugin.getPlugins}
    in C{twisted.plugins}, enabled with C{--realm NAME}. A provider must also
    provide L{twisted.plugin.IPlugin}, or Twisted's plugin cache skips it.

    Everything the proxy reads from a plugin is declared here; what a
    realm author imports is in L{diegossh.proxy.realms}. C{environment},
    C{secrets} and C{usesDirectory} are optional: the proxy reads them with
    the defaults given below.
    """

    name = Attribute("The realm's name: the username prefix and the --realm value.")
    description = Attribute("One line for --help.")
    settings = Attribute(
        "The realm's own options, which become flags of the proxy and keys of its "
        "--config file: a dict of flag name to (JSON key, kind, default), as in "
        "L{diegossh.proxy.config.SETTINGS}. The kind says how a value is read and "
        "what the realm gets: 'str' (text, as given), 'bool' (a switch: true or false "
        "in the config file or a variable, a bare --flag on the command line), "
        "'duration' (seconds as a float, from 10s, 5m, 1m30s, 300ms or a bare number), "
        "'count' (a whole number of at least 1), 'size' (a whole number, 0 allowed: "
        "Go's zero value, the library's default), 'object' (a JSON object; as a flag, "
        "JSON text), 'deprecated' (any JSON value: accepted, warned about at start-up, "
        "unused). A setting not given is its default, unconverted (often None)."
    )
    environment = Attribute(
        "Optional, default {}: a dict of environment variable to flag, for deployments "
        "configured by variables. A flag beats its variable, which beats the config file."
    )
    secrets = Attribute(
        "Optional, default {}: a dict of flag to environment variable for the settings "
        "that are secrets (as L{diegossh.proxy.config.SECRETS}): each also has a --SFile "
        "setting and a _FILE variable, is moved off the command line at start-up, and its "
        "variable is removed from the proxy's environment once read."
    )
    usesDirectory = Attribute(
        "Optional, default True: whether the realm looks its targets up in the proxy's "
        "LRP directory. With False the proxy needs no --bbsAddress or --lrpDirectory for "
        "it, and build may get None as the directory."
    )

    def parse(settings: Mapping[str, Any]) -> object:
        """
        The realm's own settings, typed and checked, from a read-only view of
        the proxy's merged settings (flag name -> value, the realm's own flags
        among them); called once at start-up, before anything is built.
        Return a frozen value, which L{build} is given; raise L{ValueError}
        naming the flag that is missing or wrong.
        """

    def build(reactor: object, parsed: Any, directory: ILRPDirectory) -> object:
        """
        The realm, from what L{parse} returned, with the reactor and the
        proxy's LRP directory passed in, as a
        L{diegossh.proxy.realms.BuiltRealm}: the realm (an L{IAuthRealm} or an
        L{IKeyRealm}) and the L{twisted.application.service.IService}s it
        needs running (timers, connection pools), which the proxy makes
        children of its own service: they start when the proxy starts and
        stop when it stops. C{build} itself starts nothing.
        """


class IContainerEngine(Interface):
    """
    A container engine's API (Docker, Kubernetes) as the bastion realm needs
    it: which SSH targets run, and a small file read from inside one of them.
    """

    kind = Attribute("C{docker} or C{kubernetes}, for logs.")

    def listTargets() -> object:
        """
        A L{Deferred} firing with a list of L{diegossh.bastion.targets.EngineTarget}:
        the running containers or pods that carry every configured label. Fails
        with L{diegossh.bastion.targets.EngineError} when the API cannot answer.
        """

    def readFile(target: object, path: str) -> object:
        """
        A L{Deferred} firing with the bytes of C{path} inside C{target}, read
        with C{cat} through the engine's exec API (C{~/} is the target user's
        home). Fails with L{diegossh.bastion.targets.EngineError} on a non-zero
        exit, a vanished target, more than 64 KiB, or an API failure.
        """


class IKeyRealm(Interface):
    """
    A realm whose users log in with a public key and whose channels end at the
    proxy itself (no backend login, no relay), such as the container bastion.
    A realm plugin's C{build} may return one of these instead of an
    L{IAuthRealm}.
    """

    name = Attribute("The realm's name, for logs.")

    def authorize(username: str, key: object) -> object:
        """
        A L{Deferred} firing with an opaque grant when C{key} (a
        L{twisted.conch.ssh.keys.Key}) may log in, or failing with
        L{diegossh.proxy.errors.LoginDenied}. Called before the signature is
        checked as well as after, so it must be cheap for a known key and must
        not trust that the client holds the private key.
        """

    def avatarFor(login: object, client: str) -> object:
        """
        The L{twisted.conch.interfaces.IConchUser} for a verified login (a
        L{diegossh.proxy.keylogin.KeyLogin}: the grant, the user name and the
        key's fingerprint) from C{client} (C{host:port}); its C{logout()} is
        called when the connection ends.
        """


class ITCPRouter(Interface):
    """
    Where a C{direct-tcpip} channel (C{ssh -L}, C{-W}, C{-J}) goes, or why it
    may not open: the one thing the daemon's and the bastion's channels differ
    in (L{diegossh.ssh.tcpip.makeDirectTCPIPChannel}).
    """

    def route(host: str, port: int) -> object:
        """
        An L{twisted.internet.interfaces.IStreamClientEndpoint} to connect
        the channel's socket through, or a L{diegossh.ssh.tcpip.Refusal} (the
        reason the client is shown and the SSH open-failure code). Called
        once per channel, before anything connects; C{host} is what the
        client sent (a name or an address), C{port} is in 1..65535.
        """


class IAdmission(Interface):
    """
    Who may start a login, and what a source pays for failing one (OpenSSH's
    C{MaxStartups} and C{PerSourcePenalties}). The listening factory asks
    L{admit} before it builds a connection; the server transport tells the
    rest. Every method takes the server transport, so that which address a
    connection counts as (its socket's peer, or the client behind a load
    balancer) is decided in one place, by the implementation.
    """

    def admit(transport: object) -> bool:
        """
        Whether a new connection may go on to a key exchange. C{False}: it is
        closed at once.
        """

    def opened(transport: object) -> None:
        """
        A connection was admitted and has not logged in yet.
        """

    def authenticated(transport: object) -> None:
        """
        The connection logged in: it no longer counts as unauthenticated.
        """

    def penalise(transport: object, reason: str) -> None:
        """
        The connection's source did something that costs it: C{reason} is one
        of C{"authfail"} (a failed login attempt), C{"grace"} (no login within
        the grace time), C{"protocol"} (garbage before login).
        """

    def closed(transport: object) -> None:
        """
        The connection ended (authenticated or not).
        """


class IConnectionTelemetry(Interface):
    """
    What the proxy tells a platform's telemetry about relayed connections
    (Loggregator's app logs and the C{ssh-connections} gauge, see
    docs/loggregator.md). Called on the reactor thread; must never block.
    """

    def connectionRelayed(client: str, target: object) -> Callable[[], None]:
        """
        The connection from C{client} (C{ip:port}, IPv6 bracketed) now
        reaches C{target}, the login's target (an
        L{diegossh.proxy.target.LRPTarget} for Diego's realms).

        @return: a callable taking no argument, called once when the
            connection ends.
        """


class ISSHMetrics(Interface):
    """
    What an SSH server (the proxy's user-facing side, the daemon) counts for
    an operator's metrics (docs/operations.md, "Metrics"). Called on the
    reactor thread; must be cheap and never block. Every text argument is one
    of a small fixed set (the caller maps peer-chosen text to it first): no
    user name, guid or address ever reaches an implementation.
    """

    def connectionOpened() -> None:
        """
        A connection was admitted and its transport started.
        """

    def connectionClosed() -> None:
        """
        An admitted connection ended.
        """

    def refused(reason: str) -> None:
        """
        A connection was closed at accept, before any byte: C{reason} is
        C{"penalty"}, C{"per_source"} or C{"max_startups"}.
        """

    def penalised(reason: str) -> None:
        """
        A source was charged a penalty when its connection ended without
        logging in: C{reason} is C{"authfail"}, C{"grace"}, C{"protocol"}
        or C{"noauth"}.
        """

    def keyExchange(algorithm: str, initial: bool) -> None:
        """
        A key exchange finished with C{algorithm} (one our policy offers);
        C{initial} for a connection's first, else a rekey.
        """

    def login(realm: str, outcome: str, reason: str) -> None:
        """
        A login attempt ended: C{outcome} is C{"success"} or C{"failure"};
        C{reason} is C{"none"} on success, else one of a fixed set
        (C{"credentials"}, C{"lookup"}, C{"backend"}, C{"internal"}).
        """

    def channelOpened(kind: str) -> None:
        """
        A channel of type C{kind} (one of L{diegossh.ssh.metrics.CHANNEL_TYPES},
        or C{"other"}) is open.
        """

    def channelClosed(kind: str) -> None:
        """
        A channel counted by L{channelOpened} ended.
        """


class IProxyMetrics(ISSHMetrics):
    """
    What the proxy counts besides its SSH server's figures.
    """

    def sessionRelayed(realm: str, relay: object) -> Callable[[], None]:
        """
        A login of C{realm} now relays through C{relay} (whose
        C{bytesFromClient} and C{bytesFromBackend} grow as it relays).

        @return: called once when the session ends.
        """

    def backendDial(seconds: float, outcome: str) -> None:
        """
        Connecting to an instance took C{seconds}: C{outcome} is C{"success"},
        C{"timeout"} or C{"failure"}.
        """

    def backendLogin(seconds: float, outcome: str) -> None:
        """
        The SSH login to an instance, from the connection to its answer,
        took C{seconds}; C{outcome} as for L{backendDial}.
        """

    def httpCall(service: str, seconds: float, outcome: str) -> None:
        """
        A call to C{service} (C{"bbs"}, C{"uaa"}, C{"cloud_controller"})
        took C{seconds}: C{outcome} is its status class (C{"2xx"} ...
        C{"5xx"}) or C{"failed"} (no answer: refused, timed out, TLS).
        """

    def workerEnded(slot: int, restarting: bool) -> None:
        """
        The C{--workers} process in C{slot} (1 to N-1) ended; C{restarting}
        when another is being started in its place (not at shutdown).
        """

    def draining() -> None:
        """
        This process began to drain (the first SIGTERM): from now on until
        it exits, a scrape shows it, so a drain that never ends can be told
        from one that does.
        """
