"""NT-Xent of the SimCLR objective against its closed form; the method on a tiny encoder."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssl_pretrain.data.batch import IMAGE, IMAGE_B, PRESENCE, PRESENCE_B
from ssl_pretrain.methods.simclr import SimCLR, pooled_features


class TinyEncoder(nn.Module):
    """Two-scale conv encoder with the ResEncoder contract (list of maps fine->coarse, feature_channels)."""

    def __init__(self, in_channels: int = 2) -> None:
        super().__init__()
        self.feature_channels = (4, 8)
        self.a = nn.Conv3d(in_channels, 4, 3, padding=1)
        self.b = nn.Conv3d(4, 8, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = torch.relu(self.a(x))
        return [a, self.b(a)]


@pytest.mark.parametrize(("n", "tau"), [(2, 0.1), (4, 0.5), (8, 1.0)])
def test_ntxent_on_identical_orthonormal_views_matches_closed_form(n: int, tau: float) -> None:
    method = SimCLR(TinyEncoder(), temperature=tau, gather_distributed=True)
    z = torch.eye(n, 16, dtype=torch.float64)  # unit-norm rows, orthogonal across the batch
    loss = method.loss(z, z.clone())
    # each of the 2N anchors: positive logit 1/τ, 2N-2 negatives at logit 0
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + (2 * n - 2)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ntxent_is_scale_invariant_and_punishes_swapped_pairs() -> None:
    method = SimCLR(TinyEncoder(), temperature=0.2)
    z = torch.eye(3, 5)
    assert method.loss(3 * z, 0.5 * z).item() == pytest.approx(method.loss(z, z).item(), rel=1e-6)
    swapped = z[[1, 0, 2]]
    assert method.loss(z, swapped).item() > method.loss(z, z).item() + 1.0


def test_simclr_forward_gives_finite_loss_and_gradients() -> None:
    torch.manual_seed(0)
    method = SimCLR(TinyEncoder(), hidden_dim=16, output_dim=8)
    image = torch.randn(4, 2, 8, 8, 8)
    batch = {IMAGE: image, IMAGE_B: image + 0.1 * torch.randn_like(image), PRESENCE: torch.ones(4, 2)}
    batch[PRESENCE_B] = torch.ones(4, 2)
    out = method(batch)
    assert set(out) == {"loss", "simclr"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert method.encoder.a.weight.grad is not None and method.encoder.a.weight.grad.abs().sum() > 0
    features, projection = method.embed(image)
    assert features.shape == (4, 8) and projection.shape == (4, 8)
    torch.testing.assert_close(features, pooled_features(method.encoder, image))


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="temperature"):
        SimCLR(TinyEncoder(), temperature=0.0)
    with pytest.raises(ValueError, match="projection head"):
        SimCLR(TinyEncoder(), num_layers=1)


def test_memory_bank_ntxent_matches_lightly_and_the_closed_form() -> None:
    """With a queue, each anchor's logits are [z_a·z_b, z_a·queue] / τ (MoCo's form), cross-entropy on index 0."""
    from lightly.loss import NTXentLoss

    torch.manual_seed(0)
    tau, k, d = 0.5, 6, 8
    method = SimCLR(TinyEncoder(), hidden_dim=16, output_dim=d, temperature=tau, memory_bank_size=k)
    bank = torch.nn.functional.normalize(torch.randn(k, d), dim=1)
    method.loss.memory_bank.bank.copy_(bank)
    z_a, z_b = torch.randn(3, d, requires_grad=True), torch.randn(3, d)
    reference = NTXentLoss(temperature=tau, memory_bank_size=(k, d))
    reference.memory_bank.bank.copy_(bank)
    ours = method.loss(z_a, z_b)
    assert ours.item() == pytest.approx(reference(z_a, z_b).item(), rel=1e-6)
    a, b = torch.nn.functional.normalize(z_a.detach(), dim=1), torch.nn.functional.normalize(z_b, dim=1)
    logits = torch.cat([(a * b).sum(1, keepdim=True), a @ bank.T], dim=1) / tau
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(3, dtype=torch.long))
    assert ours.item() == pytest.approx(expected.item(), rel=1e-6)
    # the queue took the three second-view projections (FIFO from the pointer) because z_a needs a gradient
    torch.testing.assert_close(method.loss.memory_bank.bank[:3], b)
    assert int(method.loss.memory_bank.bank_ptr) == 3
    with torch.no_grad():  # evaluation (validation) leaves the queue alone
        method.loss(z_a, z_b)
    assert int(method.loss.memory_bank.bank_ptr) == 3


def test_memory_bank_is_saved_and_restored_with_the_state_dict() -> None:
    torch.manual_seed(0)
    method = SimCLR(TinyEncoder(), hidden_dim=16, output_dim=8, memory_bank_size=5)
    method.loss(torch.randn(2, 8, requires_grad=True), torch.randn(2, 8))
    state = method.state_dict()
    assert "loss.memory_bank.bank" in state and "loss.memory_bank.bank_ptr" in state
    torch.manual_seed(1)  # another random queue at construction
    twin = SimCLR(TinyEncoder(), hidden_dim=16, output_dim=8, memory_bank_size=5)
    assert not torch.equal(twin.loss.memory_bank.bank, method.loss.memory_bank.bank)
    twin.load_state_dict(state)
    assert torch.equal(twin.loss.memory_bank.bank, method.loss.memory_bank.bank)
    assert int(twin.loss.memory_bank.bank_ptr) == 2
    z_a, z_b = torch.randn(2, 8), torch.randn(2, 8)
    assert twin.loss(z_a, z_b).item() == method.loss(z_a, z_b).item()
    no_bank = SimCLR(TinyEncoder(), hidden_dim=16, output_dim=8)
    assert not any("memory_bank" in key for key in no_bank.state_dict())
    assert no_bank.loss.temperature == 0.5  # the small-batch default
    with pytest.raises(ValueError, match="memory_bank_size"):
        SimCLR(TinyEncoder(), memory_bank_size=-1)


def test_momentum_key_encoder_is_an_ema_updated_only_in_training() -> None:
    torch.manual_seed(0)
    method = SimCLR(TinyEncoder(), hidden_dim=16, output_dim=8, memory_bank_size=4, momentum=0.9)
    assert all(not p.requires_grad for p in method.momentum_encoder.parameters())
    assert all(
        torch.equal(a, b)
        for a, b in zip(method.encoder.parameters(), method.momentum_encoder.parameters(), strict=True)
    )
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(1.0)  # the trained encoder moves by 1
    before = [p.clone() for p in method.momentum_encoder.parameters()]
    image = torch.randn(2, 2, 8, 8, 8)
    batch = {IMAGE: image, IMAGE_B: image.flip(2), PRESENCE: torch.ones(2, 2), PRESENCE_B: torch.ones(2, 2)}
    method.eval()
    with torch.no_grad():
        method(batch)  # validation (no hook): the key encoder stays
    assert all(torch.equal(a, b) for a, b in zip(before, method.momentum_encoder.parameters(), strict=True))
    method.train()
    method.before_training_step(0, 1)  # PretrainModule.training_step calls the hook before each forward
    out = method(batch)
    for b, trained, key in zip(before, method.encoder.parameters(), method.momentum_encoder.parameters(), strict=True):
        torch.testing.assert_close(key, 0.9 * b + 0.1 * trained)  # θ_k ← m θ_k + (1 − m) θ
    out["loss"].backward()
    assert all(p.grad is None for p in method.momentum_encoder.parameters())  # keys carry no gradient
    assert method.encoder.a.weight.grad is not None
    state = method.state_dict()
    assert any(k.startswith("momentum_encoder.") for k in state) and any(k.startswith("momentum_head.") for k in state)
    from ssl_pretrain.training import param_groups

    optimised = {id(p) for g in param_groups(method, {"weight_decay": 0.05}) for p in g["params"]}
    assert not optimised & {id(p) for p in method.momentum_encoder.parameters()}
    with pytest.raises(ValueError, match="momentum"):
        SimCLR(TinyEncoder(), momentum=1.0)


def test_queue_by_age_orders_entries_from_the_write_pointer_oldest_first() -> None:
    method = SimCLR(TinyEncoder(), hidden_dim=4, output_dim=2, memory_bank_size=4)
    bank = method.loss.memory_bank
    # the pointer is the next slot written, i.e. the oldest entry: slot 1, then 2, 3 and 0 (the newest)
    bank.bank.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
    bank.bank_ptr.fill_(1)
    queue = method.queue_by_age(torch.tensor([[3.0, 0.0], [2.0, 0.0]]))  # unnormalised on purpose
    assert queue is not None
    assert queue["cosine_oldest_to_newest"] == pytest.approx([-1.0, 0.0, 0.6, 1.0])
    assert queue["newest_minus_oldest"] == pytest.approx(2.0)
    assert (queue["queue_size"], queue["n"]) == (4, 2)
    halves = method.queue_by_age(torch.tensor([[1.0, 0.0]]), parts=2)
    assert halves is not None and halves["cosine_oldest_to_newest"] == pytest.approx([-0.5, 0.8])
    with pytest.raises(ValueError, match="parts"):
        method.queue_by_age(torch.tensor([[1.0, 0.0]]), parts=5)


def test_queue_by_age_is_none_without_a_queue() -> None:
    assert SimCLR(TinyEncoder(), hidden_dim=4, output_dim=2).queue_by_age(torch.ones(3, 2)) is None
