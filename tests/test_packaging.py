"""The explicit package list in pyproject.toml covers every package directory."""

import re

from conftest import REPO


def _listed() -> set[str]:
    text = (REPO / "pyproject.toml").read_text()
    block = re.search(r"packages = \[(.*?)\]", text, re.S).group(1)
    return set(re.findall(r'"([\w.]+)"', block))


def _on_disk() -> set[str]:
    found = set()
    for root, name in ((REPO / "runtime", "v2a_runtime"), (REPO / "v2a_export", "v2a_export")):
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            found.add(".".join((name, *rel)))
    return found


def test_every_package_is_listed():
    missing = _on_disk() - _listed()
    assert not missing, f"add to [tool.setuptools].packages in pyproject.toml: {sorted(missing)}"


def test_sequence_lengths_match_mmaudio_table():
    # spec/mmaudio.md §1.6 table (derived from mmaudio/model/sequence_config.py)
    from v2a_runtime.sequence import sequence_lengths

    table = {1: (32, 44, 8, 16), 2: (63, 87, 16, 40), 4: (125, 173, 32, 88),
             5: (157, 216, 40, 112), 8: (250, 345, 64, 192), 10: (313, 431, 80, 240),
             16: (500, 690, 128, 392)}
    for d, (l16, l44, clip, sync) in table.items():
        s16 = sequence_lengths(d, sample_rate=16000, hop_length=256)
        s44 = sequence_lengths(d, sample_rate=44100, hop_length=512)
        assert (s16.latent, s44.latent, s16.clip_frames, s16.sync_tokens) == (l16, l44, clip, sync)
    assert sequence_lengths(8, sample_rate=44100, hop_length=512).samples == 353280
    assert sequence_lengths(8, sample_rate=16000, hop_length=256).samples == 128000


def test_ci_runs_readme_commands():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    test_cmd = [ln for ln in ci.splitlines() if ln.startswith("python3 -m venv")]
    assert len(test_cmd) == 1, "the CI script must run exactly one README command"
    assert test_cmd[0] in readme, "README's test command and .ci/run differ"
