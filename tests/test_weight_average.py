"""The moving average of weights that the DDPM recipe samples and exports from."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from swaplab.train.weight_average import WeightAverage, averaged_tensors, fill_missing_average


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_updates_follow_the_warmed_up_recurrence_and_skip_excluded_weights() -> None:
    net = _net()
    average = WeightAverage(net, 0.9, include=lambda name: not name.startswith("2."))
    assert average.names == ["0.weight", "0.bias"]
    expected = net[0].weight.detach().clone()
    for n in range(30):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        decay = average.update(net)
        assert decay == pytest.approx(min(0.9, (1 + n) / (10 + n)))
        expected = decay * expected + (1 - decay) * net[0].weight.detach()
    torch.testing.assert_close(average.get_buffer("0__weight"), expected)
    assert int(average.updates) == 30
    assert not list(average.parameters())  # the optimiser never sees it


def test_swapped_into_lends_the_average_and_gives_the_weights_back() -> None:
    net = _net()
    average = WeightAverage(net, 0.5)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    live = {k: v.clone() for k, v in net.state_dict().items()}
    average.update(net)
    with average.swapped_into(net):
        torch.testing.assert_close(net[0].weight, average.get_buffer("0__weight"))
        assert not torch.equal(net[0].weight, live["0.weight"])
    for key, value in net.state_dict().items():
        assert torch.equal(value, live[key])


def test_a_state_dict_exports_the_average_and_old_checkpoints_get_one() -> None:
    net = _net()
    net.average = WeightAverage(net, 0.5)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net.average.update(net)
    tensors = net.state_dict()
    exported = averaged_tensors(tensors, "average")
    assert set(exported) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    torch.testing.assert_close(exported["0.weight"], tensors["average.0__weight"])
    assert not torch.equal(exported["0.weight"], tensors["0.weight"])
    plain = {k: v for k, v in tensors.items() if not k.startswith("average.")}
    assert averaged_tensors(plain, "average") == plain  # no average: the weights as they are
    filled = fill_missing_average(plain, net.average, "average")
    assert set(filled) == set(tensors) and int(filled["average.updates"]) == 0
    torch.testing.assert_close(filled["average.0__weight"], plain["0.weight"])
    fresh = _net()
    fresh.average = WeightAverage(fresh, 0.5)
    fresh.load_state_dict(filled)  # strict: an old checkpoint now fits the averaged module


def test_a_bad_decay_is_refused() -> None:
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(_net(), 1.0)
