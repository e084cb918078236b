"""CLIP byte-level BPE tokenizer in pure Python and numpy (no torch, no ``regex`` package).

It reproduces open_clip's ``SimpleTokenizer`` (the one MMAudio's text encoder uses, with the
``lower`` cleaning) so that token ids are identical to the reference:

1. clean: ``ftfy.fix_text``, HTML-unescape twice, strip, collapse whitespace runs to one space,
   lowercase;
2. pre-tokenize with CLIP's pattern, in this order of alternatives at each position:
   the special tokens, the contractions ``'s 't 're 've 'm 'll 'd``, a run of letters
   (``\\p{L}+``), a single number character (``\\p{N}``), a run of anything else that is not
   whitespace (``[^\\s\\p{L}\\p{N}]+``); whitespace separates and is dropped. The Unicode classes
   come from ``unicodedata`` categories (L*, N*), so the small ``regex`` package is not needed;
3. map each piece's UTF-8 bytes to printable characters (GPT-2's byte-to-unicode table),
   append ``</w>`` to the last symbol and apply the merges in rank order;
4. wrap in SOT (49406) ... EOT (49407), zero-pad to 77; longer texts are cut to 77 with the
   last id forced to EOT.

The vocabulary is ``bpe_simple_vocab_16e6.txt.gz`` (OpenAI CLIP, MIT; see
``data/LICENSE-CLIP-BPE.txt``): line 0 is a header, lines 1..48 894 are the merges used.
"""

from __future__ import annotations

import gzip
import html
import re
import unicodedata
from pathlib import Path

import numpy as np

from .sequence import TEXT_TOKENS

DEFAULT_VOCAB = Path(__file__).resolve().parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # 48 894 merges: the vocabulary is 49 408 ids with the two specials
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
END_OF_WORD = "</w>"


def byte_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP table: each byte -> one printable character (printable Latin-1 map to
    themselves, the other 68 bytes to U+0100.. in byte order), so BPE never sees whitespace or
    control characters. The order matters: the first 256 vocabulary ids follow it (the 188
    printable bytes first, then the others)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = (b for b in range(256) if b not in table)
    for n, b in enumerate(extra):
        table[b] = chr(256 + n)
    return table


def clean_text(text: str) -> str:
    """open_clip's ``lower`` cleaning: ftfy, HTML-unescape twice, whitespace runs -> ' ', lower."""
    text = html.unescape(html.unescape(fix_text(text))).strip()
    return " ".join(text.split()).lower()


# Text ftfy leaves as it is: printable ASCII without '&'. Everything ftfy repairs needs a
# character outside this set (mojibake and curly quotes are non-ASCII, terminal escapes and
# line breaks are control characters, HTML entities start with '&').
_FTFY_IDENTITY = re.compile(r"[\x20-\x25\x27-\x7e]*")


def fix_text(text: str) -> str:
    """``ftfy.fix_text(text)``. Without ftfy installed (the GPU kit's machine, docs/gpu.md) text
    that ftfy leaves unchanged is returned as it is, anything else is an ImportError."""
    try:
        import ftfy
    except ImportError as e:
        if _FTFY_IDENTITY.fullmatch(text):
            return text
        raise ImportError(
            f"cleaning the prompt {text[:40]!r} needs ftfy (pip install ftfy); without it only "
            "printable ASCII without '&' can be tokenized"
        ) from e
    return ftfy.fix_text(text)


def _char_class(ch: str) -> str:
    """'L' letter, 'N' number, 'S' whitespace, 'P' anything else (the pattern's three classes)."""
    category = unicodedata.category(ch)[0]
    if category in ("L", "N"):
        return category
    return "S" if ch.isspace() else "P"


