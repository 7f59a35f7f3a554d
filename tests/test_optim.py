"""Optimizers by name: decay names, parameter groups, class/kwargs per name, optim_args, errors."""

import copy
import sys
import types

import pytest
import torch
from torch import nn

from raytrainer import optim as optim_module
from raytrainer.adafactor import Adafactor
from raytrainer.enums import OptimizerNames
from raytrainer.optim import (
    SUPPORTED_OPTIMIZERS,
    create_optimizer,
    get_decay_parameter_names,
    get_optimizer_cls_and_kwargs,
    get_optimizer_param_groups,
    parse_optim_args,
    validate_optimizer_choice,
)

ADAM_KWARGS = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}


def _args(**overrides):
    values = dict(
        optim="adamw_torch",
        optim_args=None,
        learning_rate=1e-3,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        lr_scheduler_type="linear",
        lr_scheduler_kwargs={},
    )
    values.update(overrides)
    return types.SimpleNamespace(**values)


class MyRMSNorm(nn.Module):
    """A norm layer from 'another library': recognised only by its class name."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)
        self.ln = nn.LayerNorm(4)  # attribute name matches no pattern: excluded by its type
        self.gate = MyRMSNorm(4)  # excluded by its class name
        self.head = nn.Linear(4, 2, bias=False)

    def forward(self, ids):
        return self.head(self.gate(self.ln(self.proj(self.embed(ids)))))


def test_decay_names_on_linear_layernorm_embedding_and_custom_rmsnorm():
    assert get_decay_parameter_names(TinyModel()) == ["embed.weight", "proj.weight", "head.weight"]


class AdaLayerNorm(nn.Module):
    """An adaptive norm: its own scale is a norm weight, its inner Linear is a real weight."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(2))
        self.proj = nn.Linear(2, 2)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.Linear(2, 2)
        self.mlp = nn.Linear(2, 2)


class NamedLikeNorms(nn.Module):
    def __init__(self):
        super().__init__()
        for name in ("norm", "input_layernorm", "q_norm", "normalizer", "qk_RMSNorm", "bias_proj", "out"):
            setattr(self, name, nn.Linear(2, 2))
        self.bn = nn.BatchNorm1d(2)
        self.gn = nn.GroupNorm(1, 2)
        self.inorm = nn.InstanceNorm1d(2, affine=True)
        self.lazy_bn = nn.LazyBatchNorm1d()
        self.rms = nn.RMSNorm(2)
        self.ada = AdaLayerNorm()
        self.blocks = nn.ModuleList([_Block()])


def test_decay_names_follow_the_name_patterns_and_norm_types():
    assert get_decay_parameter_names(NamedLikeNorms()) == [
        "normalizer.weight",
        "out.weight",
        "ada.proj.weight",
        "blocks.0.mlp.weight",
    ]


def test_decay_names_include_frozen_parameters():
    model = TinyModel()
    model.proj.weight.requires_grad_(False)
    assert "proj.weight" in get_decay_parameter_names(model)


def test_param_groups_keep_named_parameters_order_and_skip_frozen():
    model = TinyModel()
    model.proj.weight.requires_grad_(False)
    decay, no_decay = get_optimizer_param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(model.embed.weight), id(model.head.weight)]
    expected_no_decay = [model.proj.bias, model.ln.weight, model.ln.bias, model.gate.weight]
    assert [id(p) for p in no_decay["params"]] == [id(p) for p in expected_no_decay]


def test_param_groups_use_given_decay_names_and_drop_empty_groups():
    model = TinyModel()
    groups = get_optimizer_param_groups(model, 0.3, decay_parameter_names=[])
    assert len(groups) == 1
    assert groups[0]["weight_decay"] == 0.0
    assert len(groups[0]["params"]) == len(list(model.parameters()))
    only_norm = get_optimizer_param_groups(nn.Sequential(nn.LayerNorm(3)), 0.3)
    assert [g["weight_decay"] for g in only_norm] == [0.0]


def test_param_groups_errors():
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match=r"model \(Linear\) has no parameter with requires_grad=True"):
        get_optimizer_param_groups(frozen, 0.0)
    with pytest.raises(ValueError, match="weight_decay=-0.1 is negative"):
        get_optimizer_param_groups(TinyModel(), -0.1)
    with pytest.raises(ValueError, match="weight_decay must be a finite number, got '0.1'"):
        get_optimizer_param_groups(TinyModel(), "0.1")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got dict"):
        get_decay_parameter_names({})


