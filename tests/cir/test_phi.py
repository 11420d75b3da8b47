"""φ architectures and checkpoint formats: files written here in each published layout load, detect
their format from the keys, reproduce the source network's outputs, and bad files give one clear error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from calibclip.cir import LinCIRPhi, Pic2WordPhi, build_phi, load_phi, save_phi
from calibclip.errors import UserError


class AuthorsPhi(nn.Module):
    """The LinCIR/SEARLE network as their code writes it (module names define the state-dict keys)."""

    def __init__(self, d_in: int, hidden: int, d_out: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(0.5), nn.Linear(hidden, hidden),
                                    nn.GELU(), nn.Dropout(0.5), nn.Linear(hidden, d_out))

    def forward(self, x):
        return self.layers(x)


class AuthorsIM2TEXT(nn.Module):
    """Pic2Word's IM2TEXT as their code writes it."""

    def __init__(self, d_in: int, middle: int, d_out: int, n_layer: int = 2) -> None:
        super().__init__()
        self.fc_out = nn.Linear(middle, d_out)
        blocks, dim = [], d_in
        for _ in range(n_layer):
            blocks.append(nn.Sequential(nn.Linear(dim, middle), nn.Dropout(0.1), nn.ReLU()))
            dim = middle
        self.layers = nn.Sequential(*blocks)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.fc_out(x)


def x(d: int = 12, n: int = 5) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(1))


def test_architectures_follow_the_spec():
    phi = build_phi("lincir", 16, 32)
    kinds = [type(m).__name__ for m in phi.layers]
    assert kinds == ["Linear", "GELU", "Dropout", "Linear", "GELU", "Dropout", "Linear"]
    assert [(m.in_features, m.out_features) for m in phi.layers if isinstance(m, nn.Linear)] == [
        (16, 64), (64, 64), (64, 32)]
    assert phi.layers[2].p == 0.5 and isinstance(build_phi("searle", 16, 32), LinCIRPhi)
    p2w = build_phi("pic2word", 16, 32)
    assert [type(m).__name__ for m in p2w.layers[0]] == ["Linear", "Dropout", "ReLU"] and len(p2w.layers) == 2
    assert (p2w.layers[0][0].in_features, p2w.layers[0][0].out_features) == (16, 512)
    assert (p2w.layers[1][0].in_features, p2w.layers[1][0].out_features) == (512, 512)
    assert (p2w.fc_out.in_features, p2w.fc_out.out_features) == (512, 32) and p2w.layers[0][1].p == 0.1
    with pytest.raises(UserError, match="unknown φ kind"):
        build_phi("mlp", 16, 32)


def test_our_format_roundtrip(tmp_path):
    torch.manual_seed(0)
    for kind in ("lincir", "pic2word"):
        phi = build_phi(kind, 12, 20).eval()
        path = save_phi(phi, tmp_path / f"{kind}.pt")
        raw = torch.load(path, weights_only=True)
        assert set(raw) == {"kind", "input_dim", "output_dim", "state_dict"}
        assert (raw["kind"], raw["input_dim"], raw["output_dim"]) == (kind, 12, 20)
        back = load_phi(path)
        assert type(back) is type(phi) and not back.training and back.source == "calibclip"
        assert torch.equal(back(x()), phi(x()))
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temporary file


def test_lincir_and_searle_checkpoints(tmp_path):
    torch.manual_seed(1)
    ref = AuthorsPhi(12, 40, 20).eval()  # hidden width read from the weights, not assumed 4·D
    torch.save({"epoch": 7, "Phi": ref.state_dict()}, tmp_path / "lincir.pt")  # LinCIR's save_phi
    torch.save({"Phi": {k: v.half() for k, v in ref.state_dict().items()}}, tmp_path / "searle.pt")  # fp16
    phi = load_phi(tmp_path / "lincir.pt")
    assert isinstance(phi, LinCIRPhi) and (phi.input_dim, phi.hidden_dim, phi.output_dim) == (12, 40, 20)
    assert not phi.training and phi.source == "LinCIR/SEARLE"
    assert torch.allclose(phi(x()), ref(x()), atol=1e-6)
    half = load_phi(tmp_path / "searle.pt")
    assert half.layers[0].weight.dtype == torch.float32
    assert torch.allclose(half(x()), ref(x()), atol=2e-2)


def test_pic2word_checkpoint_strips_module_prefix(tmp_path):
    torch.manual_seed(2)
    ref = AuthorsIM2TEXT(12, 24, 20, n_layer=3).eval()
    torch.save({"epoch": 1, "name": "pic2word", "state_dict": {"module.visual.proj": torch.zeros(2)},
                "state_dict_img2text": {"module." + k: v for k, v in ref.state_dict().items()}},
               tmp_path / "pic2word_model.pt")
    phi = load_phi(tmp_path / "pic2word_model.pt")
    assert isinstance(phi, Pic2WordPhi) and (phi.input_dim, phi.hidden_dim, phi.output_dim, phi.n_layer) == (
        12, 24, 20, 3)
    assert phi.source == "Pic2Word" and not phi.training
    assert torch.allclose(phi(x()), ref(x()), atol=1e-6)


def test_bare_state_dicts(tmp_path):
    torch.manual_seed(3)
    a, b = AuthorsPhi(12, 48, 20).eval(), AuthorsIM2TEXT(12, 16, 20).eval()
    torch.save(a.state_dict(), tmp_path / "a.pt")
    torch.save({"module." + k: v for k, v in b.state_dict().items()}, tmp_path / "b.pt")
    assert torch.allclose(load_phi(tmp_path / "a.pt")(x()), a(x()), atol=1e-6)
    assert torch.allclose(load_phi(tmp_path / "b.pt")(x()), b(x()), atol=1e-6)


def test_bad_files_give_one_clear_error(tmp_path):
    torch.save({"model": {"w": torch.zeros(2)}, "step": 3}, tmp_path / "other.pt")
    with pytest.raises(UserError) as e:
        load_phi(tmp_path / "other.pt")
    msg = str(e.value)
    assert "other.pt" in msg and "model" in msg and "step" in msg and "'Phi'" in msg
    with pytest.raises(UserError, match="no such"):
        load_phi(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(UserError, match="text.pt: cannot be read"):
        load_phi(tmp_path / "text.pt")
    sd = AuthorsPhi(12, 48, 20).state_dict()
    sd.pop("layers.3.bias")
    torch.save({"Phi": sd}, tmp_path / "broken.pt")
    with pytest.raises(UserError, match="broken.pt: a LinCIR/SEARLE φ checkpoint whose weights do not fit"):
        load_phi(tmp_path / "broken.pt")
    torch.save({"kind": "transformer", "input_dim": 1, "output_dim": 1, "state_dict": {}}, tmp_path / "k.pt")
    with pytest.raises(UserError, match="unknown φ kind 'transformer'"):
        load_phi(tmp_path / "k.pt")


class Payload:
    """An arbitrary Python object inside a checkpoint."""


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"Phi": AuthorsPhi(4, 8, 4).state_dict(), "args": Payload()}, tmp_path / "pickled.pt")
    with pytest.raises(UserError, match="pickled.pt: cannot be read as a torch checkpoint of tensors"):
        load_phi(tmp_path / "pickled.pt")
