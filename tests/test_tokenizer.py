"""CLIP BPE tokenizer: ids identical to open_clip for every fixture string; pre-tokenizer rules."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from v2a_runtime.tokenizer import DEFAULT_VOCAB, Tokenizer, byte_to_unicode, pretokenize


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.load()


@pytest.fixture(scope="module")
def reference(fixtures_dir) -> dict[str, list[int]]:
    return json.loads((fixtures_dir / "parity" / "tokenizer.json").read_text())


def test_fixture_ids_identical(tokenizer, reference):
    texts = list(reference)
    assert len(texts) == 8
    ids = tokenizer(texts)
    assert ids.dtype == np.int64 and ids.shape == (8, 77)
    for text, row in zip(texts, ids, strict=True):
        assert row.tolist() == reference[text], f"ids differ for {text!r}"


def test_one_text_at_a_time_matches_batch(tokenizer, reference):
    for text, expected in reference.items():
        assert tokenizer([text])[0].tolist() == expected


def test_truncation_and_padding(tokenizer):
    long_ids = tokenizer(["word " * 200])[0]
    assert long_ids[0] == 49406 and long_ids[-1] == 49407 and (long_ids[1:-1] != 0).all()
    short = tokenizer(["dog"])[0]
    assert short[:3].tolist() == [49406, short[1], 49407] and not short[3:].any()
    assert tokenizer([]).shape == (0, 77)


def test_pretokenize_follows_clip_pattern():
    # contractions before letter runs; one number char at a time; punctuation runs greedy
    assert pretokenize("don't stop") == ["don", "'t", "stop"]
    assert pretokenize("we're 42nd!!") == ["we", "'re", "4", "2", "nd", "!!"]
    assert pretokenize("'''s") == ["'''", "s"]  # the punctuation run swallows the apostrophes
    assert pretokenize("a<end_of_text>b") == ["a", "<end_of_text>", "b"]
    assert pretokenize("日本語のテキスト🎵🔊x") == ["日本語のテキスト", "🎵🔊", "x"]
    assert pretokenize("x²½") == ["x", "²", "½"]  # No category is \p{N}


def test_specials_and_vocab_layout(tokenizer):
    assert (tokenizer.sot_id, tokenizer.eot_id) == (49406, 49407)
    assert len(tokenizer.encoder) == 49408
    table = byte_to_unicode()
    assert len(set(table.values())) == 256
    assert tokenizer.encoder["!"] == 0 and tokenizer.encoder[table[0]] == 188


def test_decode_round_trip(tokenizer):
    ids = tokenizer(["Café crème, 3 dogs & a cat!"])[0]
    assert tokenizer.decode(ids) == "café crème , 3 dogs & a cat !"


def test_bad_inputs(tokenizer, tmp_path):
    with pytest.raises(TypeError):
        tokenizer("a string, not a list")
    bad = tmp_path / "vocab.txt.gz"
    with gzip.open(bad, "wt") as f:
        f.write("header\nh e\n")
    with pytest.raises(ValueError, match="not a CLIP BPE vocabulary"):
        Tokenizer.load(bad)
    with pytest.raises(ValueError, match="cannot read"):
        Tokenizer.load(tmp_path / "missing.txt.gz")
    assert Tokenizer.load(DEFAULT_VOCAB).encoder == tokenizer.encoder


def test_without_ftfy_plain_ascii_tokenizes_as_with_it(tokenizer, monkeypatch):
    """The GPU machine has no ftfy: printable ASCII without '&' is what ftfy leaves unchanged
    (checked here against ftfy itself on random and edge strings), so it tokenizes to the same
    ids; any other text is an ImportError that names ftfy, never silently different ids."""
    import sys

    ftfy = pytest.importorskip("ftfy")
    rng = np.random.default_rng(0)
    alphabet = [chr(c) for c in range(0x20, 0x7F) if chr(c) != "&"]
    texts = ["glass bottles clink, then footsteps on gravel", "  A  dog's  BARK!! <b>x</b> ",
             "a;b:c'd\"e`f~g|h\\i{j}k[l]m(n)o#p%q$r@s^t*u+v=w?x/y<z>", "--- ..."]  # fmt: skip
    texts += ["".join(rng.choice(alphabet, size=rng.integers(1, 60))) for _ in range(300)]
    assert all(ftfy.fix_text(t) == t for t in texts)
    expected = tokenizer(texts)
    monkeypatch.setitem(sys.modules, "ftfy", None)  # `import ftfy` now raises ImportError
    assert np.array_equal(tokenizer(texts), expected)
    for text in ("caf\u00e9", "fish &amp; chips", "tab\there", "\u201cquoted\u201d"):
        with pytest.raises(ImportError, match="needs ftfy"):
            tokenizer([text])