@pytest.mark.parametrize(
    "name, cls, kwargs",
    [
        ("adamw_torch", torch.optim.AdamW, ADAM_KWARGS),
        ("adamw_hf", torch.optim.AdamW, ADAM_KWARGS),
        ("adamw_torch_fused", torch.optim.AdamW, {**ADAM_KWARGS, "fused": True}),
        ("sgd", torch.optim.SGD, {"lr": 1e-3}),
        ("adagrad", torch.optim.Adagrad, {"lr": 1e-3}),
        ("rmsprop", torch.optim.RMSprop, {"lr": 1e-3}),
        (
            "adafactor",
            Adafactor,
            {"lr": 1e-3, "scale_parameter": False, "relative_step": False, "warmup_init": False},
        ),
    ],
)
def test_class_and_kwargs_per_name(name, cls, kwargs):
    assert get_optimizer_cls_and_kwargs(_args(optim=name)) == (cls, kwargs)
    assert get_optimizer_cls_and_kwargs(_args(optim=OptimizerNames(name))) == (cls, kwargs)


def test_adam_kwargs_come_from_the_args():
    args = _args(learning_rate=0.02, adam_beta1=0.8, adam_beta2=0.95, adam_epsilon=1e-6)
    assert get_optimizer_cls_and_kwargs(args)[1] == {"lr": 0.02, "betas": (0.8, 0.95), "eps": 1e-6}


def test_optim_args_are_cast_and_merged():
    args = _args(optim="sgd", optim_args="momentum=0.9, nesterov=True,dampening=0")
    cls, kwargs = get_optimizer_cls_and_kwargs(args)
    assert kwargs == {"lr": 1e-3, "momentum": 0.9, "nesterov": True, "dampening": 0}
    assert type(kwargs["dampening"]) is int and type(kwargs["nesterov"]) is bool
    optimizer = create_optimizer(TinyModel(), args)
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["nesterov"] is True


def test_parse_optim_args_casting_rules():
    parsed = parse_optim_args("a=1,b=2.5,c=false,d=hello,e=1e-3,f=TRUE,")
    assert parsed == {"a": 1, "b": 2.5, "c": False, "d": "hello", "e": 0.001, "f": True}
    assert [type(parsed[k]) for k in "abcde"] == [int, float, bool, str, float]
    assert parse_optim_args(None) == {} and parse_optim_args("") == {}


@pytest.mark.parametrize(
    "text, message",
    [
        ("momentum", "optim_args entry 'momentum' is not of the form key=value"),
        ("a=1=2", "optim_args entry 'a=1=2' is not of the form key=value"),
        ("=3", "optim_args entry '=3' is not of the form key=value"),
        ("a=1,a=2", "optim_args sets 'a' twice"),
    ],
)
def test_parse_optim_args_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_optim_args(text)


def test_optim_args_type_and_unknown_key_errors():
    with pytest.raises(TypeError, match="optim_args must be a string like 'momentum=0.9,nesterov=true', got dict"):
        get_optimizer_cls_and_kwargs(_args(optim_args={"momentum": 0.9}))
    with pytest.raises(ValueError) as caught:
        get_optimizer_cls_and_kwargs(_args(optim="sgd", optim_args="momentm=0.9"))
    message = str(caught.value)
    assert message.startswith("optim_args key 'momentm' is not accepted by SGD (optim='sgd'); accepted keys: lr,")
    assert "momentum" in message and "nesterov" in message


def test_adafactor_optim_args_reach_adafactor():
    cls, kwargs = get_optimizer_cls_and_kwargs(_args(optim="adafactor", optim_args="decay_rate=-0.5"))
    assert cls is Adafactor and kwargs == {
        "lr": 1e-3, "scale_parameter": False, "relative_step": False, "warmup_init": False, "decay_rate": -0.5
    }
    optimizer = create_optimizer(TinyModel(), _args(optim="adafactor", learning_rate=0.01))
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 0.01]


