"""RL checkpoints: round trip, and clear errors for missing / incompatible / corrupt ones."""

from __future__ import annotations

import json

import pytest
import torch

from rl.checkpoint import META_FILE, WEIGHTS_FILE, load_checkpoint, save_checkpoint
from rl.net import NetConfig, ScorerNet
from rl.obs import ENGINE_FEATURES, ITEM_FEATURES, ObsSpec

SPEC = ObsSpec(k=8, budget_bins=(512, 2048))


def _saved(tmp_path):
    torch.manual_seed(0)
    net = ScorerNet(NetConfig(f=len(ITEM_FEATURES), g=len(ENGINE_FEATURES), n_bins=2,
                              hidden=16, heads=2, prior_index=13, prior_scale=16.0))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    path = save_checkpoint(tmp_path / "ck", net, SPEC, top_m=4,
                           policy={"max_num_batched_tokens": 2048})
    return net.eval(), path


def test_round_trip_same_scores(tmp_path):
    net, path = _saved(tmp_path)
    ck = load_checkpoint(path, expect=SPEC)
    assert ck.spec == SPEC and ck.top_m == 4 and ck.policy == {"max_num_batched_tokens": 2048}
    g = torch.Generator().manual_seed(0)
    items = torch.rand(2, 8, len(ITEM_FEATURES), generator=g)
    mask = torch.tensor([[1] * 8, [1] * 3 + [0] * 5], dtype=torch.bool)
    engine = torch.rand(2, len(ENGINE_FEATURES), generator=g)
    with torch.no_grad():
        a, b = net(items, mask, engine), ck.net(items, mask, engine)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_checkpoint(tmp_path / "nope")
    _, path = _saved(tmp_path)
    (path / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=f"{WEIGHTS_FILE} is missing"):
        load_checkpoint(path)


def test_incompatible(tmp_path):
    _, path = _saved(tmp_path)
    with pytest.raises(ValueError, match=r"K \(candidates\): checkpoint has 8, expected 64"):
        load_checkpoint(path, expect=ObsSpec(k=64, budget_bins=SPEC.budget_bins))
    with pytest.raises(ValueError, match="budget bins"):
        load_checkpoint(path, expect=ObsSpec(k=8, budget_bins=(256, 512, 1024)))
    meta = json.loads((path / META_FILE).read_text())
    meta["obs"]["item_features"] = list(reversed(meta["obs"]["item_features"]))
    (path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f"{path}.*incompatible.*item features"):
        load_checkpoint(path)
    meta["obs"]["item_features"] = list(ITEM_FEATURES)
    meta["version"] = 99
    (path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="version"):
        load_checkpoint(path)


def test_corrupt(tmp_path):
    _, path = _saved(tmp_path)
    (path / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=f"{path}.*{WEIGHTS_FILE} is unreadable"):
        load_checkpoint(path)
    _, path = _saved(tmp_path)
    meta = json.loads((path / META_FILE).read_text())
    meta["net"]["hidden"] = 32  # weights no longer fit
    (path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not fit the net config"):
        load_checkpoint(path)
    (path / META_FILE).write_text("{garbled")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_checkpoint(path)