def pretokenize(text: str) -> list[str]:
    """Split cleaned text like CLIP's regex (leftmost match, alternatives tried in order)."""
    pieces = []
    i, n = 0, len(text)
    while i < n:
        rest = text[i:]
        fixed = next((s for s in (*SPECIAL_TOKENS, *CONTRACTIONS) if rest.startswith(s)), None)
        if fixed is not None:
            pieces.append(fixed)
            i += len(fixed)
            continue
        kind = _char_class(text[i])
        if kind == "S":
            i += 1
            continue
        if kind == "N":  # \p{N} matches one character at a time
            pieces.append(text[i])
            i += 1
            continue
        j = i + 1
        while j < n and _char_class(text[j]) == kind:  # \p{L}+ or [^\s\p{L}\p{N}]+, greedy
            j += 1
        pieces.append(text[i:j])
        i = j
    return pieces


def bpe(symbols: tuple[str, ...], ranks: dict[tuple[str, str], int]) -> tuple[str, ...]:
    """Merge adjacent symbol pairs, lowest rank first, every occurrence left to right."""
    word = list(symbols)
    while len(word) > 1:
        pairs = {(a, b) for a, b in zip(word[:-1], word[1:], strict=True)}
        best = min(pairs, key=lambda p: ranks.get(p, N_MERGES))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(word):
            if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                merged.append(word[i] + word[i + 1])
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return tuple(word)


class Tokenizer:
    """CLIP BPE: ``tokenizer(texts) -> int64 (B, 77)``. Build with :meth:`load`."""

    def __init__(
        self,
        encoder: dict[str, int],
        ranks: dict[tuple[str, str], int],
        *,
        context_length: int = TEXT_TOKENS,
    ):
        self.encoder = encoder
        self.ranks = ranks
        self.context_length = context_length
        self.sot_id = encoder[SPECIAL_TOKENS[0]]
        self.eot_id = encoder[SPECIAL_TOKENS[1]]
        self._byte_map = byte_to_unicode()
        self._cache: dict[str, tuple[int, ...]] = {}  # piece -> ids, owned by this instance

    @classmethod
    def load(cls, vocab_path: str | Path | None = None, *, context_length: int = TEXT_TOKENS):
        """Read the gzip vocabulary (None = the copy packaged with the runtime)."""
        path = Path(vocab_path) if vocab_path is not None else DEFAULT_VOCAB
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                lines = f.read().split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: cannot read the CLIP BPE vocabulary ({e})") from e
        merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
        if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(
                f"{path}: not a CLIP BPE vocabulary (expected {N_MERGES} merge lines "
                f"of two symbols after the header, got {len(merges)})"
            )
        base = list(byte_to_unicode().values())
        vocab = [
            *base,
            *(s + END_OF_WORD for s in base),
            *("".join(m) for m in merges),
            *SPECIAL_TOKENS,
        ]
        encoder = {token: i for i, token in enumerate(vocab)}
        ranks = {m: i for i, m in enumerate(merges)}
        return cls(encoder, ranks, context_length=context_length)

    def _piece_ids(self, piece: str) -> tuple[int, ...]:
        ids = self._cache.get(piece)
        if ids is None:
            if piece in SPECIAL_TOKENS:
                ids = (self.encoder[piece],)
            else:
                chars = "".join(self._byte_map[b] for b in piece.encode("utf-8"))
                symbols = (*chars[:-1], chars[-1] + END_OF_WORD)
                ids = tuple(self.encoder[s] for s in bpe(symbols, self.ranks))
            self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without SOT/EOT and without truncation."""
        return [i for piece in pretokenize(clean_text(text)) for i in self._piece_ids(piece)]

    def decode(self, ids) -> str:
        """Text of token ids (specials and padding dropped); word ends become spaces."""
        inverse = {i: t for t, i in self.encoder.items()}
        byte_of = {c: b for b, c in self._byte_map.items()}
        keep = [int(i) for i in ids if int(i) not in (0, self.sot_id, self.eot_id)]
        words = "".join(inverse[i] for i in keep).split(END_OF_WORD)
        return " ".join(
            bytes(byte_of[c] for c in w).decode("utf-8", errors="replace") for w in words if w
        )

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Token ids int64 (B, 77): SOT, ids, EOT, zero padding; overlong rows end in EOT."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"texts must be a list of str, got {texts!r:.80}")
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)  # (B, T)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id][: self.context_length]
            ids[-1] = self.eot_id
            out[row, : len(ids)] = ids
        return out