_EXPECTED_PACKAGE = {
    "adamw_torch_xla": "torch_xla",
    "adamw_torch_npu_fused": "torch_npu",
    "adamw_apex_fused": "apex",
    "adamw_anyprecision": "torchdistx",
    "ademamix": "bitsandbytes",
    "adamw_bnb_8bit": "bitsandbytes",
    "adamw_8bit": "bitsandbytes",
    "ademamix_8bit": "bitsandbytes",
    "lion_8bit": "bitsandbytes",
    "lion_32bit": "bitsandbytes",
    "paged_adamw_32bit": "bitsandbytes",
    "paged_adamw_8bit": "bitsandbytes",
    "paged_ademamix_32bit": "bitsandbytes",
    "paged_ademamix_8bit": "bitsandbytes",
    "paged_lion_32bit": "bitsandbytes",
    "paged_lion_8bit": "bitsandbytes",
    "rmsprop_bnb": "bitsandbytes",
    "rmsprop_bnb_8bit": "bitsandbytes",
    "rmsprop_bnb_32bit": "bitsandbytes",
    "galore_adamw": "galore-torch",
    "galore_adamw_8bit": "galore-torch",
    "galore_adafactor": "galore-torch",
    "galore_adamw_layerwise": "galore-torch",
    "galore_adamw_8bit_layerwise": "galore-torch",
    "galore_adafactor_layerwise": "galore-torch",
    "lomo": "lomo-optim",
    "adalomo": "lomo-optim",
    "grokadamw": "grokadamw",
    "schedule_free_radam": "schedulefree",
    "schedule_free_adamw": "schedulefree",
    "schedule_free_sgd": "schedulefree",
    "apollo_adamw": "apollo-torch",
    "apollo_adamw_layerwise": "apollo-torch",
    "stable_adamw": "torch-optimi",
}


def test_every_enum_name_is_either_supported_or_mapped_to_a_package():
    supported = {name.value for name in SUPPORTED_OPTIMIZERS}
    assert supported == {
        "adamw_torch", "adamw_hf", "adamw_torch_fused", "sgd", "adagrad", "rmsprop", "adafactor",
        "adamw_torch_4bit", "adamw_torch_8bit",
    }  # fmt: skip
    assert supported | set(_EXPECTED_PACKAGE) == {name.value for name in OptimizerNames}


@pytest.mark.parametrize("name", sorted(_EXPECTED_PACKAGE))
def test_unsupported_names_name_the_package_and_the_alternatives(name):
    for check in (get_optimizer_cls_and_kwargs, validate_optimizer_choice):
        with pytest.raises(ValueError) as caught:
            check(_args(optim=name))
        message = str(caught.value)
        assert message.startswith(f"optim='{name}' is not supported by raytrainer: it needs the ")
        assert f"needs the {_EXPECTED_PACKAGE[name]} package" in message
        assert "Supported optim values: adamw_torch, adamw_hf, adamw_torch_fused, sgd," in message
        assert "optimizer_cls_and_kwargs" in message


def test_unknown_optimizer_string_uses_the_enum_error():
    expected = "optim='adamw_torchh' is not a valid OptimizerNames; choose one of: 'adamw_hf'"
    with pytest.raises(ValueError, match=expected):
        get_optimizer_cls_and_kwargs(_args(optim="adamw_torchh"))


@pytest.mark.parametrize("name, class_name", [("adamw_torch_4bit", "AdamW4bit"), ("adamw_torch_8bit", "AdamW8bit")])
def test_torchao_names_fail_clearly_without_torchao(monkeypatch, name, class_name):
    monkeypatch.setitem(sys.modules, "torchao", None)  # makes `import torchao` raise ImportError
    with pytest.raises(ValueError, match=f"optim='{name}' needs the torchao package \\(for {class_name}\\)"):
        validate_optimizer_choice(_args(optim=name))


def test_torchao_names_use_torchao_classes_when_importable(monkeypatch):
    class AdamW8bit(torch.optim.AdamW):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, block_size=256):
            super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
            self.block_size = block_size

    fake_optim = types.ModuleType("torchao.optim")
    fake_optim.AdamW8bit = AdamW8bit
    monkeypatch.setitem(sys.modules, "torchao", types.ModuleType("torchao"))
    monkeypatch.setitem(sys.modules, "torchao.optim", fake_optim)
    args = _args(optim="adamw_torch_8bit", optim_args="block_size=128")
    assert get_optimizer_cls_and_kwargs(args) == (AdamW8bit, {**ADAM_KWARGS, "block_size": 128})
    assert create_optimizer(TinyModel(), args).block_size == 128


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"learning_rate": -1.0}, "learning_rate=-1.0 is negative"),
        ({"learning_rate": None}, "learning_rate must be a finite number, got None"),
        ({"adam_beta2": 1.0}, r"adam_beta2=1.0 is outside \[0, 1\)"),
        ({"adam_beta1": -0.1}, r"adam_beta1=-0.1 is outside \[0, 1\)"),
        ({"adam_epsilon": float("nan")}, "adam_epsilon must be a finite number, got nan"),
    ],
)
def test_bad_hyper_parameters_fail_in_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        validate_optimizer_choice(_args(**overrides))


def test_adam_hyper_parameters_are_not_checked_for_sgd():
    assert get_optimizer_cls_and_kwargs(_args(optim="sgd", adam_beta2=1.0))[1] == {"lr": 1e-3}


