# -*- test-case-name: tests.test_transport_unit -*-
"""
Key exchanges diegossh adds to Conch's: the fixed-group Diffie-Hellman methods of
RFC 8268 that OpenSSH offers (C{diffie-hellman-group14-sha256},
C{diffie-hellman-group16-sha512}).

Conch chooses its key-exchange code through a private registry of algorithm
objects (reached through L{diegossh.ssh._conch}); a fixed group needs only its
prime, generator and hash, and Conch's fixed-group code does the rest.
Registering here keeps one implementation of the DH arithmetic (Conch's)
instead of a second of ours. The registration checks the registry still looks
as expected so a Twisted upgrade that changes it fails loudly at start-up, not
at a user's handshake.
"""

from __future__ import annotations

from hashlib import sha256, sha512

from zope.interface import implementer

from diegossh.ssh import _conch

# RFC 3526 section 5: the 4096-bit MODP group, generator 2.
_GROUP16_PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7"
    "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8"
    "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2"
    "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9"
    "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF",
    16,
)


@implementer(_conch.IFixedGroupKexAlgorithm)
class _FixedGroup:
    def __init__(self, preference: int, hashProcessor: object, prime: int) -> None:
        self.preference = preference
        self.hashProcessor = hashProcessor
        self.prime = prime
        self.generator = 2


def install() -> None:
    """
    Make Conch's key exchange know the RFC 8268 groups. Idempotent.
    """
    _, group14 = _conch.fixedGroup(b"diffie-hellman-group14-sha1")
    _conch.registerKeyExchange(b"diffie-hellman-group14-sha256", _FixedGroup(9, sha256, group14))
    _conch.registerKeyExchange(
        b"diffie-hellman-group16-sha512", _FixedGroup(10, sha512, _GROUP16_PRIME)
    )
