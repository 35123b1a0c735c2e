"""The seed examples `hookpipe simulate` ships are the verbatim test fixtures."""

from __future__ import annotations

from pathlib import Path

import orjson

SEEDS = Path(__file__).parent.parent / "hookpipe" / "seeds"
FIXTURES = Path(__file__).parent / "fixtures"


def test_every_shipped_seed_is_a_byte_identical_fixture() -> None:
    shipped = sorted(SEEDS.glob("*.json"))
    assert len(shipped) == 5
    for seed in shipped:
        assert seed.read_bytes() == (FIXTURES / seed.name).read_bytes(), seed.name


def test_each_provider_has_a_seed_and_each_parses() -> None:
    providers = {seed.name.split(".", 1)[0] for seed in SEEDS.glob("*.json")}
    assert providers == {"jodo", "dreamclass", "rapyd", "flexprice"}
    for seed in SEEDS.glob("*.json"):
        assert isinstance(orjson.loads(seed.read_bytes()), dict)