def test_validate_accepts_supported_choices():
    for name in ("adamw_torch", "adamw_torch_fused", "sgd", "adafactor"):
        assert validate_optimizer_choice(_args(optim=name, use_cpu=True)) is None


def test_validate_refuses_fused_on_cpu_when_the_kernel_is_missing(monkeypatch):
    monkeypatch.setattr(optim_module, "_fused_step_runs", lambda *a: False)
    with pytest.raises(ValueError, match="optim='adamw_torch_fused' with use_cpu=True needs a torch build"):
        validate_optimizer_choice(_args(optim="adamw_torch_fused", use_cpu=True))
    assert validate_optimizer_choice(_args(optim="adamw_torch_fused")) is None  # a GPU run may have it


def _train(model, optimizer, steps=3):
    torch.manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(0, 10, (5, 3))
        loss = model(ids).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def test_create_optimizer_matches_a_bare_loop_bit_for_bit():
    torch.manual_seed(0)
    ours = TinyModel()
    bare = copy.deepcopy(ours)
    optimizer = create_optimizer(ours, _args(weight_decay=0.1, learning_rate=0.05))
    named = dict(bare.named_parameters())
    decay = ["embed.weight", "proj.weight", "head.weight"]
    reference = torch.optim.AdamW(
        [
            {"params": [named[n] for n in decay], "weight_decay": 0.1},
            {"params": [p for n, p in named.items() if n not in decay], "weight_decay": 0.0},
        ],
        lr=0.05,
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    _train(ours, optimizer)
    _train(bare, reference)
    for (name, mine), theirs in zip(ours.named_parameters(), bare.parameters()):
        assert torch.equal(mine, theirs), name
    assert not torch.equal(ours.head.weight, TinyModel().head.weight)  # training really moved it


def test_fused_adamw_builds_with_the_fused_flag_and_tracks_the_plain_one():
    torch.manual_seed(0)
    fused_model = TinyModel()
    plain_model = copy.deepcopy(fused_model)
    fused = create_optimizer(fused_model, _args(optim="adamw_torch_fused", weight_decay=0.1, learning_rate=0.05))
    plain = create_optimizer(plain_model, _args(optim="adamw_torch", weight_decay=0.1, learning_rate=0.05))
    assert fused.defaults["fused"] is True and plain.defaults["fused"] is None
    _train(fused_model, fused)
    _train(plain_model, plain)
    for mine, theirs in zip(fused_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_fused_adamw_on_an_unsupported_device_fails_at_set_up():
    model = nn.Linear(2, 2, device="meta")
    expected = r"AdamW\(fused=True\) cannot step parameters of dtype torch.float32 on device meta"
    with pytest.raises(ValueError, match=expected):
        create_optimizer(model, _args(optim="adamw_torch_fused"))


def test_create_optimizer_with_an_override_pair():
    model = TinyModel()
    optimizer = create_optimizer(model, _args(weight_decay=0.2), (torch.optim.SGD, {"lr": 0.1, "momentum": 0.5}))
    assert type(optimizer) is torch.optim.SGD
    assert optimizer.defaults["momentum"] == 0.5
    groups = [(g["lr"], g["weight_decay"], len(g["params"])) for g in optimizer.param_groups]
    assert groups == [(0.1, 0.2, 3), (0.1, 0.0, 4)]
    chosen = create_optimizer(model, _args(weight_decay=0.2), decay_parameter_names=["head.weight"])
    assert [(g["weight_decay"], len(g["params"])) for g in chosen.param_groups] == [(0.2, 1), (0.0, 6)]
    own_groups = [{"params": [model.head.weight]}]
    custom = create_optimizer(model, _args(), (torch.optim.SGD, {"lr": 0.1, "params": own_groups}))
    assert [len(g["params"]) for g in custom.param_groups] == [1]


@pytest.mark.parametrize(
    "override, message",
    [
        (torch.optim.SGD, "optimizer_cls_and_kwargs must be a pair"),
        ((torch.optim.SGD, {}, {}), "optimizer_cls_and_kwargs must be a pair"),
        (("SGD", {}), r"optimizer_cls_and_kwargs\[0\] must be an optimizer class, got 'SGD'"),
        ((torch.optim.SGD, [("lr", 1)]), r"optimizer_cls_and_kwargs\[1\] must be a dict"),
    ],
)
def test_create_optimizer_rejects_bad_overrides(override, message):
    with pytest.raises(TypeError, match=message):
        create_optimizer(TinyModel(), _args(), override)
