"""The payload code: 32 bits + CRC-16 under a K = 7, rate-1/3 convolutional code.

``encode_payload`` turns a 32-bit payload into 162 code bits (48 message bits and 6 zero tail
bits, three outputs each); ``decode_soft`` runs a soft-decision Viterbi decoder over 162 real
values (positive means code bit 0) and checks the CRC. Generators 133, 171, 165 (octal) are the
usual K = 7 rate-1/3 set (free distance 15). The code is linear and zero-terminated, so when the
soft values of an unmarked file are symmetric noise the decoded message is uniform and a CRC
matches with probability 2**-16 (spec/watermark.md §5.5).
"""

from __future__ import annotations

import binascii
from functools import lru_cache

import numpy as np

PAYLOAD_BITS = 32
CRC_BITS = 16
MESSAGE_BITS = PAYLOAD_BITS + CRC_BITS  # 48
CONSTRAINT = 7
MEMORY = CONSTRAINT - 1  # 6 tail bits
GENERATORS = (0o133, 0o171, 0o165)
RATE_INV = len(GENERATORS)
CODED_BITS = (MESSAGE_BITS + MEMORY) * RATE_INV  # 162
N_STATES = 1 << MEMORY  # 64
MODEL_ID_BITS = 8
GENERATION_ID_BITS = PAYLOAD_BITS - MODEL_ID_BITS  # 24


def make_payload(model_id: int, generation_id: int) -> int:
    """Pack an 8-bit model id and a 24-bit generation id into one 32-bit payload."""
    if not 0 <= model_id < 1 << MODEL_ID_BITS:
        raise ValueError(f"model_id must be in [0, {1 << MODEL_ID_BITS}), got {model_id}")
    if not 0 <= generation_id < 1 << GENERATION_ID_BITS:
        raise ValueError(
            f"generation_id must be in [0, {1 << GENERATION_ID_BITS}), got {generation_id}")
    return (model_id << GENERATION_ID_BITS) | generation_id


def split_payload(payload: int) -> tuple[int, int]:
    """Inverse of ``make_payload``: ``(model_id, generation_id)``."""
    check_payload(payload)
    return payload >> GENERATION_ID_BITS, payload & ((1 << GENERATION_ID_BITS) - 1)


def check_payload(payload: int) -> None:
    if not 0 <= payload < 1 << PAYLOAD_BITS:
        raise ValueError(f"payload must be a 32-bit unsigned integer, got {payload}")


def crc16(payload: int) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of the payload's 4 bytes, big-endian."""
    return binascii.crc_hqx(payload.to_bytes(4, "big"), 0xFFFF)


def _int_to_bits(value: int, n_bits: int) -> np.ndarray:
    return np.array([(value >> i) & 1 for i in range(n_bits - 1, -1, -1)], dtype=np.uint8)


def _bits_to_int(bits: np.ndarray) -> int:
    return int("".join(str(int(b)) for b in bits), 2) if len(bits) else 0


def message_bits(payload: int) -> np.ndarray:
    """The 48 message bits: payload (MSB first) then its CRC-16. Shape (48,)."""
    check_payload(payload)
    return np.concatenate([_int_to_bits(payload, PAYLOAD_BITS),
                           _int_to_bits(crc16(payload), CRC_BITS)])


@lru_cache(maxsize=1)
def _trellis() -> tuple[np.ndarray, np.ndarray]:
    """Output symbols (±1) for every (state, input) and the predecessor table.

    The register is ``(u << 6) | state`` with the newest past input in bit 5 of ``state``.
    Returns ``symbols`` (64, 2, 3) float64 and ``prev`` (64, 2) int: the two states that lead to
    each next state (the next state's input bit is its bit 5).
    """
    symbols = np.empty((N_STATES, 2, RATE_INV))
    for state in range(N_STATES):
        for u in (0, 1):
            reg = (u << MEMORY) | state
            for j, g in enumerate(GENERATORS):
                symbols[state, u, j] = 1.0 - 2.0 * (bin(reg & g).count("1") & 1)
    nxt = np.arange(N_STATES)
    prev = np.stack([((nxt & (N_STATES // 2 - 1)) << 1) | b for b in (0, 1)], axis=1)
    symbols.setflags(write=False)
    prev.setflags(write=False)
    return symbols, prev


def conv_encode(bits: np.ndarray) -> np.ndarray:
    """Zero-terminated K = 7 rate-1/3 encoding: (n,) bits → (3·(n + 6),) bits."""
    symbols, _ = _trellis()
    state, out = 0, []
    for u in np.concatenate([bits, np.zeros(MEMORY, dtype=np.uint8)]):
        out.append(symbols[state, int(u)])
        state = (int(u) << (MEMORY - 1)) | (state >> 1)
    return ((1.0 - np.concatenate(out)) / 2).astype(np.uint8)


def viterbi_soft(soft: np.ndarray) -> np.ndarray:
    """Maximum-correlation path for soft values (3·(n + 6),), positive favouring bit 0.
    Returns the n decoded message bits."""
    symbols, prev = _trellis()
    steps = len(soft) // RATE_INV
    y = soft.reshape(steps, RATE_INV)  # (steps, 3)
    # branch[t, s, u]: correlation of the step's soft values with the output of (s, u)
    branch = np.einsum("tj,suj->tsu", y, symbols)  # (steps, 64, 2)
    metric = np.full(N_STATES, -np.inf)
    metric[0] = 0.0
    u_next = np.arange(N_STATES) >> (MEMORY - 1)  # input bit that leads into each next state
    decisions = np.empty((steps, N_STATES), dtype=np.uint8)
    for t in range(steps):
        cand = metric[prev] + branch[t][prev, u_next[:, None]]  # (64, 2)
        choice = np.argmax(cand, axis=1)
        decisions[t] = choice
        metric = cand[np.arange(N_STATES), choice]
    state, bits = 0, np.empty(steps, dtype=np.uint8)
    for t in range(steps - 1, -1, -1):
        bits[t] = state >> (MEMORY - 1)
        state = prev[state, decisions[t, state]]
    return bits[: steps - MEMORY]


def encode_payload(payload: int) -> np.ndarray:
    """32-bit payload → 162 code bits (uint8)."""
    return conv_encode(message_bits(payload))


def decode_soft(soft: np.ndarray) -> tuple[int, bool]:
    """162 soft values → ``(payload, crc_ok)``. The payload is meaningful only if ``crc_ok``."""
    if soft.shape != (CODED_BITS,):
        raise ValueError(f"expected {CODED_BITS} soft values, got shape {soft.shape}")
    bits = viterbi_soft(np.asarray(soft, dtype=np.float64))
    payload = _bits_to_int(bits[:PAYLOAD_BITS])
    crc = _bits_to_int(bits[PAYLOAD_BITS:])
    return payload, crc == crc16(payload)
