"""The cryptographic primitives of secure aggregation, all from the `cryptography` library:
X25519 key agreement, HKDF-SHA256 key derivation, AES-GCM for the secret shares that
travel through the server, and ChaCha20 as the PRG that expands a 32-byte seed to a mask.
"""

from __future__ import annotations

import functools

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
_ZERO_NONCE = bytes(16)

__all__ = [
    "InvalidSignature",
    "InvalidTag",
    "agree",
    "decrypt",
    "derive",
    "encrypt",
    "expand_mask",
    "keypair",
    "sign",
    "verify",
]


def derive(secret: bytes, label: bytes, length: int = KEY_BYTES) -> bytes:
    """A key for one purpose (`label`) from a secret; different labels give unrelated keys."""
    return HKDF(hashes.SHA256(), length, salt=None, info=label).derive(secret)


def keypair(private_bytes: bytes) -> tuple[X25519PrivateKey, bytes]:
    """An X25519 key pair from 32 secret bytes, with its public key as raw bytes."""
    private = X25519PrivateKey.from_private_bytes(private_bytes)
    return private, private.public_key().public_bytes_raw()


def agree(private: X25519PrivateKey, peer_public: bytes, label: bytes) -> bytes:
    """The 32-byte key two parties share: X25519 then HKDF (both sides get the same key)."""
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return derive(shared, label)


def encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """AES-256-GCM: the ciphertext carries a tag, so any change is detected on decrypt."""
    return AESGCM(key).encrypt(nonce, plaintext, associated)


def decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes:
    """Raises cryptography.exceptions.InvalidTag when the ciphertext or its context was
    tampered with."""
    return AESGCM(key).decrypt(nonce, ciphertext, associated)


def sign(identity: Ed25519PrivateKey, message: bytes) -> bytes:
    """An Ed25519 signature by a client's long-term identity."""
    return identity.sign(message)


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Does `signature` verify `message` under the raw Ed25519 public key?"""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def expand_mask(seed: bytes, length: int, dtype: np.dtype) -> np.ndarray:
    """`length` uniform words of `dtype`: the ChaCha20 keystream of `seed`. A fresh key per
    seed makes the all-zero nonce safe. The keystream is written straight into the array."""
    size = length * np.dtype(dtype).itemsize
    encryptor = Cipher(algorithms.ChaCha20(seed, _ZERO_NONCE), mode=None).encryptor()
    out = np.empty(size, dtype=np.uint8)
    encryptor.update_into(memoryview(_zeros(size)), out)
    return out.view(dtype)


@functools.lru_cache(maxsize=4)
def _zeros(size: int) -> np.ndarray:
    """A shared read-only zero buffer: the plaintext whose encryption is the keystream."""
    zeros = np.zeros(size, dtype=np.uint8)
    zeros.flags.writeable = False
    return zeros
